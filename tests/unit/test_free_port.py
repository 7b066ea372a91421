"""Ports for the test stack's servers: below the kernel's ephemeral range, never handed out twice."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from bulwark.stack import parts
from bulwark.stack.parts import SeaweedPorts, free_port


def test_ports_and_their_plus_10000_twins_are_free_and_below_the_ephemeral_range(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    # An outgoing connection can take any port in the ephemeral range between our choice and the server's
    # bind; one below it is taken only by a server that binds it on purpose.
    ranges = tmp_path / "range"
    ranges.write_text("32768\t60999\n")
    monkeypatch.setattr(parts, "EPHEMERAL_RANGE_FILE", ranges)
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == 40  # handed out once each
    assert all(10000 <= p and p + 10000 < 32768 for p in ports)
    for p in ports[:5]:
        for q in (p, p + 10000):
            with socket.socket() as s:
                s.bind(("127.0.0.1", q))  # free: binding works


def _listener_in(window: range) -> socket.socket:
    for port in window:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        s.listen()
        return s
    raise AssertionError(f"no free port in {window}")


def test_a_port_or_twin_that_is_listening_is_never_handed_out(tmp_path: Path, monkeypatch) -> None:
    # A raised range leaves the window 10000..10999; one port in it listens, and so does another's twin.
    ranges = tmp_path / "range"
    ranges.write_text("21000 60999\n")
    monkeypatch.setattr(parts, "EPHEMERAL_RANGE_FILE", ranges)
    with _listener_in(range(10000, 10500)) as held, _listener_in(range(20500, 21000)) as twin:
        busy, busy_twin = held.getsockname()[1], twin.getsockname()[1] - 10000
        ports = {free_port() for _ in range(900)}  # nine in ten of the window
    assert all(10000 <= p < 11000 for p in ports)
    assert busy not in ports and busy_twin not in ports


def test_without_room_below_the_range_the_kernel_chooses(tmp_path: Path, monkeypatch) -> None:
    ranges = tmp_path / "range"
    ranges.write_text("1024 65535\n")
    monkeypatch.setattr(parts, "EPHEMERAL_RANGE_FILE", ranges)
    ports = SeaweedPorts.free()
    values = list(dataclasses.astuple(ports))
    assert len(set(values)) == 8 and all(p < 55000 for p in values)


def test_an_unreadable_range_falls_back_to_linux_default(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(parts, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert free_port() + 10000 < 32768


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch) -> None:
    monkeypatch.setattr(parts, "_handed_out", set())
