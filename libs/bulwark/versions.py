"""What a served version needs outside Triton: its family, input encoding, served tensors and data profile.

The front door, the explainer and the guard look versions up here. The catalog reads the registry for the
artifact a version is served from (the quantizer's form once there is one), verifies its signature, and
reads only the metadata files that are not encrypted (features, config, tokenizer, profile): a component
holding only the verify keys can serve, never read weights.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bulwark.artifacts import verify_folder
from bulwark.crypto.signing import Verifier
from bulwark.errors import NotFoundError
from bulwark.families import FAMILIES, Family, TensorSpec
from bulwark.features import FeatureSpec
from bulwark.registry import ModelRegistry


@dataclass
class ServedVersion:
    """One version's serving metadata."""

    model: str
    version: int
    family: Family
    spec: Any
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    folder: Path
    digest: str
    profile: dict[str, Any] | None
    tokenizer: Any = None

    @property
    def classes(self) -> tuple[str, ...]:
        """Class labels in output order."""
        return self.family.classes

    def encode(self, records: Sequence[dict[str, Any]]) -> list[np.ndarray]:
        """Validated input arrays for `records` (InvalidArgumentError names the bad field)."""
        if self.family.name == "text":
            ids, mask = self.tokenizer(self.family.texts(self.spec, records))
            return [ids.numpy(), mask.numpy()]
        for r in records:
            self.spec.validate(r)
        return [self.spec.encode(records)]


class VersionCatalog:
    """Serving metadata per (model, version), loaded on first use and kept."""

    def __init__(self, registry: ModelRegistry, verifier: Verifier) -> None:
        self._registry = registry
        self._verifier = verifier
        self._cache: dict[tuple[str, int], ServedVersion] = {}
        self._lock = threading.Lock()

    def get(self, model: str, version: int) -> ServedVersion:
        """The version's metadata (NotFoundError for an unknown model or version)."""
        key = (model, version)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            if key not in self._cache:
                self._cache[key] = self._load(model, version)
        return self._cache[key]

    def forget(self, model: str, version: int) -> None:
        """Drop a version (retired)."""
        self._cache.pop((model, version), None)

    def _load(self, model: str, version: int) -> ServedVersion:
        entry = self._registry.get(model, version)
        # The form the updater placed in Triton; before that, the quantizer's choice; else the trained form.
        folder = Path(entry.get("serving_artifact") or entry.get("quantized_artifact") or entry["artifact"])
        manifest = verify_folder(folder, self._verifier)
        family = FAMILIES.get(manifest["family"])
        config = json.loads((folder / "config.json").read_bytes())
        profile_path = folder / "profile.json"
        profile = json.loads(profile_path.read_bytes()) if profile_path.exists() else None
        from bulwark.artifacts import canonical, sha256

        digest = sha256(canonical(manifest))
        if family.name == "text":
            from bulwark.families.text import DEFAULT_CONFIG, Tokenizer

            spec = {**DEFAULT_CONFIG, **config}
            tok = Tokenizer((folder / "tokenizer.json").read_bytes(), int(spec["max_tokens"]), fixed_length=True)
            inputs, outputs = family.io(spec)
            return ServedVersion(model, version, family, spec, inputs, outputs, folder, digest, profile, tok)
        if not (folder / "features.json").exists():
            raise NotFoundError(f"{model} v{version}: artifact has no features.json")
        spec = FeatureSpec.from_dict(json.loads((folder / "features.json").read_bytes()))
        inputs, outputs = family.io(spec, config)
        return ServedVersion(model, version, family, spec, inputs, outputs, folder, digest, profile)
