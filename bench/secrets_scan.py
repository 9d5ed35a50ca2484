"""What the secrets scan (shared/secrets.py) costs the tools, on bench/workspace.py's tree.

    python -m bench.secrets_scan '{"files": 1000, "repeats": 5}'

CPU ms per call, median of `repeats`, with the scan on and off, for: a grep whose pattern is
defined once (the tool-load scenario: the whole-file prefilter leaves one file to scan), a grep
that hits every file (every file is scanned), and reading one file. Also the scan's own
throughput over the whole tree. Prints one JSON object.
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.workspace import make_tree
from distill.shared.secrets import Redactor, SecretsConfig, new_key
from distill.worker.sandbox import ToolLimits
from distill.worker.toolcore import ToolCore


def cpu_ms(call, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.process_time()
        call()
        times.append((time.process_time() - started) * 1000)
    return round(statistics.median(times), 2)


def measure(files: int = 1000, repeats: int = 5) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        root = make_tree(Path(scratch) / "tree", files)
        calls = {
            "grep defined once": lambda ws: ws.answer("grep", {"pattern": "Collector", "max_results": 20}),
            "grep hits every file": lambda ws: ws.answer("grep", {"pattern": "def f_", "max_results": 100_000}),
            "read_file": lambda ws: ws.answer("read_file", {"path": "pkg_000/file_00000.py"}),
        }
        table = {}
        for name, call in calls.items():
            on = ToolCore(root, sandbox=ToolLimits(timeout_s=60))
            off = ToolCore(root, sandbox=ToolLimits(timeout_s=60, secrets=SecretsConfig(enabled=False)))
            table[name] = {"scan_on_ms": cpu_ms(functools.partial(call, on), repeats),
                           "scan_off_ms": cpu_ms(functools.partial(call, off), repeats)}
            row = table[name]
            row["scan_share"] = round(1 - row["scan_off_ms"] / row["scan_on_ms"], 3) if row["scan_on_ms"] else None
        text = "".join(path.read_text() for path in sorted(root.rglob("*.py")))
        redactor = Redactor(SecretsConfig(), new_key())
        seconds = statistics.median(_timed(lambda: redactor.redact(text)) for _ in range(repeats))
    return {"files": files, "repeats": repeats, "calls": table,
            "scan_mb_per_s": round(len(text.encode()) / seconds / 1e6, 1), "tree_mb": round(len(text.encode()) / 1e6, 2)}


def _timed(call) -> float:  # type: ignore[no-untyped-def]
    started = time.process_time()
    call()
    return time.process_time() - started


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}"))))
