"""The console's JSON API logic: the chain picture, rates, drift, versions, rollouts, traces, explanations, and
the admin gate; in-process, no sockets (the FastAPI app runs under its test client, which opens none)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bulwark.auth import Credentials, save_credentials
from bulwark.guard.drift import feature_psi
from bulwark.settings import CommonSettings
from services.console.app import build_app, plotly_js
from services.console.chain import EDGES, LAYOUT, RateMeter, build_chain
from services.console.settings import ConsoleSettings
from services.console.sources import ConsoleSources
from services.console import views


def _diagnosis(**states: str) -> dict:
    parts = [{"part": "kafka", "kind": "infrastructure", "state": "up", "detail": "ok", "evidence": {}, "instances": []}]
    for name, st in states.items():
        parts.append({"part": name, "kind": "service", "state": st, "detail": f"{name} {st}",
                      "evidence": {"handled": 0}, "instances": [{"instance": f"{name}-1", "state": st, "detail": "",
                                                                 "evidence": {"lag": "7"}}]})
    return {"at": 1.0, "took_s": 0.1, "down": [n for n, s in states.items() if s == "down"], "degraded": [],
            "parts": parts}


def test_rate_meter_first_sample_none_then_events_per_second() -> None:
    m = RateMeter()
    assert m.observe("trainer", 10, 100.0) is None
    assert m.observe("trainer", 30, 104.0) == 5.0
    assert m.observe("trainer", 3, 105.0) is None  # a restarted instance counts from zero again


def test_build_chain_states_from_diagnosis_and_lag_on_the_consumers_arrow() -> None:
    d = _diagnosis(**{"ingest-anonymizer": "down", "trainer": "up", "mystery": "degraded"})
    meter = RateMeter()
    build_chain(d, meter, now=10.0)
    d["parts"][2]["evidence"]["handled"] = 50  # the trainer handled 50 more
    c = build_chain(d, meter, now=20.0)
    nodes = {n["name"]: n for n in c["nodes"]}
    assert set(nodes) == set(LAYOUT)
    assert nodes["ingest-anonymizer"]["state"] == "down" and nodes["kafka"]["state"] == "up"
    assert nodes["quantizer"]["state"] == "unknown"  # not in the diagnosis: not checked
    edge = next(e for e in c["edges"] if e["target"] == "trainer")
    assert (edge["rate"], edge["lag"], edge["carries"]) == (5.0, 7, "events.clean")
    assert [e["source"] for e in c["edges"]] == [a for a, *_ in EDGES]
    assert c["other"] == [{"name": "mystery", "state": "degraded", "detail": "mystery degraded"}]
    assert c["down"] == ["ingest-anonymizer"]


def test_counts_psi_matches_the_guards_psi_on_the_same_window() -> None:
    fields = {"amount": {"kind": "numeric", "edges": [0, 10, 20, 30], "shares": [0.2, 0.5, 0.3]},
              "country": {"kind": "categorical", "shares": {"DE": 0.6, "FR": 0.4}}}
    amounts, countries = [1, 2, 15, 25, 25, 25, 29], ["DE", "US", "US", "FR"]
    counts = {"amount|0": 2, "amount|1": 1, "amount|2": 4, "country|DE": 1, "country|FR": 1, "country|<other>": 2}
    got = views.counts_psi(fields, counts)
    assert got["amount"] == pytest.approx(feature_psi(fields["amount"], amounts), abs=1e-4)
    assert got["country"] == pytest.approx(feature_psi(fields["country"], countries), abs=1e-4)


def test_drift_view_lists_drifting_windows_of_this_model_and_the_open_window() -> None:
    fields = {"amount": {"kind": "numeric", "edges": [0, 10, 20], "shares": [0.5, 0.5]}}
    alerts = [{"kind": "drift.detected", "model": "m", "version": "3", "at": "t1",
               "evidence": {"window": 2, "psi": {"amount": 0.9, "hour": 0.05}, "threshold": 0.25}},
              {"kind": "drift.detected", "model": "other", "evidence": {"window": 1, "psi": {"x": 1.0}}},
              {"kind": "drift.detected", "model": "m", "version": "2", "evidence": {"window": 1, "psi": {"y": 1.0}}},
              {"kind": "updater.refused", "model": "m", "evidence": {}}]
    d = views.drift_view("m", 3, 0.25, 500, alerts, {"__n": 4, "amount|0": 4}, fields)
    assert [w["window"] for w in d["windows"]] == [2]
    assert d["features"] == ["amount", "hour"]
    assert d["current"]["records"] == 4 and d["current"]["psi"]["amount"] > 0.25
    assert views.drift_view("m", None, 0.25, 500, [], None, None)["current"] is None


def test_version_row_joins_registry_and_modeladmin_and_hides_personal_keys() -> None:
    entry = {"version": 2, "state": "live", "family": "mlp", "parent": 1, "metrics": {"accuracy": 0.9, "bad": float("nan")},
             "dataset_digest": "ab" * 32, "dataset": {"used": 10, "email": "x@y.z"},
             "quantization": {"form": "int8", "reason": "smaller"}, "gate": {"passed": True, "reasons": []},
             "history": [{"state": "live", "at": 1.0, "by": "updater", "reason": "canary held"}]}
    row = views.version_row(entry, {"signatureOk": True, "artifactDigest": "d"})
    assert row["signature"] == "ok" and row["metrics"] == {"accuracy": 0.9}
    assert row["dataset"] == {"used": 10} and row["quantization"]["form"] == "int8"
    assert views.version_row(entry, {})["signature"] == "FAILED"
    assert views.version_row(entry, None)["signature"] == "unknown"


def test_rollout_view_prefers_modeladmin_signals_and_falls_back_to_live_state() -> None:
    status = {"liveVersion": 1, "loadedVersions": [1, 2], "rollout": {
        "candidateVersion": 2, "stage": "canary", "share": 0.2, "candidate": {"agreement": 0.4, "requests": "12"},
        "live": {"agreement": 1.0}, "decision": "regression: agreement"}}
    r = views.rollout_view(status, None)
    assert (r["candidate"], r["stage"], r["signals"]["candidate"]["agreement"]) == (2, "canary", 0.4)
    assert r["signals"]["live"]["errorRate"] == 0
    fallback = views.rollout_view(None, {"live_version": 1, "candidate": None, "stage": "none", "share": 0.0})
    assert fallback["signals"] is None and fallback["source"].startswith("redis")


def test_trace_view_orders_hop_times_and_drops_span_bodies() -> None:
    report = {"query": "e1", "trace_ids": ["t"], "hops": [
        {"hop": "producer", "seen": True, "detail": "send"}, {"hop": "ingest-anonymizer", "seen": True, "detail": "ok"},
        {"hop": "trainer", "seen": False, "detail": "not reached"}], "last_hop": "ingest-anonymizer",
        "stopped_at": "trainer", "complete": False, "detail": "stopped", "spans": [
            {"service": "", "start_ns": 1_000_000_000, "attributes": {"x": "y"}},
            {"service": "ingest-anonymizer", "start_ns": 1_012_500_000}]}
    t = views.trace_view(report)
    assert [h["after_ms"] for h in t["hops"]] == [0.0, 12.5, None]
    assert t["spans"] == 2 and t["stopped_at"] == "trainer"


def test_explanation_view_sorts_bars_by_magnitude() -> None:
    x = views.explanation_view({"model": "m", "version": 1, "attributions": [
        {"feature": "a", "value": 0.1}, {"feature": "b", "value": -0.5}, {"feature": "c"}],
        "convergence": {"converged": True}})
    assert [b["feature"] for b in x["bars"]] == ["b", "a", "c"] and x["converged"] is True
    assert math.isclose(x["bars"][2]["value"], 0.0)


@pytest.fixture
def client(tmp_path: Path) -> tuple[TestClient, dict[str, str]]:
    creds = Credentials()
    tokens = {"admin": creds.add_token("alice", ["admin"]), "reader": creds.add_token("bob", ["explain"])}
    save_credentials(creds, tmp_path / "keys")
    settings = CommonSettings(keys_dir=tmp_path / "keys", redis_url="redis://127.0.0.1:1/0")
    app = build_app(ConsoleSources(settings, ConsoleSettings()))
    return TestClient(app), tokens


@pytest.mark.parametrize("auth, body, status, words", [
    (None, {"reason": "bad canary"}, 401, "admin credential"),  # no credential: read-only
    ("Bearer nope", {"reason": "bad canary"}, 401, "not valid"),  # unknown token
    ("Token x", {"reason": "bad canary"}, 401, "Bearer"),  # wrong scheme
    ("reader", {"reason": "bad canary"}, 403, "admin scope"),  # a token without the admin scope
    ("admin", {"reason": " "}, 400, "reason"),  # no reason
])
def test_change_without_admin_credential_or_reason_is_refused(client, auth, body, status, words) -> None:  # noqa: ANN001
    tc, tokens = client
    headers = {"Authorization": f"Bearer {tokens[auth]}" if auth in tokens else auth} if auth else {}
    r = tc.post("/api/models/fraud/rollback", json=body, headers=headers)
    assert r.status_code == status and words in r.json()["error"]


def test_change_unknown_action_is_refused_before_any_call(client) -> None:  # noqa: ANN001
    tc, tokens = client
    r = tc.post("/api/models/fraud/delete", json={"reason": "why not"},
                headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert r.status_code == 400 and "rollback" in r.json()["error"]


def test_page_and_assets_are_served_locally_with_a_self_only_policy(client) -> None:  # noqa: ANN001
    tc, _ = client
    page = tc.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    js = tc.get("/static/plotly.min.js")
    assert js.status_code == 200 and len(js.content) == plotly_js().stat().st_size
    assert tc.get("/static/../settings.py").status_code == 404
    assert tc.get("/api/config").json() == {"refresh_s": 2.0}
