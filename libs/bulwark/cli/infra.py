"""`bulwark status`, `bulwark stack ...`, `bulwark topics ...`: the platform's parts and plumbing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from bulwark.cli.output import emit, fail
from bulwark.stack.health import infrastructure, services


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(as_json: bool) -> None:
    """Show each part (broker, Redis, Triton, every service) as up, degraded or down.

    Exits 1 when any part is down.
    """
    from bulwark.cli.main import cli_settings

    settings = cli_settings()
    parts = infrastructure(settings) + services(settings)
    rows = [p.to_dict() for p in parts]
    emit({"parts": rows, "healthy": all(p.state == "up" for p in parts)}, as_json=as_json, rows=rows,
         columns=["part", "kind", "state", "instances", "detail"], colour_column="state")
    if any(p.state in ("down", "unknown") for p in parts):
        sys.exit(1)


@click.group()
def stack() -> None:
    """The local stack `make demo` runs (supervisord, logs under <home>/stack/logs)."""


def _layout(home: str | None):  # noqa: ANN202 - returns StackLayout
    from bulwark.stack.supervisor import StackLayout

    return StackLayout(Path(home or os.environ.get("BULWARK_HOME", "var")))


@stack.command("up")
@click.option("--home", default=None, help="State folder (default $BULWARK_HOME or ./var).")
@click.option("--no-services", is_flag=True, help="Start only the infrastructure parts.")
def stack_up(home: str | None, no_services: bool) -> None:
    """Start the broker, Redis, Triton (each unless already given) and every service."""
    from bulwark.stack.supervisor import up

    layout = _layout(home)
    pl = up(layout, services=not no_services, progress=lambda m: click.echo(m, err=True))
    rows = [{"part": k, "endpoint": v, "started_by_stack": "yes"} for k, v in pl.managed.items()]
    rows += [{"part": k, "endpoint": v, "started_by_stack": "no (given)"} for k, v in pl.external.items()]
    emit(rows, as_json=False, columns=["part", "endpoint", "started_by_stack"])
    click.echo(f"logs: {layout.logs}   stop: make down", err=True)


@stack.command("down")
@click.option("--home", default=None, help="State folder (default $BULWARK_HOME or ./var).")
def stack_down(home: str | None) -> None:
    """Stop everything the local stack started, and nothing else."""
    from bulwark.stack.supervisor import down

    if not down(_layout(home), progress=lambda m: click.echo(m, err=True)):
        click.echo("no local stack is running", err=True)


@stack.command("clean")
@click.option("--home", default=None, help="State folder (default $BULWARK_HOME or ./var).")
def stack_clean(home: str | None) -> None:
    """Forget the local stack's state: its folder (artifacts, model repository, broker storage, keys) and its
    keys in the Redis it used (only those under this stack's prefix). The stack must be stopped first.

    Both go together: a registry left in Redis would name versions whose artifacts are gone."""
    import shutil

    import redis

    from bulwark.cli.main import cli_settings
    from bulwark.stack.supervisor import load_env_file, running

    layout = _layout(home)
    if running(layout):
        fail("the local stack is running; stop it first (`make down`), then clean")
    url = load_env_file(layout.home).get("REDIS_URL")
    prefix = cli_settings().redis_prefix
    removed = 0
    if url:
        try:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
            cursor = None
            while cursor != 0:  # one SCAN page at a time, each page's keys unlinked together
                cursor, keys = client.scan(cursor or 0, match=f"{prefix}:*", count=1000)
                removed += client.unlink(*keys) if keys else 0
        except (redis.RedisError, OSError):
            where = url.split("@")[-1]
            click.echo(f"Redis at {where} did not answer: its '{prefix}:' keys are left (a Redis the stack "
                       "started itself kept nothing on disk)", err=True)
    if layout.home.exists():
        shutil.rmtree(layout.home)
    click.echo(f"removed {layout.home} and {removed} Redis key(s) under '{prefix}:'", err=True)


@stack.command("ps")
@click.option("--home", default=None, help="State folder (default $BULWARK_HOME or ./var).")
def stack_ps(home: str | None) -> None:
    """The stack's processes as supervisord sees them."""
    from bulwark.stack.supervisor import ctl, running

    layout = _layout(home)
    if not running(layout):
        fail("no local stack is running; start it with `make demo` or `bulwark stack up`")
    click.echo(ctl(layout, "status", check=False).stdout, nl=False)


@click.group()
def topics() -> None:
    """Kafka topics of the platform."""


@topics.command("create")
@click.option("--partitions", type=int, default=None, help="Partitions per topic (default BULWARK_KAFKA_PARTITIONS).")
def topics_create(partitions: int | None) -> None:
    """Create every platform topic that does not exist yet."""
    from bulwark.bus.admin import ensure_topics
    from bulwark.cli.main import cli_settings

    created = ensure_topics(cli_settings(), partitions=partitions)
    click.echo(f"created {len(created)} topic(s): {', '.join(created) or '-'}")


@topics.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def topics_list(as_json: bool) -> None:
    """The platform's topics, and whether each exists on the broker."""
    from kafka import KafkaAdminClient

    from bulwark.bus.client import kafka_client_config
    from bulwark.cli.main import cli_settings

    settings = cli_settings()
    admin = KafkaAdminClient(**kafka_client_config(settings, client_id="bulwark-cli"))
    try:
        existing = set(admin.list_topics())
    finally:
        admin.close()
    rows = [{"topic": name, "exists": name in existing} for name in settings.topics.all()]
    emit(rows, as_json=as_json)


COMMANDS = [status, stack, topics]
