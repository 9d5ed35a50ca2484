"""What the user sees: a live bar while a run works, a table when it ends, `distill status` any time.

The coordinator also writes `progress.json` in the run folder every second, so `distill status`
can describe a run without its Redis password, whether the run is live or long finished.
Nothing here prints: the bar draws on the console its caller gives, the tables are returned.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from distill.coordinator.result import RunResult
from distill.coordinator.stats import count_records, infra_errors
from distill.shared.jsonl import write_atomic

PROGRESS_FILE = "progress.json"


log = logging.getLogger(__name__)


class _CountColumn(MofNCompleteColumn):
    """done/total on the run's row; nothing on a teacher's row, which has no total (not `0/?`)."""

    def render(self, task: Any) -> Any:
        return super().render(task) if task.total is not None else ""


class RunProgress:
    """The live bar of a run, drawn on `console`; without one it keeps count and draws nothing."""

    def __init__(self, run: str, total: int, *, console: Console | None = None) -> None:
        self.total = total
        self.enabled = console is not None
        self._started = time.monotonic()
        self._first_done: int | None = None
        self._bar = Progress(
            TextColumn(f"[bold]{run}[/]"),
            BarColumn(),
            _CountColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task("generate", total=total, detail="")
        self._endpoint_rows: dict[str, Any] = {}

    def start(self, already: int) -> None:
        self._first_done = already
        self._bar.update(self._task, completed=already)
        if self.enabled:
            self._bar.start()

    def update(
        self,
        *,
        done: int,
        dead: int,
        in_flight: int,
        tokens: int,
        endpoints: dict[str, dict[str, Any]] | None = None,
        tools: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        elapsed = max(1e-6, time.monotonic() - self._started)
        rate = (done - (self._first_done or 0)) / elapsed
        detail = f"failed {dead} · in flight {in_flight} · {rate:.1f}/s · {tokens:,} tok"
        broken = infra_errors(tools or {})
        if broken:
            # Retried or dropped, never data; but a run that keeps hitting them needs looking at.
            detail += f" · [bold red]⚠ {broken} tool infra errors[/]"
        self._bar.update(self._task, completed=done, detail=detail)
        for name, numbers in (endpoints or {}).items():
            row = self._endpoint_rows.get(name)
            if row is None:
                row = self._endpoint_rows[name] = self._bar.add_task(name, total=None, detail="")
            latency = numbers["mean_latency_s"]
            text = (f"  {name} ({numbers['kind']}): in flight {numbers['in_flight']} · "
                    f"{numbers['requests']} req · {numbers['errors']} err"
                    + (f" · {latency:.2f}s/req" if latency is not None else ""))
            self._bar.update(row, detail=text)

    def stop(self) -> None:
        if self.enabled:
            self._bar.stop()


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


def summary_table(result: RunResult) -> Table:
    table = Table(title=f"run {result.run}", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    rate = (result.conversations + result.dead) / result.elapsed_s if result.elapsed_s else 0.0
    rows = [
        ("prompts in the run (x samples)", f"{result.total:,}"),
        ("conversations written", f"{result.conversations:,}"),
        ("dead letters", f"{result.dead:,}"),
        ("queued by this command", f"{result.queued_now:,}"),
        ("redone after a crash", f"{result.requeued_orphans:,}"),
        ("duplicate deliveries dropped", f"{result.duplicates_dropped:,}"),
        ("bad prompt lines skipped", f"{result.check.bad_count:,}"),
        ("tool calls (this command)", f"{result.tool_calls:,}"),
        ("answers passed / failed / unverified (this command)", f"{result.passed:,} / {result.failed:,} / {result.unverified:,}"),
        ("secrets withheld (in conversations)", f"{result.redactions:,} ({result.redacted:,})"),
        ("tool processes", f"{result.tool_processes:,}"),
        ("tool infrastructure errors", f"{infra_errors(result.tools):,}"),
        ("tokens in / out (this command)", f"{result.input_tokens:,} / {result.output_tokens:,}"),
        ("elapsed", f"{result.elapsed_s:.1f} s"),
        ("records per second", f"{rate:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def summary_paths(result: RunResult) -> list[tuple[str, Path]]:
    """Where the run went: printed below the summary, whole (a cell would cut them)."""
    paths = [("output", result.run_dir)]
    if result.worker_logs is not None:
        paths.append(("worker logs", result.worker_logs / "worker-*.log"))
    return paths


def endpoints_table(endpoints: dict[str, dict[str, Any]], policy: str | None = None) -> Table:
    """One column per teacher, one row per measure: ten measures side by side do not fit 80 columns."""
    title = "teachers" + (f" (policy {policy})" if policy else "")
    table = Table(title=title, header_style="bold")
    table.add_column("teacher")
    for name in endpoints:
        table.add_column(name, justify="right", overflow="fold")
    rows: list[tuple[str, list[str]]] = [
        ("kind", [n["kind"] for n in endpoints.values()]),
        ("conversations", [f"{n['conversations']:,}" for n in endpoints.values()]),
        ("requests", [f"{n['requests']:,}" for n in endpoints.values()]),
        ("in flight", [str(n["in_flight"]) for n in endpoints.values()]),
        ("errors", [f"{n['errors']:,}" for n in endpoints.values()]),
        ("tokens in", [f"{n['input_tokens']:,}" for n in endpoints.values()]),
        ("tokens out", [f"{n['output_tokens']:,}" for n in endpoints.values()]),
        ("mean latency", [f"{n['mean_latency_s']:.2f} s" if n.get("mean_latency_s") is not None else "-"
                          for n in endpoints.values()]),
        ("est. cost", [f"${n['cost_usd']:.4f}" if n.get("cost_usd") is not None else "-" for n in endpoints.values()]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    return table


def tools_table(tools: dict[str, dict[str, Any]], processes: int | None = None) -> Table:
    """Tool executions by outcome and their execution time; infra errors were retried, never shown."""
    title = "tools" + (f" ({processes} tool processes)" if processes else "")
    table = Table(title=title, header_style="bold")
    for column in ("tool", "ok", "tool error", "infra error", "p50", "p95"):
        table.add_column(column, justify="left" if column == "tool" else "right")
    for name, n in tools.items():
        infra = f"[bold red]{n['infra_error']:,}[/]" if n["infra_error"] else "0"
        p50 = f"{n['p50_ms']:.1f} ms" if n.get("p50_ms") is not None else "-"
        p95 = f"{n['p95_ms']:.1f} ms" if n.get("p95_ms") is not None else "-"
        table.add_row(name, f"{n['ok']:,}", f"{n['tool_error']:,}", infra, p50, p95)
    return table


def status_table(run_dir: Path) -> Table:
    """`distill status`: the files are the truth for what is done; the snapshot tells the rest."""
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
    table = Table(title=f"run {run_dir.name}: {state}", header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("prompts", f"{total:,}" if total else "unknown")
    table.add_row("conversations", f"{counts['conversations']:,}")
    table.add_row("dead letters", f"{counts['dead']:,}")
    table.add_row("remaining", f"{max(0, total - ended):,}" if total else "unknown")
    table.add_row("secrets withheld (in conversations)", f"{counts['redactions']:,} ({counts['redacted']:,})")
    if state == "running":
        table.add_row("in flight", str(snapshot.get("in_flight", 0)))
        table.add_row("queued", str(snapshot.get("queued", 0)))
    table.add_row("retries", str(snapshot.get("retries", 0)))
    if snapshot.get("tool_processes"):
        table.add_row("tool processes", str(snapshot["tool_processes"]))
    if snapshot.get("tools"):
        table.add_row("tool infrastructure errors", str(infra_errors(snapshot["tools"])))
    table.add_row("last update", str(snapshot.get("updated_at", "never")))
    table.add_row("folder", str(run_dir))
    return table


def status_tables(run_dir: Path) -> list[Table]:
    tables = [status_table(run_dir)]
    snapshot = read_progress_snapshot(run_dir) or {}
    if snapshot.get("endpoints"):
        tables.append(endpoints_table(snapshot["endpoints"]))
    if snapshot.get("tools"):
        tables.append(tools_table(snapshot["tools"], snapshot.get("tool_processes")))
    return tables
