"""Tool calls run in a pool of processes apart from the agent loop, and say how they ended.

Why processes: the agent loops of every conversation share one event loop and one GIL; a grep
run in the worker's thread pool fights them all, and a time limit around the await counts that
wait as if the tool were slow (92 % of greps "timed out" at 32 conversations in flight). Here
each call runs in one of `processes` pool processes (pebble), so tools use every core, and the
time limit counts execution only: pebble starts a task's clock when a pool process picks it up,
kills a process whose task runs past the limit and starts a fresh one in its place.

Each pool process builds the run's tool core (worker/toolcore.py) from the same (workspace,
custom tools, limits) and answers with it. Every execution ends with an outcome (ToolOutcome in
shared/records.py): `ok`, `tool_error` (the tool saying the input is wrong: no such file, bad
regex) or `infra_error` (time limit hit, the pool process died, the pool broke). An infra error is never the tool's answer: `call` retries
it with backoff and, when it keeps failing, raises ToolInfraError, which ends the conversation
as a retryable failure (worker/agent.py), so a conversation never goes on from a fake result.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
from concurrent.futures import CancelledError as FutureCancelled
from dataclasses import dataclass
from typing import Any

import psutil
from pebble import ProcessExpired, ProcessPool
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential

from distill.shared.records import ToolOutcome
from distill.shared.settings import GenerationLimits
from distill.worker.mcp_servers import McpServerSet
from distill.worker.sandbox import ToolLimits
from distill.worker.toolcore import ToolAnswer, ToolCore

log = logging.getLogger(__name__)

# A built-in tool stops its own walk at the time limit and answers; the pool kills the process
# only when a call overruns that by this much (a hung custom tool, a stuck read).
KILL_GRACE_S = 1.0


class ToolInfraError(Exception):
    """A tool call kept failing for reasons of our own making (time limit, crash, broken pool)."""

    def __init__(self, tool: str, reason: str, attempts: int) -> None:
        super().__init__(f"tool {tool}: {reason} (after {attempts} attempts)")
        self.tool = tool
        self.reason = reason
        self.attempts = attempts


@dataclass(frozen=True)
class ToolRun:
    """One execution of a tool call: its outcome, its text, and the seconds it ran in a pool process."""

    tool: str
    outcome: ToolOutcome
    text: str
    seconds: float


def default_processes() -> int:
    """The cores this process may use (the node's, unless an affinity mask says fewer)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no affinity masks
        return max(1, os.cpu_count() or 1)


# --- inside a pool process --------------------------------------------------------------------

_core: ToolCore | None = None
_core_failed = ""


def _start_process(workspace: str, custom_tools: tuple[str, ...], limits: GenerationLimits,
                   sandbox: ToolLimits) -> None:
    global _core, _core_failed
    _die_with_parent()
    try:
        _core = ToolCore(workspace, custom_tools, limits, sandbox=sandbox)
    except Exception as error:  # noqa: BLE001 - checked in preflight; here it can only be this host's environment
        # A failing initializer would break the pool for good; each call says why instead (an infra error).
        _core_failed = f"the tool process could not build its tools: {error}"


def _die_with_parent() -> None:
    """A worker killed outright (Ray kills with SIGKILL) must not leave its tool processes behind."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: pebble's workers end when their pipe closes
        pass


def _execute(name: str, arguments: dict[str, Any]) -> tuple[ToolAnswer, float]:
    """Run one tool call with this process's core: its answer and the seconds it took."""
    started = time.perf_counter()
    answer = _core.answer(name, arguments) if _core is not None else ToolAnswer("infra_error", _core_failed)
    return answer, time.perf_counter() - started


def _ready() -> int:
    return os.getpid()


# --- in the worker ----------------------------------------------------------------------------


class ToolPool:
    """A worker's tool processes. One per worker, shared by all its conversations."""

    def __init__(self, core: ToolCore, *, processes: int | None = None, backoff_s: float = 0.2) -> None:
        self.core = core
        self.processes = processes or core.limits.tool_processes or default_processes()
        # The time limit and attempts are the run's (GenerationLimits), as in every other surface.
        self.timeout_s = core.workspace.limits.timeout_s
        self.attempts = core.limits.tool_attempts
        self.backoff_s = backoff_s
        # Every execution, drained by whoever reports the numbers (GenerationLoop -> Redis).
        self.executions: list[ToolRun] = []
        # Tools from MCP servers run in the worker's server sessions, under the same limit, cap and retries.
        self.mcp: McpServerSet | None = None
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPool:
        # spawn, not fork: the worker holds threads (Ray, gRPC, the event loop) a fork would copy mid-state.
        return ProcessPool(
            max_workers=self.processes,
            initializer=_start_process,
            initargs=(str(self.core.workspace.root), self.core.custom_tools, self.core.limits,
                      self.core.workspace.limits),
            context=multiprocessing.get_context("spawn"),
        )

    async def warm(self) -> None:
        """Start the processes now: spawning them (an interpreter and imports each) would else
        delay the first wave of tool calls."""
        futures = [self._pool.schedule(_ready) for _ in range(self.processes)]
        await asyncio.gather(*(asyncio.wrap_future(future) for future in futures), return_exceptions=True)

    async def call(self, tool: str, arguments: dict[str, Any]) -> ToolRun:
        """The tool's real answer (`ok` or `tool_error`); ToolInfraError when it can't be had."""
        retrying = AsyncRetrying(
            retry=retry_if_result(lambda run: run.outcome == "infra_error"),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=10 * self.backoff_s),
            # Out of attempts: hand back the last run, raised below as what it is.
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        run: ToolRun = await retrying(self.execute, tool, arguments)
        if run.outcome == "infra_error":
            raise ToolInfraError(tool, run.text, self.attempts)
        return run

    async def execute(self, tool: str, arguments: dict[str, Any]) -> ToolRun:
        """One execution in a pool process; never raises for the tool's or the pool's failures."""
        if self.mcp is not None and tool in self.mcp.tools:
            # An MCP server answers in the worker's own session with it (one per worker, not per
            # process); its answer is finished by the same core as every other tool's.
            mcp = await self.mcp.call(tool, arguments, self.timeout_s)
            finished = self.core.finish(tool, arguments, ToolAnswer(mcp.outcome, mcp.text))
            return self._record(ToolRun(tool, finished.outcome, finished.text, mcp.seconds))
        started = time.perf_counter()
        try:
            future = self._pool.schedule(_execute, args=(tool, arguments), timeout=self.timeout_s + KILL_GRACE_S)
        except RuntimeError as error:
            # pebble marks a pool whose processes can't be started as broken for good: start another.
            self._pool.stop()
            self._pool = self._new_pool()
            return self._record(ToolRun(tool, "infra_error", f"the tool pool broke ({error}); started a new one", 0.0))
        try:
            answer, seconds = await asyncio.wrap_future(future)
        except TimeoutError:
            run = ToolRun(tool, "infra_error", f"time limit of {self.timeout_s:g}s hit; the tool process was replaced",
                          self.timeout_s + KILL_GRACE_S)
        except ProcessExpired as error:
            run = ToolRun(tool, "infra_error", f"the tool process died (exit code {error.exitcode})",
                          time.perf_counter() - started)
        except FutureCancelled:
            run = ToolRun(tool, "infra_error", "the call was cancelled in the pool", time.perf_counter() - started)
        except Exception as error:  # noqa: BLE001 - a broken pool or unpicklable answer is ours, not the tool's
            run = ToolRun(tool, "infra_error", f"{type(error).__name__}: {error}", time.perf_counter() - started)
        else:
            run = ToolRun(tool, answer.outcome, answer.text, seconds)
        return self._record(run)

    def _record(self, run: ToolRun) -> ToolRun:
        if run.outcome == "infra_error":
            log.warning("tool %s: %s", run.tool, run.text)
        self.executions.append(run)
        return run

    def drain(self) -> list[ToolRun]:
        runs, self.executions = self.executions, []
        return runs

    def pids(self) -> list[int]:
        """The pool processes alive now (tests kill one; the benchmark sums their CPU)."""
        manager = getattr(self._pool, "_pool_manager", None)
        workers = getattr(getattr(manager, "worker_manager", None), "workers", {}) or {}
        return [pid for pid in list(workers) if pid]

    def cpu_seconds(self) -> float:
        """CPU the live pool processes have used (a process the pool replaced took its own along)."""
        total = 0.0
        for pid in self.pids():
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def close(self) -> None:
        self._pool.stop()
        self._pool.join(timeout=10)

