"""The generated gRPC code in libs/bulwark/api matches what proto/ produces (run `make proto` if not)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    gen = _load_generator()
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in gen.generate(tmp_path)}
    committed_root = ROOT / "libs"
    committed = {p.relative_to(committed_root): p.read_bytes()
                 for p in (committed_root / "bulwark" / "api").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    stale = sorted(str(p) for p in set(fresh) | set(committed) if fresh.get(p) != committed.get(p))
    assert not stale, f"generated code is stale; run `make proto`: {stale}"
