"""`bulwark doctor trace <event-id|trace-id>`: the hops an event reached and where it stopped.

Spans come from where the services export them locally: the `otlp_spans` topic (OTLP protobuf, the
Collector Kafka exporter's format) or `<home>/traces/*.jsonl` (OTLP JSON). With an OTLP collector the
same spans are in Jaeger; the doctor still reads the topic or files when they exist. Evidence that needs
no spans: each service's idempotence mark for the event id (and for the ids derived from it), so an
unsampled event is still located.
"""

from __future__ import annotations

import re

from typing import Any, Iterator

from bulwark.doctor.model import HopResult, TraceReport
from bulwark.doctor.settings import DoctorSettings
from bulwark.events.envelope import derived_id
from bulwark.redis_client import make_redis
from bulwark.redis_keys import RedisKeys
from bulwark.settings import CommonSettings
from bulwark.stack import catalog

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
# Where an event goes after each service; a hop with no successor ends the journey.
NEXT_HOP = {"producer": "ingest-anonymizer", "ingest-anonymizer": "trainer", "trainer": None,
            "quantizer": "robustness-guard", "robustness-guard": "updater", "updater": None,
            "doctor": None, "inference": None, "explainer": None}


# ------------------------------------------------------------------------------------------ reading spans
def _attr_value(v: dict[str, Any]) -> Any:
    for k in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if k in v:
            return int(v[k]) if k == "intValue" else v[k]
    return None


def _flatten_json(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    import base64

    for rs in doc.get("resourceSpans", []):
        res = {a["key"]: _attr_value(a["value"]) for a in rs.get("resource", {}).get("attributes", [])}
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                yield {
                    "trace_id": base64.b64decode(sp.get("traceId", "")).hex(),
                    "span_id": base64.b64decode(sp.get("spanId", "")).hex(),
                    "parent_id": base64.b64decode(sp.get("parentSpanId", "")).hex(),
                    "name": sp.get("name", ""),
                    "service": str(res.get("service.name", "")).removeprefix("bulwark-"),
                    "instance": res.get("service.instance.id"),
                    "start_ns": int(sp.get("startTimeUnixNano", 0)),
                    "end_ns": int(sp.get("endTimeUnixNano", 0)),
                    "status": {"STATUS_CODE_ERROR": "error", "STATUS_CODE_OK": "ok"}.get(
                        sp.get("status", {}).get("code", ""), "unset"),
                    "status_message": sp.get("status", {}).get("message", ""),
                    "attributes": {a["key"]: _attr_value(a["value"]) for a in sp.get("attributes", [])},
                }


def _from_proto(value: bytes) -> Iterator[dict[str, Any]]:
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    req.ParseFromString(value)
    yield from _flatten_json(MessageToDict(req))


def read_spans(settings: CommonSettings, doctor: DoctorSettings) -> list[dict[str, Any]]:
    """The newest spans from the spans topic and the trace files (as flat dicts)."""
    spans = list(_topic_spans(settings, doctor.span_records))
    folder = settings.home / "traces"
    if folder.is_dir():
        import json

        for path in sorted(folder.glob("*.jsonl")):
            for line in path.read_text(errors="replace").splitlines()[-doctor.span_records:]:
                try:
                    spans.extend(_flatten_json(json.loads(line)))
                except ValueError:
                    continue
    return spans


def _topic_spans(settings: CommonSettings, newest: int) -> Iterator[dict[str, Any]]:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    from bulwark.bus.client import kafka_client_config

    topic = settings.topics.otlp_spans
    try:
        consumer = KafkaConsumer(**kafka_client_config(settings, client_id="bulwark-doctor"), group_id=None,
                                 enable_auto_commit=False, allow_auto_create_topics=False,
                                 max_partition_fetch_bytes=8 * 1_048_576)
    except (KafkaError, OSError, ValueError):
        return
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        begins = consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(begins[tp], ends[tp] - newest))
        # The reported end can trail the true end on Tansu: read until two quiet polls, not to `ends`.
        quiet = 0
        while quiet < 2:
            batch = consumer.poll(timeout_ms=300, max_records=1000)
            if not batch:
                quiet += 1
                continue
            quiet = 0
            for recs in batch.values():
                for rec in recs:
                    try:
                        yield from _from_proto(rec.value or b"")
                    except Exception:  # noqa: BLE001 - a record that is not OTLP is skipped
                        continue
    except KafkaError:
        return
    finally:
        consumer.close()


