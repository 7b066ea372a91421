"""`bulwark demo`: the platform's story on the running local stack, step by step.

Each step says what it does, waits for the platform to do it (with a deadline), and shows the evidence.
A step that cannot complete stops the demo with the reason and where to look.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Callable

import click

from bulwark.cli.output import table


def _step(title: str) -> None:
    click.echo(click.style(f"\n== {title}", bold=True), err=True)


def _wait(what: str, check: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    with click.progressbar(length=int(timeout_s), label=f"waiting for {what}", file=sys.stderr) as bar:
        last = 0
        while time.monotonic() < deadline:
            result = check()
            if result:
                bar.update(int(timeout_s) - last)
                return result
            time.sleep(1)
            now = int(timeout_s - (deadline - time.monotonic()))
            bar.update(now - last)
            last = now
    raise click.ClickException(f"timed out waiting for {what}; see `bulwark status` and the logs under var/stack/logs")


@click.command()
@click.option("--events", type=click.IntRange(100), default=3000, show_default=True, help="Events to produce.")
def demo(events: int) -> None:
    """Walk through the platform on the running local stack (`make demo` starts it first)."""
    from bulwark.cli.main import cli_settings
    from bulwark.stack.health import infrastructure, services

    settings = cli_settings()
    _step("1. every part of the stack is up")
    parts = infrastructure(settings)
    table([p.to_dict() for p in parts], ["part", "state", "detail"], colour_column="state")
    if any(p.state == "down" for p in parts):
        raise click.ClickException("an infrastructure part is down; run `make demo` (it starts the stack)")
    _wait("services' heartbeats", lambda: all(p.state != "down" for p in services(settings)), 90)
    table([p.to_dict() for p in services(settings)], ["part", "state", "instances", "detail"], colour_column="state")

    _step(f"2. a producer publishes {events} payment events with personal data to {settings.topics.events_raw}")
    subprocess.run([sys.executable, "-m", "bulwark.cli.main", "produce", "--count", str(events), "--rate", "0"],
                   check=True)
    click.echo("\nnext: `bulwark status` shows each part; `bulwark dlq list` shows rejected records", err=True)


COMMANDS = [demo]
