"""Accounting shared by the fault scenarios: N prompts in, exactly N records and dead letters out.

Each scenario ends with `account(...)`, which asserts nothing was lost or doubled and, when
DISTILL_RELIABILITY_REPORT names a file, appends the scenario's row for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from distill.coordinator.collector import CONVERSATIONS_FILE, DEAD_FILE

REPORT_ENV = "DISTILL_RELIABILITY_REPORT"


def _ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["task_id"] for line in path.read_text().splitlines() if line.strip()]


def account(scenario: str, injected: str, run_dir: Path, expected_ids: set[str]) -> dict:
    conversations, dead = _ids(run_dir / CONVERSATIONS_FILE), _ids(run_dir / DEAD_FILE)
    counts = Counter(conversations + dead)
    row = {
        "scenario": scenario,
        "injected": injected,
        "prompts": len(expected_ids),
        "records": len(conversations),
        "dead_letters": len(dead),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "lost": len(expected_ids - set(counts)),
        "unexpected": len(set(counts) - expected_ids),
    }
    report = os.environ.get(REPORT_ENV)
    if report:
        with open(report, "a") as handle:
            handle.write(json.dumps(row) + "\n")
    assert row["duplicates"] == 0, row
    assert row["lost"] == 0, row
    assert row["unexpected"] == 0, row
    return row
