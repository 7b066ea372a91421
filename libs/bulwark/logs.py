"""Logging: one line per message on stderr, a message plus `key=value` fields, UTC timestamps.

Log lines name ids, topics, offsets and reasons, never the value of a personal field.
"""

from __future__ import annotations

import logging
import sys
import time


class _UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - stdlib name
        return time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created)) + f".{int(record.msecs):03d}Z"


def setup_logging(level: str = "INFO", *, service: str | None = None) -> None:
    """Configure the root logger once for a process."""
    handler = logging.StreamHandler(sys.stderr)
    prefix = f"{service} " if service else ""
    handler.setFormatter(_UTCFormatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python is chatty at INFO about every reconnect; its warnings still show.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
