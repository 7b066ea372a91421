"""Training sets from the clean event stream, with a manifest that makes a run reproducible.

The builder reads `events.clean` outside any consumer group, keeps labeled events of the configured type,
leaves out every forgotten subject, keeps the most recent `max_events`, and splits train/validation by a
hash of the event id (an event is in validation in every run, so validation never trains). The manifest
records which offsets of which partitions were read, counts, label balance, and digests of the event ids,
the subjects and the forgotten list in force.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bulwark.bus.reader import read_topic
from bulwark.errors import BulwarkError, Reason
from bulwark.settings import CommonSettings


class DatasetError(BulwarkError):
    """The data cannot make a model (too few labels, one class, bad or missing features)."""

    def __init__(self, kind: str, message: str, evidence: dict[str, Any]) -> None:
        super().__init__(Reason.FAILED_PRECONDITION, message)
        self.kind = kind
        self.evidence = evidence


@dataclass
class Dataset:
    """Train and validation records with labels, the subjects they come from, and the manifest."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    y_train: np.ndarray
    y_val: np.ndarray
    subjects: set[str]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """SHA-256 of the manifest: the dataset's identity."""
        import json

        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()


def in_validation(event_id: str, share: float) -> bool:
    """Whether an event belongs to the validation split (stable across runs and processes)."""
    h = int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < share


def _digest(items: list[str]) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()


def build_dataset(settings: CommonSettings, *, event_type: str, label: str, max_events: int,
                  validation_share: float, forgotten: set[str]) -> Dataset:
    """Read the clean topic and build the split and its manifest."""
    topic = settings.topics.events_clean
    rows: list[tuple[int, int, str, str | None, dict[str, Any]]] = []
    ranges: dict[int, list[int]] = {}
    read = unlabeled = excluded = 0
    for rec, event in read_topic(settings, topic, idle_ms=1000):
        read += 1
        if event is None or event.type != event_type:
            continue
        r = ranges.setdefault(rec.partition, [rec.offset, rec.offset])
        r[0], r[1] = min(r[0], rec.offset), max(r[1], rec.offset)
        if not isinstance(event.payload.get(label), bool):
            unlabeled += 1
            continue
        if event.subject in forgotten:
            excluded += 1
            continue
        rows.append((rec.timestamp or 0, rec.offset, event.id, event.subject, event.payload))
    seen: set[str] = set()
    unique = []
    for row in sorted(rows):  # oldest first; a redelivered duplicate (same id) counts once
        if row[2] not in seen:
            seen.add(row[2])
            unique.append(row)
    unique = unique[-max_events:]
    train, val, y_train, y_val, subjects, ids = [], [], [], [], set(), []
    for _, _, event_id, subject, payload in unique:
        ids.append(event_id)
        if subject:
            subjects.add(subject)
        target = (val, y_val) if in_validation(event_id, validation_share) else (train, y_train)
        target[0].append(payload)
        target[1].append(int(payload[label]))
    yt, yv = np.array(y_train, dtype=np.int64), np.array(y_val, dtype=np.int64)
    manifest = {
        "topic": topic, "event_type": event_type, "label": label, "built_at": time.time(),
        "partitions": {str(p): {"first_offset": a, "last_offset": b} for p, (a, b) in sorted(ranges.items())},
        "records_read": read, "unlabeled": unlabeled, "excluded_forgotten": excluded, "used": len(unique),
        "train": len(train), "validation": len(val), "validation_share": validation_share,
        "positive_rate_train": float(yt.mean()) if len(yt) else None,
        "positive_rate_validation": float(yv.mean()) if len(yv) else None,
        "event_ids_sha256": _digest(sorted(ids)), "subjects": len(subjects),
        "subjects_sha256": _digest(sorted(subjects)), "forgotten_sha256": _digest(sorted(forgotten)),
        "forgotten_in_force": len(forgotten),
    }
    return Dataset(train, val, yt, yv, subjects, manifest)


def check_dataset(ds: Dataset, *, min_labeled: int, fields: list[str], numeric: list[str]) -> None:
    """Raise `DatasetError` unless the data can make a model: enough labels, both classes in both splits,
    every feature present and every number finite."""
    n = ds.manifest["used"]
    if n < min_labeled:
        raise DatasetError("training.too_few_labels", f"only {n} labeled events; at least {min_labeled} are needed "
                           "(BULWARK_TRAINER_MIN_LABELED)", {"labeled": n, "min_labeled": min_labeled})
    for name, y in (("train", ds.y_train), ("validation", ds.y_val)):
        classes = sorted({int(v) for v in y})
        if len(classes) < 2:
            raise DatasetError("training.single_class", f"the {name} split has a single class {classes}; a "
                               "classifier needs examples of both", {"split": name, "classes": classes, "n": len(y)})
    missing = {f: 0 for f in fields}
    bad = {f: 0 for f in numeric}
    for record in ds.train + ds.val:
        for f in fields:
            if f not in record or record[f] is None:
                missing[f] += 1
        for f in numeric:
            v = record.get(f)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v):
                bad[f] += 1
    missing = {f: c for f, c in missing.items() if c}
    if missing:
        raise DatasetError("training.feature_missing", f"feature(s) {', '.join(sorted(missing))} missing from "
                           f"{max(missing.values())} of {n} events", {"missing": missing, "events": n})
    bad = {f: c for f, c in bad.items() if c}
    if bad:
        raise DatasetError("training.non_finite", f"feature(s) {', '.join(sorted(bad))} hold NaN or infinity in "
                           f"{sum(bad.values())} events", {"non_finite": bad, "events": n})
