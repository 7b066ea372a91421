"""Pure shaping of what the console shows: versions, rollouts, drift windows, alerts, traces, explanations.

Every function here takes plain data (registry entries, protobuf dicts, envelopes' payloads) and returns
plain JSON-able dicts, so the JSON API's logic is tested without sockets (`tests/unit/services`).
Only pseudonymous ids reach the page: event ids, request ids, model names and versions; no payload of
`events.raw` is ever read, and alert evidence is passed through a key filter (`scrub`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from bulwark.guard.drift import psi
from bulwark.reference import PERSONAL_FIELDS

# Keys never shown even if a writer put them in an alert's evidence by mistake.
_HIDDEN = frozenset(PERSONAL_FIELDS) | {"payload", "features", "text", "input", "inputs"}


def scrub(value: Any) -> Any:
    """A copy of `value` without keys that may carry a personal value or a raw input."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in _HIDDEN}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def _finite(x: Any) -> float | None:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# ------------------------------------------------------------------------------------------ models
def version_row(entry: dict[str, Any], admin: dict[str, Any] | None) -> dict[str, Any]:
    """One version as the models view lists it: registry entry joined with ModelAdmin's `VersionInfo`."""
    q = entry.get("quantization") or {}
    gate = entry.get("gate") or {}
    metrics = {k: v for k, v in (entry.get("metrics") or {}).items() if _finite(v) is not None}
    dataset = entry.get("dataset") or {}
    return {
        "version": int(entry["version"]),
        "state": entry.get("state", ""),
        "family": entry.get("family", ""),
        "parent": entry.get("parent"),
        "created_at": entry.get("created_at"),
        "dataset_digest": entry.get("dataset_digest") or (dataset.get("digest") if isinstance(dataset, dict) else None),
        "dataset": scrub(dataset) if isinstance(dataset, dict) else {},
        "metrics": metrics,
        "quantization": scrub(q),
        "gate": scrub(gate),
        "signature": ("ok" if admin.get("signatureOk") else "FAILED") if admin is not None else "unknown",
        "artifact_digest": (admin or {}).get("artifactDigest") or entry.get("artifact_digest", ""),
        "history": [{k: h.get(k) for k in ("state", "at", "by", "reason")} for h in entry.get("history", [])],
    }


def rollout_view(status: dict[str, Any] | None, live: dict[str, Any] | None) -> dict[str, Any]:
    """The live version and the rollout in progress: ModelAdmin's `ModelStatus` (camelCase dict) when the updater
    answers, else the live state read from Redis without signals."""
    if status is not None:
        r = status.get("rollout") or {}
        signals = None
        if r.get("candidateVersion"):
            names = ("errorRate", "latencyP99Ms", "guardFlagRate", "agreement", "accuracy", "requests", "labeled")
            signals = {who: {n: (r.get(who) or {}).get(n, 0) for n in names} for who in ("candidate", "live")}
        return {"source": "ModelAdmin", "live_version": status.get("liveVersion"),
                "candidate": r.get("candidateVersion"), "stage": r.get("stage", "none"), "share": r.get("share", 0.0),
                "reason": r.get("reason", ""), "decision": r.get("decision", ""),
                "loaded": status.get("loadedVersions", []), "signals": signals}
    if live is not None:
        return {"source": "redis (updater unreachable: no signals)", "live_version": live.get("live_version"),
                "candidate": live.get("candidate"), "stage": live.get("stage", "none"), "share": live.get("share", 0.0),
                "reason": live.get("reason", ""), "decision": "", "loaded": live.get("loaded", []), "signals": None}
    return {"source": "none", "live_version": None, "candidate": None, "stage": "none", "share": 0.0, "reason": "",
            "decision": "", "loaded": [], "signals": None}


def deployments(events: Iterable[tuple[float, dict[str, Any]]], model: str, limit: int = 50) -> list[dict[str, Any]]:
    """The model's newest rollout changes from (time, models.deployed payload) pairs: who, what, why."""
    rows = [{"at": at, **{k: e.get(k) for k in ("action", "version", "live_version", "stage", "share", "by", "reason")}}
            for at, e in events if e.get("model") == model]
    return rows[-limit:]


