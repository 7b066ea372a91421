"""Which weights get explained, and from which baseline: versions loaded from signed artifacts, kept in memory.

A version is explained on the artifacts the registry names for it, each verified (signature and digests)
and decrypted in memory:

- the trained stage (eager fp32 from `state.pt`) for gradient methods: integrated gradients needs a
  differentiable fp32 model, and it is the parent of whatever Triton serves for this version;
- the served form (`serving_artifact`, else `quantized_artifact`, else the trained artifact: the rule of
  `bulwark.versions`, which the front door serves from; e.g. the quantized TorchScript) for
  model-agnostic methods, so they attribute exactly what answers requests. A served form whose signed
  parent is not this version's trained artifact is refused.

Baselines (why they are what they are):

- tabular: the training mean in the model's feature space (`profile.json`'s input-space mean, written by the
  trainer). Numeric columns sit at their standardized mean (0), flag and one-hot columns at their training
  shares, so no single category is taken as "normal": a field's attribution is how its value moved the
  output relative to the average transaction. Reported per field in field units (numbers through the inverse
  of their transform), flags as the share of true, categories as one share per `field=value` column.
- text: the input's own special tokens ([CLS], [SEP]) and attention mask with every other token replaced by
  [PAD], the usual reference for token attributions; special tokens then carry no attribution.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from bulwark.artifacts import Artifact, open_folder
from bulwark.crypto.keys import KeyRing
from bulwark.crypto.signing import Verifier
from bulwark.errors import BulwarkError, InvalidArgumentError, Reason, SignatureError
from bulwark.families import FAMILIES, Family, LoadedModel
from bulwark.features import FeatureSpec
from bulwark.registry import ModelRegistry
from services.explainer.methods import ExplainModel

TABULAR_BASELINE = "training_mean"
TEXT_BASELINE = "pad_tokens"
SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]")


@dataclass
class Baseline:
    """The reference input attributions are measured from."""

    kind: str
    encoded: torch.Tensor | None = None
    by_feature: dict[str, float] = field(default_factory=dict)
    pad_id: int = 0


@dataclass
class Encoded:
    """One input in the model's feature space, with its baseline and how columns group into names."""

    inputs: tuple[torch.Tensor, ...]
    baselines: tuple[torch.Tensor, ...]
    groups: torch.Tensor
    names: list[str]
    skip: frozenset[int] = frozenset()
    digest_bytes: bytes = b""


@dataclass(eq=False)
class ExplainableVersion:
    """A version ready to explain: both forms, the input encoding, the baseline."""

    model: str
    version: int
    family: Family
    spec: Any
    trained: ExplainModel
    baseline: Baseline
    tokenizer: Any = None
    load_served: Callable[[], ExplainModel] | None = None
    _served: ExplainModel | None = None
    _groups: torch.Tensor | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def classes(self) -> tuple[str, ...]:
        """Class labels in output order."""
        return self.family.classes

    @property
    def fields(self) -> list[str]:
        """Input field names (tabular) or the text field."""
        return list(self.spec.fields) if isinstance(self.spec, FeatureSpec) else [self.spec["text_field"]]

    def served(self) -> ExplainModel:
        """The served form, loaded on first use (the trained form when nothing else is served)."""
        if self._served is None:
            with self._lock:
                if self._served is None:
                    self._served = self.load_served() if self.load_served else self.trained
        return self._served

    def encode(self, features: dict[str, Any], text: str) -> Encoded:
        """Validate and encode one input (InvalidArgumentError names the field, never a value)."""
        if self.family.name == "text":
            return self._encode_text(features, text)
        if text:
            raise InvalidArgumentError(f"text: {self.model} v{self.version} is a tabular model; send features")
        spec: FeatureSpec = self.spec
        unknown = [k for k in features if k not in spec.fields]
        if unknown:
            # Unknown names are not echoed: a caller's field name may itself be personal data.
            raise InvalidArgumentError(f"features: {len(unknown)} field(s) this model does not take; it takes "
                                       f"exactly {len(spec.fields)}: {', '.join(spec.fields)}")
        spec.validate(features)
        x = torch.from_numpy(spec.encode([features]))
        if self._groups is None:  # which field each column belongs to: fixed per version
            groups = torch.empty(spec.width, dtype=torch.int64)
            for i, s in enumerate(spec.slices().values()):
                groups[s] = i
            self._groups = groups
        assert self.baseline.encoded is not None
        return Encoded((x,), (self.baseline.encoded,), self._groups, list(spec.fields),
                       digest_bytes=x.numpy().tobytes())

    def _encode_text(self, features: dict[str, Any], text: str) -> Encoded:
        text_field = self.spec["text_field"]
        if features and set(features) - {text_field, "text"}:
            raise InvalidArgumentError(f"features: {self.model} v{self.version} is a text model; send `text`")
        record = {text_field: text or features.get(text_field) or features.get("text")}
        (clean,) = self.family.texts(self.spec, [record])
        ids, mask = self.tokenizer([clean])
        tokens = self.tokenizer.tokens(clean)
        skip = frozenset(i for i, t in enumerate(tokens) if t in SPECIAL_TOKENS)
        base = ids.clone()
        for i in range(ids.shape[1]):
            if i not in skip:
                base[0, i] = self.baseline.pad_id
        return Encoded((ids, mask), (base,), torch.arange(ids.shape[1]), tokens, skip, ids.numpy().tobytes())


