"""`bulwark dlq list`: what was rejected, where, and why (payloads stay encrypted)."""

from __future__ import annotations

import click

from bulwark.cli.output import emit


@click.group()
def dlq() -> None:
    """The dead-letter topic."""


@dlq.command("list")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="Most recent records to show.")
@click.option("--reason", default=None, help="Only this reason (e.g. SCHEMA_VIOLATION).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_list(limit: int, reason: str | None, as_json: bool) -> None:
    """Dead letters: reason, stage, rejecting service, source position, event id, message."""
    from bulwark.bus.reader import read_topic
    from bulwark.cli.main import cli_settings

    settings = cli_settings()
    rows = []
    for rec, event in read_topic(settings, settings.topics.events_dlq):
        if event is None:
            continue
        p = event.payload
        if reason and p.get("reason") != reason:
            continue
        src = p.get("source", {})
        rows.append({"id": event.id, "time": event.time, "reason": p.get("reason"), "stage": p.get("stage"),
                     "service": p.get("service"), "source": f"{src.get('topic')}/{src.get('partition')}@{src.get('offset')}",
                     "event_id": p.get("event_id"), "message": p.get("message")})
    rows = sorted(rows, key=lambda r: r["time"])[-limit:]
    emit(rows, as_json=as_json, columns=["time", "reason", "stage", "service", "source", "event_id", "message"])


COMMANDS = [dlq]
