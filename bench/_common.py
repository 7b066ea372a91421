"""Shared bench plumbing: one result row format, a printed table, a JSON file `make bench` aggregates.

Every figure is a ratio against a baseline measured in the same process and run (a direct torch call, a
raw client loop, an anchor library), so machine speed cancels out; targets are checked on the ratio or
on an absolute floor the issue names, and printed, never asserted in tests.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    """One measured figure, with its baseline and target."""

    bench: str
    metric: str
    value: float
    unit: str
    baseline: str = ""
    target: str = ""
    ok: bool | None = None

    def cells(self) -> list[str]:
        """Table cells."""
        verdict = "" if self.ok is None else ("PASS" if self.ok else "MISS")
        return [self.bench, self.metric, _num(self.value), self.unit, self.baseline, self.target, verdict]


def _num(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


HEADERS = ["bench", "metric", "value", "unit", "baseline", "target", "verdict"]


def print_table(rows: Iterable[Row], file=sys.stdout) -> None:
    """An aligned table of rows."""
    rows = list(rows)
    cells = [HEADERS] + [r.cells() for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADERS))]
    for i, line in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip(), file=file)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=file)


def save(name: str, rows: list[Row], extra: dict | None = None) -> Path:
    """Write rows to bench/results/<name>.json and print them."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    doc = {"bench": name, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
           "rows": [asdict(r) for r in rows], **(extra or {})}
    path.write_text(json.dumps(doc, indent=2))
    print_table(rows)
    return path


def progress(message: str) -> None:
    """Progress on stderr (results go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
