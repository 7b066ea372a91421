"""`bulwark produce`: publish reference payment events (the demo's and the benchmarks' data)."""

from __future__ import annotations

import time

import click

from bulwark.cli.output import emit


@click.command()
@click.option("--count", "-n", type=click.IntRange(1), default=1000, show_default=True, help="Events to publish.")
@click.option("--rate", type=click.FloatRange(0), default=0, show_default=True,
              help="Events per second (0: as fast as the broker takes them).")
@click.option("--seed", type=int, default=None, help="Same seed, same events (ids included).")
@click.option("--labeled-fraction", type=click.FloatRange(0, 1), default=0.7, show_default=True,
              help="Share of events that carry the fraud label.")
@click.option("--drift-amount", type=click.FloatRange(0.01), default=1.0, show_default=True,
              help="Multiply amounts by this (a distribution shift for drift drills).")
@click.option("--topic", default=None, help="Target topic (default BULWARK_TOPIC_EVENTS_RAW).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable summary.")
def produce(count: int, rate: float, seed: int | None, labeled_fraction: float, drift_amount: float,
            topic: str | None, as_json: bool) -> None:
    """Publish COUNT reference payment-transaction events, keyed by customer, with trace context."""
    from opentelemetry import trace

    from bulwark.bus.producer import EventProducer, Output, make_producer
    from bulwark.cli.main import cli_settings
    from bulwark.reference import DriftSpec, ReferenceGenerator
    from bulwark.tracing import setup_tracing, tracer

    settings = cli_settings()
    provider = setup_tracing("producer", settings)
    target = topic or settings.topics.events_raw
    gen = ReferenceGenerator(seed=seed, labeled_fraction=labeled_fraction,
                             drift=DriftSpec(amount_factor=drift_amount))
    # Paced, records leave as they come (a 5 ms linger); in bulk, they leave in batches of 500 (flushed below).
    producer = EventProducer(make_producer(settings, client_id="bulwark-produce", linger_ms=5 if rate else 1000))
    tr = tracer("bulwark.producer")
    started = time.monotonic()
    labeled = 0
    with click.progressbar(length=count, label=f"producing to {target}", file=click.get_text_stream("stderr"),
                           show_pos=True, show_eta=True) as bar:
        for i, event in enumerate(gen.events(count)):
            if rate:
                # Pace against the start time, so the average rate holds even when sends are uneven.
                ahead = started + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            with tr.start_as_current_span("produce payment.transaction", kind=trace.SpanKind.PRODUCER,
                                          attributes={"messaging.system": "kafka",
                                                      "messaging.destination.name": target,
                                                      "bulwark.event.id": event.id}):
                producer.send(Output(target, event))
            labeled += "is_fraud" in event.payload
            if i % 500 == 499:
                producer.flush()
                bar.update(500)
        producer.flush()
        bar.update(count % 500 or 0)
    producer.close()
    provider.shutdown()
    seconds = time.monotonic() - started
    summary = {"topic": target, "events": count, "labeled": labeled, "seconds": round(seconds, 2),
               "events_per_s": round(count / seconds, 1) if seconds else None}
    emit(summary, as_json=as_json, rows=[summary])


COMMANDS = [produce]
