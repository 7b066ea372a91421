"""Headless Debian Chromium driven by Playwright (no browser download: the executable path is Debian's)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
# Without these, Chromium reaches for Google's hosts at start, and this closed network refuses each try.
FLAGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _ensure_chromium() -> str | None:
    """Debian's chromium, installed with apt-get when absent and this is root; the reason when it cannot be."""
    if os.path.exists(CHROMIUM):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{CHROMIUM} is absent and cannot be installed here (not root): `sudo apt-get install chromium`"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    done = subprocess.run("apt-get update -qq && apt-get install -y -qq chromium", shell=True, env=env,
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is absent and `apt-get install chromium` failed: {done.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """One headless Chromium for the session."""
    why = _ensure_chromium()
    if why:
        pytest.fail(why + " (`make browser-deps` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS, chromium_sandbox=False)
        yield b
        b.close()