def tabular_baseline(spec: FeatureSpec, profile: dict[str, Any] | None) -> Baseline:
    """The training mean in feature space, and its per-feature report (see the module docstring)."""
    mean = ((profile or {}).get("input_space") or {}).get("mean")
    if mean is not None and len(mean) == spec.width:
        vec = np.asarray(mean, dtype=np.float32)
    else:
        # No stored input-space profile: standardized numbers sit at 0 by construction; shares from the
        # per-field profile where there is one, else every flag and one-hot column at 0.
        vec = np.zeros(spec.width, dtype=np.float32)
        fields = (profile or {}).get("fields") or {}
        for f, s in zip(spec.features, spec.slices().values()):
            shares = (fields.get(f.name) or {}).get("shares")
            if f.kind == "flag" and isinstance(shares, dict):
                vec[s.start] = float(shares.get("True", 0.0))
            elif f.kind == "categorical" and isinstance(shares, dict):
                vec[s] = [float(shares.get(v, 0.0)) for v in f.vocab] + [0.0]
    report: dict[str, float] = {}
    columns = spec.columns()
    for f, s in zip(spec.features, spec.slices().values()):
        if f.kind == "numeric":
            z = float(vec[s.start]) * f.std + f.mean
            report[f.name] = math.expm1(z) if f.transform == "log1p" else z
        elif f.kind == "flag":
            report[f.name] = float(vec[s.start])
        else:
            report.update({columns[i]: float(vec[i]) for i in range(s.start, s.stop)})
    return Baseline(TABULAR_BASELINE, torch.from_numpy(vec).unsqueeze(0), report)


def _pad_id(tokenizer_json: bytes) -> int:
    from tokenizers import Tokenizer

    pad = Tokenizer.from_str(tokenizer_json.decode()).token_to_id("[PAD]")
    return 0 if pad is None else int(pad)


def _frozen(loaded: LoadedModel, form: str, digest: str) -> ExplainModel:
    module = loaded.module.eval()
    for p in module.parameters():
        p.requires_grad_(False)  # gradients are taken with respect to inputs only
    return ExplainModel(loaded.family.name, module, form, digest)


def explainable(model: str, version: int, trained: LoadedModel, *, digest: str = "",
                profile: dict[str, Any] | None = None,
                load_served: Callable[[], ExplainModel] | None = None) -> ExplainableVersion:
    """An explainable version from an eager model loaded in memory (the loader's last step; tests use it)."""
    family = trained.family
    if family.name == "text":
        tokenizer = trained.extra["tokenizer"]
        baseline = Baseline(TEXT_BASELINE, pad_id=_pad_id(tokenizer.data))
    else:
        baseline = tabular_baseline(trained.spec, profile)
        tokenizer = None
    return ExplainableVersion(model, version, family, trained.spec, _frozen(trained, "trained", digest), baseline,
                              tokenizer, load_served)


class VersionLoader:
    """Explainable versions by (model, version), loaded on first use from verified artifacts; least recently
    used ones are dropped past `max_versions`."""

    def __init__(self, registry: ModelRegistry, verifier: Verifier, kek: KeyRing, *, max_versions: int = 4) -> None:
        self._registry = registry
        self._verifier = verifier
        self._kek = kek
        self._max = max_versions
        self._cache: OrderedDict[tuple[str, int], ExplainableVersion] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def get(self, model: str, version: int) -> ExplainableVersion:
        """The version (NotFoundError when the registry has no such model or version)."""
        key = (model, version)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per version, however many calls wait for it
            with self._lock:
                if key in self._cache:
                    return self._cache[key]
            loaded = self._load(model, version)
            with self._lock:
                self._cache[key] = loaded
                while len(self._cache) > self._max:
                    self._cache.popitem(last=False)
                self._loading.pop(key, None)
            return loaded

    def exists(self, model: str, version: int) -> None:
        """Raise NotFoundError unless the registry knows the version (cheap: no artifact is read)."""
        if (model, version) not in self._cache:
            self._registry.get(model, version)

    def _load(self, model: str, version: int) -> ExplainableVersion:
        entry = self._registry.get(model, version)
        assert entry is not None
        trained_folder = Path(entry["artifact"])
        trained = self._open(trained_folder, model, version, "trained")
        family = FAMILIES.get(trained.family)
        if "state.pt" not in trained.files:
            raise BulwarkError(Reason.FAILED_PRECONDITION, f"{model} v{version}: the trained artifact has no eager "
                               "weights (state.pt), so gradient methods cannot run")
        # The same rule as the catalog the front door serves from: the form the updater placed in Triton;
        # before that, the quantizer's choice; else the trained artifact itself.
        served_path = entry.get("serving_artifact") or entry.get("quantized_artifact")

        def load_served() -> ExplainModel:
            served = self._open(Path(served_path), model, version, None)
            if served.manifest.get("parent") != trained.digest:
                raise SignatureError(f"{model} v{version}: the served artifact's signed parent is not this "
                                     "version's trained artifact")
            return _frozen(family.load(served), served.manifest["stage"], served.digest)

        separate = bool(served_path) and Path(served_path) != trained_folder
        profile = trained.json("profile.json") if "profile.json" in trained.files else None
        return explainable(model, version, family.load(trained), digest=trained.digest, profile=profile,
                           load_served=load_served if separate else None)

    def _open(self, folder: Path, model: str, version: int, stage: str | None) -> Artifact:
        art = open_folder(folder, self._verifier, self._kek)
        m = art.manifest
        if (m["model"], int(m["version"])) != (model, version) or (stage and m["stage"] != stage):
            raise SignatureError(f"{model} v{version}: the artifact at the registry's path is signed for "
                                 f"{m['model']} v{m['version']} ({m['stage']})")
        return art
