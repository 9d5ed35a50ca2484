"""Simulated teachers in their own processes, so their CPU never counts as distill's."""

from __future__ import annotations

import contextlib
import json
import sys
import urllib.request
from collections.abc import Iterator

from distill.shared.children import spawn
from distill.shared.connection import free_port
from distill.shared.errors import DistillError


class SimTeacherError(DistillError):
    pass


@contextlib.contextmanager
def sim_teacher_process(
    latency_s: float, *, tool_rounds: int = 2, seconds_per_token: float = 0.0, length_jitter: float = 0.0
) -> Iterator[str]:
    port = free_port()
    child = spawn(
        [sys.executable, "-m", "distill", "sim-teacher", "--port", str(port), "--latency", str(latency_s),
         "--tool-rounds", str(tool_rounds), "--seconds-per-token", str(seconds_per_token),
         "--length-jitter", str(length_jitter)],
        name="simulated teacher",
    )
    url = f"http://127.0.0.1:{port}/v1"

    def answers() -> None:
        stats(url)

    try:
        child.wait_ready(answers, 30, SimTeacherError)
        yield url
    finally:
        child.stop()


def stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/stats", timeout=5) as response:
        return json.loads(response.read())
