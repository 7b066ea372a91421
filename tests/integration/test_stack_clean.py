"""`bulwark stack clean` (what `make clean` runs): the stack's folder and its Redis keys go together."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from bulwark.cli.main import cli
from bulwark.redis_client import make_redis
from bulwark.testing.stack import TestStack

pytestmark = pytest.mark.integration


def test_stack_clean_removes_the_folder_and_only_this_prefix_keys(stack: TestStack, tmp_path: Path) -> None:
    home = tmp_path / "var"
    (home / "stack").mkdir(parents=True)
    (home / "stack" / "stack.env").write_text(f"BULWARK_HOME={home}\nREDIS_URL={stack.redis_url}\n")
    (home / "artifacts" / "fraud" / "1").mkdir(parents=True)
    ours, other = "c" + uuid.uuid4().hex[:8], "o" + uuid.uuid4().hex[:8]
    client = make_redis(stack.settings(redis_prefix=ours))
    client.set(f"{ours}:registry:fraud:seq", 1)
    client.hset(f"{ours}:live:fraud", mapping={"live_version": 1})
    client.set(f"{other}:registry:fraud:seq", 7)
    try:
        result = CliRunner().invoke(cli, ["stack", "clean", "--home", str(home)],
                                    env={"BULWARK_REDIS_PREFIX": ours, "REDIS_URL": stack.redis_url})
        assert result.exit_code == 0, result.output
        assert "2 Redis key(s)" in result.output
        assert not home.exists()
        assert client.keys(f"{ours}:*") == []
        assert client.get(f"{other}:registry:fraud:seq") == b"7"  # another prefix is not this stack's
    finally:
        client.delete(f"{other}:registry:fraud:seq")


def test_stack_clean_with_no_state_says_what_it_removed(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["stack", "clean", "--home", str(tmp_path / "nothing")])
    assert result.exit_code == 0, result.output
    assert "0 Redis key(s)" in result.output
