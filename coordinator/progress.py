"""A run's progress as data: a tick for the live view once a second, `progress.json` in the run
folder (so `distill status` can describe a run without its Redis password, live or long finished),
and the status `distill status` shows. Nothing here renders: distill/views.py draws all of it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from distill.coordinator.stats import count_records
from distill.shared.jsonl import write_atomic

PROGRESS_FILE = "progress.json"


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunTick:
    """What the live view of a run shows: sent once when the run starts, then about once a second."""

    run: str
    total: int
    done: int
    # Records already on disk when this command started: the rate counts from them.
    done_before: int
    elapsed_s: float
    dead: int = 0
    in_flight: int = 0
    tokens: int = 0
    endpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)


TickCallback = Callable[[RunTick], None]


@dataclass(frozen=True)
class RunStatus:
    """`distill status`: the files are the truth for what is done; the snapshot tells the rest."""

    run_dir: Path
    state: str
    total: int
    counts: dict[str, int]
    snapshot: dict[str, Any]


def write_progress_snapshot(run_dir: Path, snapshot: dict[str, Any]) -> None:
    try:
        write_atomic(run_dir / PROGRESS_FILE, json.dumps(snapshot, indent=2))
    except OSError as error:  # numbers for status only: the collector reports a full disk itself
        log.warning("cannot write %s: %s", run_dir / PROGRESS_FILE, error.strerror or error)


def read_progress_snapshot(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / PROGRESS_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def run_status(run_dir: Path) -> RunStatus:
    counts = count_records(run_dir)
    snapshot = read_progress_snapshot(run_dir) or {}
    total = int(snapshot.get("total", 0))
    pid = snapshot.get("coordinator_pid")
    alive = pid is not None and not snapshot.get("finished") and psutil.pid_exists(int(pid))
    ended = counts["conversations"] + counts["dead"]
    if snapshot.get("finished") or (total and ended >= total):
        state = "finished"
    elif alive:
        state = "running"
    else:
        state = "stopped (run the same command again to resume)"
    return RunStatus(run_dir=run_dir, state=state, total=total, counts=counts, snapshot=snapshot)