# ------------------------------------------------------------------------------------------ the report
def trace_report(settings: CommonSettings, ident: str, *, doctor: DoctorSettings | None = None,
                 spans: list[dict[str, Any]] | None = None) -> TraceReport:
    """Where the event (or trace) `ident` went: hops in chain order, the last reached, where it stopped."""
    doctor = doctor or DoctorSettings()
    spans = read_spans(settings, doctor) if spans is None else spans
    ident = ident.strip().lower() if _TRACE_ID.match(ident.strip().lower()) else ident.strip()
    if _TRACE_ID.match(ident):
        trace_ids = {ident}
    else:
        trace_ids = {s["trace_id"] for s in spans if s["attributes"].get("bulwark.event.id") == ident}
    mine = sorted((s for s in spans if s["trace_id"] in trace_ids), key=lambda s: s["start_ns"])
    marks = _marks(settings, ident) if not _TRACE_ID.match(ident) else {}
    reached: dict[str, dict[str, Any]] = {}
    for s in mine:
        svc = s["service"] or "producer"
        if svc in NEXT_HOP or svc in catalog.names():
            # The span that explains a hop best: an error, else the latest.
            if svc not in reached or s["status"] == "error" or reached[svc]["status"] != "error":
                reached[svc] = s
    for svc, where in marks.items():
        reached.setdefault(svc, {"service": svc, "status": "unset", "name": "idempotence mark",
                                 "attributes": {"bulwark.outcome": "handled", "evidence": where}, "start_ns": 0})
    order = [h for h in ("producer", *catalog.names()) if h in reached]
    hops = [HopResult(h, True, detail=_describe(reached[h])) for h in order]
    if not order:
        return TraceReport(ident, sorted(trace_ids), [], None, None, False,
                           "no span and no idempotence mark names this id: not produced, not sampled, or older "
                           "than the spans kept (sample more with BULWARK_TRACES_SAMPLE_RATIO)", mine)
    failed = next((h for h in order if reached[h]["status"] == "error"
                   or reached[h]["attributes"].get("bulwark.outcome") == "dead_lettered"), None)
    # Progress follows the chain from the first hop reached; readers beside it (the updater reads clean events
    # for labels, the explainer reads inference.log) are listed as reached but are not the next hop.
    last = order[0]
    while NEXT_HOP.get(last) in reached:
        last = NEXT_HOP[last]  # type: ignore[assignment]
    if failed is not None:
        s = reached[failed]
        reason = s["attributes"].get("bulwark.dlq.reason") or s.get("status_message") or "error"
        return TraceReport(ident, sorted(trace_ids), hops, failed, failed, False,
                           f"stopped at {failed}: {reason} (dead-lettered: see `bulwark dlq`)"
                           if s["attributes"].get("bulwark.outcome") == "dead_lettered"
                           else f"stopped at {failed}: span status error ({reason})", mine)
    nxt = NEXT_HOP.get(last)
    if nxt is None:
        return TraceReport(ident, sorted(trace_ids), hops, last, None, True, f"complete: last hop {last}", mine)
    hops.append(HopResult(nxt, False, detail="no span or mark: not reached yet"))
    return TraceReport(ident, sorted(trace_ids), hops, last, nxt, False,
                       f"reached {last}; stopped before {nxt} (is it down or behind? run `bulwark doctor`)", mine)


def _describe(span: dict[str, Any]) -> str:
    a = span.get("attributes", {})
    bits = [span.get("name", "")]
    for key in ("messaging.destination.name", "bulwark.outcome", "bulwark.dlq.reason", "bulwark.outputs", "evidence"):
        if a.get(key) not in (None, ""):
            bits.append(f"{key.rsplit('.', 1)[-1]}={a[key]}")
    if span.get("status") == "error":
        bits.append("status=error")
    return " ".join(b for b in bits if b)


def _marks(settings: CommonSettings, event_id: str) -> dict[str, str]:
    """Services whose idempotence mark holds this id or the id the anonymizer derived from it."""
    try:
        client = make_redis(settings, timeout_s=1.5)
        keys = RedisKeys(settings.redis_prefix)
        clean_id = derived_id(event_id, "ingest-anonymizer", "0")
        checks = [(svc, i) for svc in catalog.names() for i in (event_id, clean_id)]
        hits = client.mget([keys.idempotence(svc, i) for svc, i in checks])
    except Exception:  # noqa: BLE001 - Redis down: spans only
        return {}
    out: dict[str, str] = {}
    for (svc, i), hit in zip(checks, hits):
        if hit is not None:
            out.setdefault(svc, "idempotence mark" + (" (derived id)" if i != event_id else ""))
    return out


def error_spans(spans: list[dict[str, Any]]) -> dict[str, int]:
    """Error spans per service among `spans`."""
    out: dict[str, int] = {}
    for s in spans:
        if s["status"] == "error":
            out[s["service"]] = out.get(s["service"], 0) + 1
    return out


