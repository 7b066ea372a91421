"""A minimal service for the bus's own tests, run through the same runtime as every real service.

It consumes `test.echo` events from BULWARK_ECHO_IN, records one effect per handled event in Redis (a list
the test reads, to count effects) and produces one derived event to BULWARK_ECHO_OUT. `fail_first` in a
payload makes the first attempt raise a retryable error (an infrastructure failure); `poison` raises a
non-retryable one (a content error, dead-lettered).
"""

from __future__ import annotations

import os
from typing import Iterable

from bulwark.bus import Context, Output
from bulwark.errors import BulwarkError, Reason, UnavailableError
from bulwark.events import Envelope, EventTypeRegistry
from bulwark.runtime import ServiceRuntime, main_guard
from bulwark.settings import CommonSettings, load_settings

ECHO_SCHEMA = {
    "type": "object",
    "required": ["n"],
    "properties": {"n": {"type": "integer"}, "fail_first": {"type": "boolean"}, "poison": {"type": "boolean"}},
}


def registry() -> EventTypeRegistry:
    """The default registry plus the test event type."""
    reg = EventTypeRegistry.default()
    reg.register("test.echo", 1, ECHO_SCHEMA)
    return reg


class EchoHandler:
    """Echo each event, with a Redis-recorded effect."""

    name = "echo"
    event_types = {"test.echo"}

    def __init__(self, topic_in: str, topic_out: str) -> None:
        self.topics = [topic_in]
        self._out = topic_out

    def handle(self, event: Envelope, ctx: Context) -> Iterable[Output]:
        if event.payload.get("poison"):
            raise BulwarkError(Reason.POLICY_VIOLATION, f"event n={event.payload['n']} is marked poison")
        attempts_key = ctx.keys.counter(self.name, f"attempts:{event.id}")
        if event.payload.get("fail_first") and ctx.redis.incr(attempts_key) == 1:
            raise UnavailableError("simulated downstream outage on first attempt")
        ctx.redis.rpush(ctx.keys.counter(self.name, "effects"), event.id)
        yield Output(self._out, event.derive("test.echo", {"n": event.payload["n"]}, source=self.name))


@main_guard
def main() -> None:
    settings = load_settings(CommonSettings)
    rt = ServiceRuntime("echo", settings, registry=registry())
    handler = EchoHandler(os.environ["BULWARK_ECHO_IN"], os.environ["BULWARK_ECHO_OUT"])
    rt.run(loop=rt.consumer_loop(handler))


if __name__ == "__main__":
    main()
