"""Generate Python code for the protos under proto/ into libs/bulwark/api/ (run by `make proto`).

The generated package is never edited by hand; tests/unit/test_proto_fresh.py regenerates into a temporary
folder and fails when the committed code differs from what these protos produce.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc
import grpc_tools

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
INIT_TEXT = '"""Generated from proto/ by `make proto`; do not edit."""\n'


def protos() -> list[Path]:
    """Every .proto file under proto/bulwark."""
    return sorted((PROTO_ROOT / "bulwark").rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Compile every proto into `out` (a folder standing for libs/); returns the files written."""
    include = Path(grpc_tools.__file__).parent / "_proto"
    files = [str(p.relative_to(PROTO_ROOT)) for p in protos()]
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    written = []
    for folder in {(out / f).parent for f in files}:
        # Package markers for the generated folders (and their parents inside bulwark/).
        for pkg in [folder, *folder.parents]:
            if pkg == out / "bulwark" or out not in pkg.parents:
                break
            init = pkg / "__init__.py"
            init.write_text(INIT_TEXT)
            written.append(init)
    return sorted(set(written) | {p for p in (out / "bulwark" / "api").rglob("*") if p.is_file()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "libs", help="folder standing for libs/")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out), file=sys.stderr)


if __name__ == "__main__":
    main()
