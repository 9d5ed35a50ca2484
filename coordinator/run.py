"""`distill generate`: prompts file -> Redis -> Ray workers -> exactly one record per prompt.

The journey: check the file, queue what isn't done, start workers, drain results to disk while
showing progress, stop the workers once every prompt has ended, print a summary.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from redis import Redis

from distill.coordinator.collector import Collector, Drained
from distill.coordinator.enqueue import CheckReport, check_prompts, enqueue_prompts, tasks_total
from distill.coordinator.progress import RunTick, TickCallback, write_progress_snapshot
from distill.coordinator.redis_server import EmbeddedRedis, RedisStartError, embedded_redis
from distill.coordinator.result import RunResult
from distill.coordinator.stats import count_records, snapshot
from distill.coordinator.teachers import launched_teachers, plan_teachers
from distill.coordinator.workers import WorkerPool, run_log_dir, running_workers
from distill.shared.connection import connect, redact_url
from distill.shared.errors import DistillError
from distill.shared.jsonl import write_atomic
from distill.shared.keys import RunKeys
from distill.shared.prompts import PromptsFileError
from distill.shared.queue import ensure_groups, requeue_orphans
from distill.shared.records import CONVERSATIONS_FILE, DEAD_FILE, MANIFEST_FILE, RunManifest, utcnow
from distill.shared.retry import REDIS_DOWN, outlast_redis
from distill.shared.settings import Settings
from distill.worker.mcp_servers import check_servers
from distill.worker.toolcore import check_tools

__all__ = ["RedisLost", "RunRefused", "RunResult", "generate"]

log = logging.getLogger(__name__)

LOCK_TTL_S = 15


class RunRefused(DistillError):
    """The run can't start (bad prompts, another coordinator); the message says why."""

    def __init__(self, message: str, bad_lines: CheckReport | None = None) -> None:
        super().__init__(message)
        self.report = bad_lines


@dataclass
class RunRedis:
    """The run's Redis: the one given, or an embedded server whose data lives in the run folder."""

    url: str
    server: EmbeddedRedis | None = None

    def revive(self) -> bool:
        """Restart our own embedded server if it died (same port, password and AOF)."""
        if self.server is None or (self.server.process is not None and self.server.process.poll() is None):
            return False
        self.server.start()
        return True


@contextlib.contextmanager
def redis_for(settings: Settings, run_dir: Path) -> Iterator[RunRedis]:
    if settings.redis_url:
        yield RunRedis(settings.redis_url)
        return
    with embedded_redis(run_dir / "redis") as server:
        yield RunRedis(server.url, server)


@contextlib.contextmanager
def run_lock(client: redis.Redis, keys: RunKeys, run_dir: Path) -> Iterator[str]:
    """One coordinator per run: a second one would race the first on the output files.

    A file lock guards the run folder on this machine (the kernel drops it when the process dies,
    even by SIGKILL); a Redis key with a short TTL guards it across machines.
    """
    handle = (run_dir / ".lock").open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunRefused(f"run {keys.run!r} is already running on this machine ({run_dir})") from None
    me = f"{socket.gethostname()}:{os.getpid()}"
    lock_key = keys.lock
    try:
        if not client.set(lock_key, me, nx=True, ex=LOCK_TTL_S):
            holder = str(client.get(lock_key) or "")
            # Our own file lock proves a holder on this host is gone (killed before its TTL ran out).
            if holder.rpartition(":")[0] != socket.gethostname():
                raise RunRefused(f"run {keys.run!r} is already being coordinated by {holder}; wait for it or stop it")
            client.set(lock_key, me, ex=LOCK_TTL_S)
        yield lock_key
    finally:
        with contextlib.suppress(redis.RedisError):
            if client.get(lock_key) == me:
                client.delete(lock_key)
        handle.close()


@dataclass
class Run:
    """What one coordinator holds while it runs."""

    settings: Settings
    prompts_file: Path
    run_dir: Path
    keys: RunKeys
    redis: RunRedis
    client: Redis  # the field `redis` hides the module in this class
    lock_key: str
    started: float
    on_tick: TickCallback | None
    total: int = 0
    # Records already on disk when this command started (a rerun resumes after them).
    done_before: int = 0
    totals: Drained = field(default_factory=Drained)
    worker_reports: list[dict[str, Any]] = field(default_factory=list)


