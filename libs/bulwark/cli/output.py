"""Command output: readable tables for people, JSON for machines (`--json`), logs kept on stderr."""

from __future__ import annotations

import json
import sys
from typing import Any, Iterable, Sequence

import click

_STATE_COLOURS = {"up": "green", "running": "green", "ok": "green", "pass": "green", "live": "green",
                  "degraded": "yellow", "starting": "yellow", "canary": "yellow", "shadow": "yellow",
                  "down": "red", "fail": "red", "error": "red", "stopped": "red", "rejected": "red"}


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *, colour_column: str | None = None,
          file: Any = None) -> None:
    """Print rows as an aligned table; `colour_column` values like up/down are coloured on a terminal."""
    out = file or sys.stdout
    if not rows:
        click.echo("(none)", file=out)
        return
    cols = list(columns or rows[0].keys())
    cells = [[_fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths)).rstrip(), file=out)
    for row in cells:
        parts = []
        for i, (value, w) in enumerate(zip(row, widths)):
            text = value.ljust(w)
            if colour_column and cols[i] == colour_column and value in _STATE_COLOURS:
                text = click.style(text, fg=_STATE_COLOURS[value])
            parts.append(text)
        click.echo("  ".join(parts).rstrip(), file=out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:.3e}"
    if value is None:
        return "-"
    return str(value)


def emit(data: Any, *, as_json: bool, rows: Iterable[dict[str, Any]] | None = None,
         columns: Sequence[str] | None = None, colour_column: str | None = None) -> None:
    """`data` as JSON, or `rows` (default: `data`) as a table."""
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        table(list(rows if rows is not None else data), columns, colour_column=colour_column)


def fail(message: str, *, code: int = 1) -> None:
    """Print an error that says what to do next, and exit non-zero."""
    click.echo(click.style("error: ", fg="red") + message, err=True)
    sys.exit(code)
