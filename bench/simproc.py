"""Simulated teachers in their own processes, so their CPU never counts as distill's."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

from distill.shared.connection import free_port


@contextlib.contextmanager
def sim_teacher_process(
    latency_s: float, *, tool_rounds: int = 2, seconds_per_token: float = 0.0, length_jitter: float = 0.0
) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "distill", "sim-teacher", "--port", str(port), "--latency", str(latency_s),
         "--tool-rounds", str(tool_rounds), "--seconds-per-token", str(seconds_per_token),
         "--length-jitter", str(length_jitter)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            stats(url)
            break
        except OSError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)


def stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=5) as response:
        return json.loads(response.read())
