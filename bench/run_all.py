"""`make bench`: run every benchmark in bench/ and print their figures as one table.

Each bench runs in its own process (so one's broker or model does not warm up another) and writes
bench/results/<name>.json; this script prints those rows together, with each figure's baseline and target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, Row, print_table, progress

HERE = Path(__file__).resolve().parent


def benches() -> list[Path]:
    """Every bench script (not the helpers); the machine's speed probes first, before anything warms it."""
    found = [p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.name != "run_all.py"]
    return sorted(found, key=lambda p: (p.stem != "machine", p.name))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="bench names to run (default: all)")
    parser.add_argument("--json", action="store_true", help="print the combined results as JSON")
    args = parser.parse_args()
    selected = [p for p in benches() if not args.only or p.stem in args.only]
    failed = []
    for path in selected:
        progress(f"bench {path.stem} ...")
        started = time.monotonic()
        proc = subprocess.run([sys.executable, str(path)], cwd=HERE, stdout=subprocess.DEVNULL)
        progress(f"bench {path.stem} finished in {time.monotonic() - started:.0f}s (exit {proc.returncode})")
        if proc.returncode != 0:
            failed.append(path.stem)
    rows = []
    for path in selected:
        result = RESULTS / f"{path.stem}.json"
        if result.exists() and path.stem not in failed:
            rows += [Row(**r) for r in json.loads(result.read_text())["rows"]]
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        print_table(rows)
    if failed:
        print(f"benches that failed to run: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
