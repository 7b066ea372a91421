"""One training run, start to finish: data, checks, encoding, training, evaluation, profile, artifact,
registry. The handler (Kafka) and the one-shot job (torchrun, Kubernetes) both call `TrainingPipeline.run`.

A run is idempotent per trigger: the trigger's id fixes the version number (Redis SET NX), training resumes
from its checkpoint after a crash, and publishing a version that already exists returns it unchanged.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import redis
import torch

from bulwark.artifacts import ArtifactStore, ArtifactWriter, canonical, sha256
from bulwark.errors import UnavailableError
from bulwark.families import FAMILIES, script_bytes, state_bytes
from bulwark.features import REFERENCE_FEATURES, FeatureSpec
from bulwark.metrics import classification_report
from bulwark.redis_keys import RedisKeys
from bulwark.registry import ModelRegistry
from bulwark.settings import CommonSettings
from services.trainer.dataset import Dataset, DatasetError, build_dataset, check_dataset
from services.trainer.distributed import builder, run_training
from bulwark.profiles import build_profile, gaussian_stats
from services.trainer.private import PrivacyConfig
from services.trainer.settings import TrainerSettings
from services.trainer.training import LoopConfig, LoopResult

log = logging.getLogger(__name__)
SERVICE = "trainer"
HELDOUT = 5000  # records of each split kept in the artifact


def artifact_store(settings: CommonSettings) -> ArtifactStore:
    """The artifact store with the keys a trainer holds: sign, wrap, verify."""
    from bulwark.crypto import load_ring, load_signer, load_verifier
    from bulwark.crypto.keys import RING_KEK

    keys = settings.keys_path
    return ArtifactStore(settings.artifacts_path, verifier=load_verifier(keys), kek=load_ring(RING_KEK, keys),
                         signer=load_signer(keys))


@dataclass
class TrainRequest:
    """Why and what to train; `trigger_id` makes the run idempotent."""

    trigger_id: str
    reason: str
    requested_by: str
    parent: int | None = None
    max_events: int | None = None


@dataclass
class TrainOutcome:
    """A published version."""

    model: str
    version: int
    family: str
    path: Path
    digest: str
    metrics: dict[str, Any]
    dataset: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    reused: bool = False


class TrainingPipeline:
    """Builds, trains, evaluates and publishes one model version."""

    def __init__(self, settings: CommonSettings, own: TrainerSettings, client: redis.Redis, store: ArtifactStore,
                 *, workers: int | None = None, progress: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.own = own
        self.redis = client
        self.keys = RedisKeys(settings.redis_prefix)
        self.registry = ModelRegistry(client, self.keys)
        self.store = store
        self.workers = workers or own.workers
        self.family = FAMILIES.get(own.family)
        self._progress = progress or (lambda msg: log.info("%s", msg))
        self.checkpoints = own.checkpoint_dir or settings.home / "trainer" / "checkpoints"

    # ------------------------------------------------------------------ the run
    def run(self, req: TrainRequest) -> TrainOutcome | None:
        """Train and publish a version for `req`, or raise `DatasetError` when the data cannot make one.

        In a torch.distributed group every rank trains; only rank 0 publishes (the others return None)."""
        model = self.own.model
        version = self._version_for(req.trigger_id)
        existing = self._existing(model, version)
        if existing is not None:
            return existing
        forgotten = self._forgotten()
        self._progress(f"building the training set for {model} v{version}")
        ds = build_dataset(self.settings, event_type=self.own.event_type, label=self.own.label,
                           max_events=req.max_events or self.own.max_events,
                           validation_share=self.own.validation_share, forgotten=forgotten)
        started = time.perf_counter()
        if self.family.name == "text":
            trained = self._train_text(ds, model, version)
        else:
            trained = self._train_tabular(ds, model, version)
        module, result, files, card_extra, x_val, hidden_in = trained
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return None
        with torch.no_grad():
            module.eval()
            probs = torch.softmax(module(*x_val), dim=1)[:, 1].numpy()
        metrics = classification_report(ds.y_val, probs)
        self._progress(f"{model} v{version}: validation accuracy {metrics['accuracy']:.4f} "
                       f"AUROC {metrics['auroc']:.4f} after {result.epochs} epochs")
        card = {
            "metrics": metrics, "dataset_sha256": ds.digest, "dataset": ds.manifest, "seed": self.own.seed,
            "family": self.family.name, "trained_at": time.time(), "reason": req.reason,
            "requested_by": req.requested_by, "trigger": req.trigger_id,
            "training": {"epochs": result.epochs, "best_epoch": result.best_epoch, "world_size": result.world_size,
                         "samples_per_s": round(result.samples_per_s, 1), "seconds": round(result.seconds, 2),
                         "wall_seconds": round(time.perf_counter() - started, 2), "resumed_from": result.resumed_from,
                         "val_loss": result.val_loss, "train_loss": result.train_loss},
            "privacy": result.privacy or {"mechanism": "none"},
            "personal_data": self.own.personal_data and bool(ds.subjects),
            **card_extra,
        }
        writer = ArtifactWriter(model, version, "trained", self.family.name, parent=str(req.parent) if req.parent else None,
                                card=card)
        for name, (data, encrypt) in files.items():
            writer.add(name, data, encrypt=encrypt)
        writer.add_json("dataset.json", ds.manifest)
        writer.add_json("metrics.json", {**metrics, "privacy": card["privacy"]})
        writer.add_json("subjects.json", sorted(ds.subjects), encrypt=True)  # pseudonymous, still personal
        # Held-out records (and a sample of training members) travel with the version, sealed, so every later
        # stage evaluates on exactly the data this version never trained on (quantizer, gate, explainer).
        writer.add_json("heldout.json", {"validation": ds.val[:HELDOUT], "train_sample": ds.train[:HELDOUT],
                                         "label": self.own.label}, encrypt=True)
        writer.add_json("profile.json", hidden_in)
        path = self.store.publish(writer)
        manifest_digest = sha256(canonical(self.store.verify(model, version, "trained")))
        self._record(model, version, req, path, manifest_digest, metrics, ds, card)
        ck = self._checkpoint(model, version)
        ck.unlink(missing_ok=True)
        return TrainOutcome(model, version, self.family.name, path, manifest_digest, metrics,
                            {"digest": ds.digest, "used": ds.manifest["used"], "train": ds.manifest["train"],
                             "validation": ds.manifest["validation"],
                             "excluded_forgotten": ds.manifest["excluded_forgotten"]}, card["training"],
                            card["privacy"])

    # ------------------------------------------------------------------ families
    def _loop_config(self) -> LoopConfig:
        o = self.own
        privacy = PrivacyConfig(o.dp_epsilon, o.dp_delta, o.dp_max_grad_norm, o.dp_epochs) if o.dp_epsilon else None
        return LoopConfig(seed=o.seed, max_epochs=o.max_epochs, patience=o.patience, batch_size=o.batch_size,
                          learning_rate=o.learning_rate, weight_decay=o.weight_decay, keep_best=o.keep_best,
                          privacy=privacy)

    def _train_tabular(self, ds: Dataset, model: str, version: int):  # noqa: ANN202 - internal tuple
        features = self.own.features or REFERENCE_FEATURES
        check_dataset(ds, min_labeled=self.own.min_labeled, fields=[f["name"] for f in features],
                      numeric=[f["name"] for f in features if f["kind"] == "numeric"])
        spec = FeatureSpec.fit(ds.train, features, label=self.own.label)
        xt, xv = spec.encode(ds.train), spec.encode(ds.val)
        config = {"hidden": list(self.own.hidden), "dropout": self.own.dropout}
        self._progress(f"training {model} v{version}: {len(xt)} examples, {spec.width} inputs, {self.workers} worker(s)")
        result = run_training(builder(self.family.name, spec, config), xt, ds.y_train, xv, ds.y_val,
                              self._loop_config(), workers=self.workers, checkpoint=self._checkpoint(model, version),
                              progress=self._epoch_progress(model, version))
        module = self.family.build(spec, config)
        module.load_state_dict(result.state)
        module.eval()
        with torch.no_grad():
            hidden = module.embed(torch.from_numpy(xt[:20000])).numpy()
        profile = build_profile(ds.train, features, xt[:20000], hidden)
        files = {"model.pt": (script_bytes(module), True), "state.pt": (state_bytes(module), True),
                 "config.json": (json.dumps(config).encode(), False),
                 "features.json": (json.dumps(spec.to_dict()).encode(), False)}
        return module, result, files, {"inputs": spec.width}, (torch.from_numpy(xv),), profile

    def _train_text(self, ds: Dataset, model: str, version: int):  # noqa: ANN202 - internal tuple
        from bulwark.families.text import DEFAULT_CONFIG

        config = {**DEFAULT_CONFIG}
        text_field = config["text_field"]
        check_dataset(ds, min_labeled=self.own.min_labeled, fields=[text_field], numeric=[])
        module = self.family.build({}, config)
        tok = self.family.tokenizer(max_tokens=int(config["max_tokens"]))
        self._progress(f"embedding {len(ds.train) + len(ds.val)} texts with the frozen encoder")
        et = _embed(module, tok, [r[text_field] for r in ds.train])
        ev = _embed(module, tok, [r[text_field] for r in ds.val])
        head_cfg = {"hidden": et.shape[1], "classes": len(self.family.classes)}
        result = run_training(builder("text-head", None, head_cfg), et, ds.y_train, ev, ds.y_val, self._loop_config(),
                              workers=self.workers, checkpoint=self._checkpoint(model, version),
                              progress=self._epoch_progress(model, version))
        module.head.load_state_dict(result.state)
        module.eval()
        ids, mask = tok([r[text_field] for r in ds.val])
        example = tok(["a short example text", "another"])
        lengths = [len(r[text_field]) for r in ds.train]
        profile = {"input_space": None, "hidden_space": gaussian_stats(et[:20000]), "n": len(ds.train),
                   "text_chars": {"p50": float(np.median(lengths)), "max": max(lengths)}}
        files = {"model.pt": (script_bytes(module, example), True), "state.pt": (state_bytes(module), True),
                 "config.json": (json.dumps(config).encode(), False), "tokenizer.json": (tok.data, False)}
        return module, result, files, {"encoder": "all-MiniLM-L6-v2"}, (ids, mask), profile

    # ------------------------------------------------------------------ plumbing
    def _epoch_progress(self, model: str, version: int) -> Callable[[int, float, float], None]:
        def report(epoch: int, train_loss: float, val_loss: float) -> None:
            self._progress(f"{model} v{version} epoch {epoch + 1}/{self.own.max_epochs}: train loss {train_loss:.4f}, "
                           f"validation loss {val_loss:.4f}")
        return report

    def _checkpoint(self, model: str, version: int) -> Path:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self.checkpoints / f"{model}-{version}.pt"

    def _version_for(self, trigger_id: str) -> int:
        key = self.keys.state(SERVICE, f"trigger:{self.own.model}:{trigger_id}")
        try:
            existing = self.redis.get(key)
            if existing is not None:
                return int(existing)
            version = self.registry.next_version(self.own.model)
            if self.redis.set(key, version, nx=True):
                return version
            return int(self.redis.get(key))
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for version allocation ({type(exc).__name__})") from None

    def _existing(self, model: str, version: int) -> TrainOutcome | None:
        entry = self.registry.get(model, version, missing_ok=True)
        if not entry or "artifact" not in entry:
            return None
        manifest = self.store.verify(model, version, "trained")
        card = manifest["card"]
        ds = card["dataset"]
        return TrainOutcome(model, version, manifest["family"], Path(entry["artifact"]), entry["artifact_digest"],
                            card["metrics"], {"digest": card["dataset_sha256"], "used": ds["used"], "train": ds["train"],
                                              "validation": ds["validation"],
                                              "excluded_forgotten": ds["excluded_forgotten"]},
                            card["training"], card.get("privacy", {"mechanism": "none"}), reused=True)

    def _forgotten(self) -> set[str]:
        try:
            return {m.decode() for m in self.redis.smembers(self.keys.forgotten())}
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the forgotten list ({type(exc).__name__})") from None

    def _record(self, model: str, version: int, req: TrainRequest, path: Path, digest: str, metrics: dict[str, Any],
                ds: Dataset, card: dict[str, Any]) -> None:
        self.registry.record(model, version, family=self.family.name, parent=req.parent, created_at=time.time(),
                             artifact=str(path), artifact_digest=digest, metrics=metrics, dataset_digest=ds.digest,
                             dataset={k: ds.manifest[k] for k in ("used", "train", "validation", "excluded_forgotten")},
                             trigger=req.trigger_id, reason=req.reason, privacy=card["privacy"],
                             personal_data=card["personal_data"])
        self.registry.set_state(model, version, "trained", by=SERVICE, reason=req.reason)
        subjects_key = self.keys.model_subjects(model, str(version))
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(subjects_key)
            for chunk in _chunks(sorted(ds.subjects), 1000):
                pipe.sadd(subjects_key, *chunk)
            pipe.execute()
        except redis.RedisError as exc:
            raise UnavailableError(f"Redis unreachable for the registry ({type(exc).__name__})") from None


def _chunks(items: list[str], n: int) -> list[list[str]]:
    return [items[i:i + n] for i in range(0, len(items), n)]


@torch.no_grad()
def _embed(module: torch.nn.Module, tok: Any, texts: list[str], batch: int = 64) -> np.ndarray:
    out = []
    for i in range(0, len(texts), batch):
        ids, mask = tok(texts[i:i + batch])
        out.append(module.pooled(ids, mask).numpy())
    return np.concatenate(out).astype(np.float32)


__all__ = ["DatasetError", "LoopResult", "TrainOutcome", "TrainRequest", "TrainingPipeline"]
