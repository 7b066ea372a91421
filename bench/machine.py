"""How fast this machine is right now, so figures from different `make bench` runs can be compared.

Every other bench reports ratios against a baseline in the same run, but a few targets are absolute (events
per second, milliseconds), and the development machine's speed has drifted by up to 2x between sessions.
These three probes cover what the other figures depend on: the Python interpreter (every service's
per-event cost), single-thread fp32 matrix products (the models), and a loopback round trip between two
processes (every broker, Redis, Triton and gRPC hop). Each is the median of several repeats; `make bench`
runs this one first. None has a target.

The round trip depends on whether the other core is awake: on 2026-11-24 it was 13 us with a test run
keeping both cores busy and 39-43 us on the idle machine, where each hop waits for the peer's core to wake.
The latency figures of the other benches pay that on every hop.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import statistics
import time

import torch

from _common import Row, progress, save

REPEATS = 7


def python_loop_ns(n: int = 200_000) -> float:
    """Nanoseconds per iteration of a loop of dict stores and int-to-str conversions."""
    def once() -> float:
        d: dict[int, str] = {}
        started = time.perf_counter()
        for i in range(n):
            d[i & 255] = str(i)
        return (time.perf_counter() - started) / n * 1e9

    return statistics.median(once() for _ in range(REPEATS))


def matmul_gflops(size: int = 512, rounds: int = 20) -> float:
    """Single-thread fp32 GFLOP/s of a size x size matrix product."""
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm up

    def once() -> float:
        started = time.perf_counter()
        for _ in range(rounds):
            a @ b
        return 2 * size**3 * rounds / (time.perf_counter() - started) / 1e9

    return statistics.median(once() for _ in range(REPEATS))


def _echo(sock: socket.socket) -> None:
    while data := sock.recv(64):
        sock.sendall(data)


def round_trip_us(n: int = 2_000) -> float:
    """Median microseconds for 8 bytes to go to another process over a socket pair and back."""
    ours, theirs = socket.socketpair()
    child = mp.get_context("fork").Process(target=_echo, args=(theirs,), daemon=True)
    child.start()
    theirs.close()
    times = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            ours.sendall(b"8 bytes!")
            ours.recv(64)
            times.append(time.perf_counter() - started)
    finally:
        ours.close()
        child.join(5)
    return statistics.median(times[n // 10:]) * 1e6  # the first tenth warms up


def main() -> None:
    progress("machine speed: Python loop, fp32 matmul, process round trip")
    rows = [
        Row("machine", "Python loop (dict store + str(int)), per iteration", python_loop_ns(), "ns",
            "for comparing runs"),
        Row("machine", "fp32 512x512 matmul, one thread", matmul_gflops(), "GFLOP/s", "for comparing runs"),
        Row("machine", "round trip to another process (socket pair, 8 bytes)", round_trip_us(), "us",
            "for comparing runs"),
    ]
    save("machine", rows)


if __name__ == "__main__":
    main()