# ------------------------------------------------------------------------------------------ drift
def counts_psi(fields: dict[str, Any], counts: dict[str, int]) -> dict[str, float]:
    """PSI per profiled field from the guard's open-window bin counts (`<field>|<bin>` -> count)."""
    out = {}
    for name, field in fields.items():
        if field.get("kind") == "numeric":
            n_bins = max(len(field.get("edges") or []) - 1, 0)
            if not n_bins:
                continue
            actual = np.array([counts.get(f"{name}|{i}", 0) for i in range(n_bins)], dtype=np.float64)
            expected = np.asarray(field["shares"], dtype=np.float64)
        else:
            cats = list(field.get("shares", {})) + ["<other>"]
            actual = np.array([counts.get(f"{name}|{c}", 0) for c in cats], dtype=np.float64)
            expected = np.array([field["shares"].get(c, 0.0) for c in cats])
        if actual.sum() > 0:
            out[name] = round(psi(expected, actual / actual.sum()), 4)
    return out


def drift_view(model: str, version: int | None, threshold: float, window_size: int, alerts: Iterable[dict[str, Any]],
               open_counts: dict[str, int] | None, fields: dict[str, Any] | None) -> dict[str, Any]:
    """Per feature, PSI over the version's closed windows that drifted (from `drift.detected` alerts) and the open
    window so far, with the threshold. Windows that did not drift publish nothing, so only drifting ones are listed."""
    windows = []
    for a in alerts:
        ev = a.get("evidence") or {}
        if a.get("kind") != "drift.detected" or a.get("model") != model or "psi" not in ev:
            continue
        if version is not None and str(a.get("version")) != str(version):
            continue  # each version has its own profile and window numbers
        windows.append({"window": ev.get("window"), "version": a.get("version"), "at": a.get("at"),
                        "psi": {k: round(float(v), 4) for k, v in ev["psi"].items()},
                        "threshold": ev.get("threshold", threshold)})
    windows.sort(key=lambda w: int(w["window"] or 0))
    current = None
    if open_counts is not None and fields:
        n = int(open_counts.get("__n", 0))
        current = {"records": n, "of": window_size, "psi": counts_psi(fields, open_counts) if n else {}}
    features = sorted({f for w in windows for f in w["psi"]} | set((current or {}).get("psi", {})))
    return {"model": model, "version": version, "threshold": threshold, "window": window_size, "features": features,
            "windows": windows, "current": current}


# ------------------------------------------------------------------------------------------ alerts
def alert_row(payload: dict[str, Any], *, at: float, event_id: str) -> dict[str, Any]:
    """One alert for the timeline."""
    return {"id": event_id, "at": at, "kind": payload.get("kind", ""), "severity": payload.get("severity", "info"),
            "service": payload.get("service", ""), "model": payload.get("model"), "version": payload.get("version"),
            "summary": payload.get("summary", ""), "evidence": scrub(payload.get("evidence") or {})}


# ------------------------------------------------------------------------------------------ traces
def trace_view(report: dict[str, Any]) -> dict[str, Any]:
    """The doctor's trace report with each hop's first span time; raw spans are left out (only ids and
    outcomes reach the page)."""
    first: dict[str, int] = {}
    for s in report.get("spans", []):
        svc = s.get("service") or "producer"
        if s.get("start_ns") and (svc not in first or s["start_ns"] < first[svc]):
            first[svc] = int(s["start_ns"])
    t0 = min(first.values()) if first else None
    hops = []
    for h in report.get("hops", []):
        at = first.get(h["hop"])
        hops.append({"hop": h["hop"], "seen": h["seen"], "detail": h.get("detail", ""),
                     "at": at / 1e9 if at else None, "after_ms": round((at - t0) / 1e6, 1) if at and t0 else None})
    return {"query": report.get("query"), "trace_ids": report.get("trace_ids", []), "hops": hops,
            "last_hop": report.get("last_hop"), "stopped_at": report.get("stopped_at"),
            "complete": report.get("complete", False), "detail": report.get("detail", ""),
            "spans": len(report.get("spans", []))}


# ------------------------------------------------------------------------------------------ explanations
def explanation_view(resp: dict[str, Any]) -> dict[str, Any]:
    """ExplainService's answer (camelCase dict) as bars sorted by |attribution|."""
    bars = sorted(({"feature": a["feature"], "value": float(a.get("value", 0.0))} for a in resp.get("attributions", [])),
                  key=lambda b: -abs(b["value"]))
    conv = resp.get("convergence") or {}
    return {"model": resp.get("model"), "version": resp.get("version"), "request_id": resp.get("requestId"),
            "method": resp.get("method"), "target": resp.get("target"), "output": resp.get("output", 0.0),
            "baseline_output": resp.get("baselineOutput", 0.0), "family": resp.get("family"),
            "converged": conv.get("converged"), "delta": conv.get("delta"), "bars": bars}
