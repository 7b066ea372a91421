"""`bulwark`: one command for people running the platform; a subcommand per action.

Results go to stdout (a table, or JSON with `--json`), logs and progress to stderr; a failure exits
non-zero with a message that says what to do next. With no infrastructure variables set, commands use
the local stack's endpoints from `<BULWARK_HOME>/stack/stack.env` (written by `make demo`).
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from bulwark.errors import BulwarkError
from bulwark.settings import CommonSettings, load_settings


def cli_settings(**overrides: object) -> CommonSettings:
    """Settings for a CLI command: the environment, then the local stack's stack.env for what is unset."""
    from bulwark.stack.supervisor import load_env_file

    home = Path(os.environ.get("BULWARK_HOME", "var"))
    for key, value in load_env_file(home).items():
        os.environ.setdefault(key, value)
    return load_settings(CommonSettings, **overrides)


class BulwarkGroup(click.Group):
    """A click group that turns `BulwarkError` into a clean message and exit status 2."""

    def invoke(self, ctx: click.Context) -> object:
        from kafka.errors import KafkaError
        from redis import RedisError

        try:
            return super().invoke(ctx)
        except BulwarkError as exc:
            message = exc.message
        except KafkaError as exc:
            message = (f"Kafka is unreachable ({type(exc).__name__}); start the local stack with `make demo` "
                       "or set KAFKA_BOOTSTRAP_SERVERS to a running broker")
        except RedisError as exc:
            message = (f"Redis is unreachable ({type(exc).__name__}); start the local stack with `make demo` "
                       "or set REDIS_URL to a running Redis")
        click.echo(click.style("error: ", fg="red") + message, err=True)
        ctx.exit(2)


@click.group(cls=BulwarkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bulwark")
def cli() -> None:
    """Bulwark: run machine-learning models safely in production."""


def _register() -> None:
    from bulwark.cli import (config, demo, dlq, doctor, infra, kernels, keys, models, privacy, probe, produce,
                             train)

    for module in (infra, produce, train, models, keys, dlq, privacy, config, demo, probe, doctor, kernels):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bulwark")


if __name__ == "__main__":
    main()
