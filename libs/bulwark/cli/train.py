"""`bulwark train`: ask the trainer for a new version now (a `training.request` event)."""

from __future__ import annotations

import click

from bulwark.cli.output import emit


def request_training(settings, model: str, reason: str, requested_by: str, detail: str = "") -> str:  # noqa: ANN001
    """Publish a `training.request` for `model`; returns the event id."""
    from bulwark.bus.producer import EventProducer, Output, make_producer
    from bulwark.events import Envelope

    event = Envelope(type="training.request", source="cli", subject=model,
                     payload={"model": model, "reason": reason, "requested_by": requested_by, "detail": detail})
    producer = EventProducer(make_producer(settings, client_id="bulwark-cli", linger_ms=0))
    producer.send(Output(settings.topics.training_requests, event))
    producer.flush()
    return event.id


@click.command()
@click.argument("model", default="fraud")
@click.option("--reason", type=click.Choice(["manual", "schedule", "bootstrap"]), default="manual", show_default=True)
@click.option("--detail", default="", help="Free text kept with the request (no personal data).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def train(model: str, reason: str, detail: str, as_json: bool) -> None:
    """Ask the trainer to train MODEL now; the new version then goes through quantizer, gate and updater."""
    import getpass

    from bulwark.cli.main import cli_settings

    settings = cli_settings()
    event_id = request_training(settings, model, reason, getpass.getuser(), detail)
    emit({"model": model, "event_id": event_id, "topic": settings.topics.training_requests}, as_json=as_json,
         rows=[{"model": model, "request": event_id, "topic": settings.topics.training_requests}])


COMMANDS = [train]
