"""What `distill generate` hands back: the run's numbers, rendered by coordinator/progress.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.coordinator.enqueue import CheckReport


@dataclass
class RunResult:
    run: str
    run_dir: Path
    total: int
    conversations: int
    dead: int
    duplicates_dropped: int
    queued_now: int
    requeued_orphans: int
    elapsed_s: float
    input_tokens: int
    output_tokens: int
    tool_calls: int
    check: CheckReport
    endpoints: dict[str, dict[str, Any]]
    policy: str
    # Tool executions by tool: outcomes and p50/p95 ms (coordinator/stats.py), and the tool processes.
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    tool_processes: int = 0
    worker_reports: list[dict[str, Any]] = field(default_factory=list)
    # Verdicts of the conversations this command wrote.
    passed: int = 0
    failed: int = 0
    unverified: int = 0
    # Secrets withheld in the run's conversations (values tagged and files withheld), and how many
    # conversations had any (shared/secrets.py).
    redactions: int = 0
    redacted: int = 0
    # The workers' own logs (one file per actor); None when no worker had to start.
    worker_logs: Path | None = None

    @property
    def complete(self) -> bool:
        return self.conversations + self.dead >= self.total
