"""Enqueue rate and coordinator peak memory for a big prompts file, in a fresh process.

    python -m bench.enqueue 1000000

Both passes (check, then enqueue) stream the file; ids and digests live in Redis, so the
coordinator's memory must stay flat however many prompts there are.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.generation import write_prompts
from distill.coordinator.enqueue import check_prompts, enqueue_prompts
from distill.coordinator.redis_server import EmbeddedRedis
from distill.shared.connection import connect
from distill.shared.keys import RunKeys
from distill.shared.queue import ensure_groups


def measure(prompts: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        path = write_prompts(root / "p.jsonl", prompts)
        server = EmbeddedRedis(root / "redis")
        client = connect(server.start())
        try:
            keys = RunKeys("bench")
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            started = time.perf_counter()
            report = check_prompts(client, keys, path)
            checked = time.perf_counter()
            ensure_groups(client, keys)
            queued = enqueue_prompts(client, keys, path)
            finished = time.perf_counter()
            redis_mb = int(client.info("memory")["used_memory"]) / 1e6
        finally:
            server.stop()
    assert report.valid == prompts and queued == prompts
    return {
        "prompts": prompts,
        "check_per_s": round(prompts / (checked - started)),
        "enqueue_per_s": round(prompts / (finished - checked)),
        "both_passes_per_s": round(prompts / (finished - started)),
        "coordinator_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "coordinator_rss_before_mb": round(rss_before / 1024, 1),
        "redis_used_mb": round(redis_mb, 1),
    }


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]))))