def generate(settings: Settings, prompts_file: Path, *, on_tick: TickCallback | None = None) -> RunResult:
    """Run the teacher on every prompt of the file that has no record yet; resumable.

    `on_tick` gets the run's numbers when it starts and about once a second while it works (the
    CLI draws its live bar from them). The prompts file is
    checked before any service starts; a start that fails leaves no run folder behind (only one
    this call made, and only while it holds no record and no log worth reading).
    """
    if not Path(prompts_file).is_file():
        raise PromptsFileError(f"{prompts_file}: prompts file not found")
    # The tools a worker would build, built here first: a bad custom tool is one line, not a dead worker.
    core = check_tools(settings.workspace, settings.custom_tools, settings.limits)
    if settings.mcp_servers:
        # Each MCP server started once and stopped: one that can't start, or a taken name, is one line too.
        check_servers(settings.mcp_servers, taken=list(core.offered))
    run_dir = settings.run_dir()
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _generate(settings, prompts_file, run_dir, on_tick)
    except BaseException:
        if created and not _holds_results(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _holds_results(run_dir: Path) -> bool:
    """Records, or a log that says why the start failed; the embedded Redis's files are neither."""
    records = (run_dir / CONVERSATIONS_FILE, run_dir / DEAD_FILE)
    logs = run_log_dir(run_dir)
    return (any(path.is_file() and path.stat().st_size for path in records)
            or (logs.is_dir() and any(path.is_file() and path.stat().st_size for path in logs.rglob("*"))))


def _generate(settings: Settings, prompts_file: Path, run_dir: Path, on_tick: TickCallback | None) -> RunResult:
    keys = RunKeys(settings.run)
    started = time.monotonic()
    with launched_teachers(settings.teachers, run_log_dir(run_dir)), redis_for(settings, run_dir) as run_redis:
        plan = plan_teachers(settings)  # a missing key or an unusable policy fails before anything is queued
        if settings.samples > 1:
            plan.warnings += [f"--samples {settings.samples}: teacher {t.name!r} has no temperature set; a deterministic "
                              "endpoint gives the same answer to every sample" for t in plan.teachers if t.temperature is None]
        if settings.judge is not None:
            settings.judge.api_key()  # a missing key or rubric fails before anything is queued
            settings.judge.rubric()
        for warning in plan.warnings:
            log.warning("%s", warning)
        settings = settings.model_copy(update={"teachers": plan.teachers, "policy": plan.policy})
        client = _connect_checked(run_redis.url)
        try:
            with run_lock(client, keys, run_dir) as lock_key:
                run = Run(settings, prompts_file, run_dir, keys, run_redis, client, lock_key, started, on_tick)
                return _coordinate(run)
        except REDIS_DOWN as error:
            raise RedisLost(f"Redis at {redact_url(run_redis.url)} is unreachable ({error}); "
                            "nothing unwritten was acknowledged: run the same command again to resume") from None


class RedisLost(DistillError):
    """Redis went away for longer than the coordinator waits; the run is resumable."""


def _connect_checked(url: str) -> redis.Redis:
    client = connect(url)
    where = redact_url(url)
    try:
        client.ping()
    except redis.AuthenticationError:
        raise RunRefused(f"Redis at {where} refused the password in the URL") from None
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise RunRefused(f"cannot reach Redis at {where}: {str(error).splitlines()[0]}") from None
    except redis.ResponseError as error:
        raise RunRefused(f"Redis at {where} answered: {error}") from None
    return client


def _coordinate(run: Run) -> RunResult:
    settings, client, keys = run.settings, run.client, run.keys
    collector = Collector(client, keys, run.run_dir)
    collector.recover()
    check = check_prompts(client, keys, run.prompts_file, settings.limit, settings.secrets)
    if check.bad_count and not settings.skip_invalid:
        raise RunRefused(f"{run.prompts_file}: {check.bad_count} bad line(s); fix them or pass --skip-invalid", check)
    ensure_groups(client, keys)
    queued_now = enqueue_prompts(client, keys, run.prompts_file, settings.limit, samples=settings.samples,
                                 secret_rules=settings.secrets)
    orphans = requeue_orphans(client, keys)
    client.delete(keys.stop)
    run.total = tasks_total(client, keys)
    manifest = _write_manifest(settings, run.prompts_file, run.run_dir, run.total, check, run.redis.url)
    run.done_before = int(client.scard(keys.done))
    _tick(run, run.done_before)
    try:
        if run.done_before < run.total:
            with running_workers(settings, run.redis.url) as workers:
                _collect_until_done(run, collector, workers)
            run.worker_reports = workers.reports
    finally:
        collector.close()
    manifest.finished = int(client.scard(keys.done)) >= run.total
    manifest.updated_at = utcnow()
    write_atomic(run.run_dir / MANIFEST_FILE, manifest.model_dump_json(indent=2))
    counts = count_records(run.run_dir)
    final = snapshot(client, keys, run.total, counts, settings.teachers, finished=manifest.finished)
    write_progress_snapshot(run.run_dir, final)
    logs = run_log_dir(run.run_dir)
    return RunResult(
        run=settings.run,
        run_dir=run.run_dir,
        total=run.total,
        conversations=counts["conversations"],
        dead=counts["dead"],
        duplicates_dropped=run.totals.duplicates,
        queued_now=queued_now,
        requeued_orphans=orphans,
        elapsed_s=time.monotonic() - run.started,
        input_tokens=run.totals.input_tokens,
        output_tokens=run.totals.output_tokens,
        tool_calls=run.totals.tool_calls,
        check=check,
        endpoints=final["endpoints"],
        policy=settings.policy,
        tools=final["tools"],
        tool_processes=final["tool_processes"],
        worker_reports=run.worker_reports,
        passed=run.totals.passed,
        failed=run.totals.failed,
        unverified=run.totals.unverified,
        redactions=counts["redactions"],
        redacted=counts["redacted"],
        worker_logs=logs if logs.is_dir() else None,
    )


def _collect_until_done(run: Run, collector: Collector, workers: WorkerPool) -> None:
    last_shown = 0.0
    while True:
        try:
            run.totals.add(collector.drain(block_ms=200))
            done = int(run.client.scard(run.keys.done))
            if time.monotonic() - last_shown > 1.0 or done >= run.total:
                last_shown = time.monotonic()
                _show_progress(run, workers, done)
            if done >= run.total:
                run.client.set(run.keys.stop, "1")
                return
        except REDIS_DOWN:
            _wait_for_redis(run, collector)


def _show_progress(run: Run, workers: WorkerPool, done: int) -> None:
    """Once a second: keep the lock, replace lost workers, tell the caller, write progress.json."""
    run.client.expire(run.lock_key, LOCK_TTL_S)
    workers.check()
    current = snapshot(run.client, run.keys, run.total, None, run.settings.teachers, finished=False)
    _tick(run, done, current)
    write_progress_snapshot(run.run_dir, current)


def _tick(run: Run, done: int, current: dict[str, Any] | None = None) -> None:
    if run.on_tick is None:
        return
    current = current or {}
    run.on_tick(RunTick(run=run.settings.run, total=run.total, done=done, done_before=run.done_before,
                        elapsed_s=time.monotonic() - run.started, dead=int(current.get("dead", 0)),
                        in_flight=int(current.get("in_flight", 0)),
                        tokens=run.totals.input_tokens + run.totals.output_tokens,
                        endpoints=current.get("endpoints", {}), tools=current.get("tools", {})))


def _wait_for_redis(run: Run, collector: Collector) -> None:
    """Ride out a Redis outage: restart our embedded server if it died, else wait for it.

    When it is back, the done set is rebuilt from the files: whatever Redis lost in the crash
    (the last acks, the last done marks) is re-derived, so nothing is written twice.
    """
    log.warning("lost Redis at %s; waiting for it", redact_url(run.redis.url))
    for attempt in outlast_redis(run.settings.redis_outage_s, also=(OSError, RedisStartError)):
        with attempt:
            run.redis.revive()
            run.client.ping()
    log.warning("Redis is back; re-reading the output files")
    collector.recover()
    collector.restart_from_pending()


def _write_manifest(
    settings: Settings, prompts_file: Path, run_dir: Path, total: int, check: CheckReport, url: str
) -> RunManifest:
    path = run_dir / MANIFEST_FILE
    started_at = utcnow()
    if path.exists():
        with contextlib.suppress(ValueError):
            started_at = RunManifest.model_validate_json(path.read_text()).started_at
    manifest = RunManifest(
        run=settings.run,
        prompts_file=str(prompts_file),
        prompts_total=total,
        invalid_lines=check.bad_count,
        redis_url_redacted=redact_url(url) if settings.redis_url else None,
        embedded_redis=settings.redis_url is None,
        started_at=started_at,
        limits=settings.limits,
    )
    write_atomic(path, manifest.model_dump_json(indent=2))
    return manifest


