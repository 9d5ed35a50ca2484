"""`distill generate`: prompts file -> Redis -> Ray workers -> exactly one record per prompt.

The journey: check the file, queue what isn't done, start workers, drain results to disk while
showing progress, stop the workers once every prompt has ended, print a summary.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from rich.markup import escape

from coordinator.collector import Collector, Drained
from coordinator.enqueue import CheckReport, check_prompts, enqueue_prompts
from coordinator.progress import RunProgress, console, write_progress_snapshot
from coordinator.teachers import plan_teachers
from shared.keys import TASKS_GROUP, RunKeys, endpoint_leases_key
from shared.queue import ensure_groups, requeue_orphans
from shared.records import RunManifest, utcnow
from shared.redis_server import EmbeddedRedis, connect, redact_url
from shared.settings import Settings, TeacherConfig

MANIFEST_FILE = "manifest.json"
LOCK_TTL_S = 15


class RunRefused(Exception):
    """The run can't start (bad prompts, another coordinator); the message says why."""

    def __init__(self, message: str, bad_lines: CheckReport | None = None) -> None:
        super().__init__(message)
        self.report = bad_lines


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

    @property
    def complete(self) -> bool:
        return self.conversations + self.dead >= self.total


@contextlib.contextmanager
def redis_for(settings: Settings, run_dir: Path) -> Iterator[str]:
    """The run's Redis: the one given, or an embedded server whose data lives in the run folder."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = EmbeddedRedis(run_dir / "redis")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@contextlib.contextmanager
def launched_teachers(teachers: list[TeacherConfig], log_dir: Path) -> Iterator[list[Any]]:
    """Serve every `launch = true` teacher under a supervisor for the length of the run."""
    from worker.supervisor import ServeOptions, TeacherSupervisor

    supervisors = []
    try:
        for teacher in teachers:
            if teacher.launch:
                console.print(f"starting local teacher {teacher.name!r} ({teacher.model}) ...", highlight=False)
                options = ServeOptions(model=teacher.model, port=urlsplit(teacher.base_url).port,
                                       adapter_path=teacher.launch_adapter_path, extra_args=teacher.launch_args,
                                       log_dir=log_dir)
                supervisor = TeacherSupervisor(options)
                supervisor.start()
                supervisors.append(supervisor)
        yield supervisors
    finally:
        for supervisor in supervisors:
            supervisor.stop()


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
    lock_key = f"{keys.prefix}:lock"
    try:
        if not client.set(lock_key, me, nx=True, ex=LOCK_TTL_S):
            holder = str(client.get(lock_key) or "")
            host = holder.rpartition(":")[0]
            # Our own file lock proves a holder on this host is gone (killed before its TTL ran out).
            if host != socket.gethostname():
                raise RunRefused(f"run {keys.run!r} is already being coordinated by {holder}; wait for it or stop it")
            client.set(lock_key, me, ex=LOCK_TTL_S)
        yield lock_key
    finally:
        if client.get(lock_key) == me:
            client.delete(lock_key)
        handle.close()


def generate(settings: Settings, prompts_file: Path, *, show_progress: bool = True) -> RunResult:
    run_dir = settings.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    keys = RunKeys(settings.run)
    started = time.monotonic()
    with launched_teachers(settings.teachers, run_dir / "logs"), redis_for(settings, run_dir) as url:
        plan = plan_teachers(settings)  # a missing key or an unusable policy fails before anything is queued
        for warning in plan.warnings:
            console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
        settings = settings.model_copy(update={"teachers": plan.teachers, "policy": plan.policy})
        client = connect(url)
        with run_lock(client, keys, run_dir) as lock_key:
            return _coordinate(settings, prompts_file, run_dir, keys, client, url, lock_key, started, show_progress)


def _coordinate(
    settings: Settings,
    prompts_file: Path,
    run_dir: Path,
    keys: RunKeys,
    client: redis.Redis,
    url: str,
    lock_key: str,
    started: float,
    show_progress: bool,
) -> RunResult:
    collector = Collector(client, keys, run_dir)
    collector.recover()
    check = check_prompts(client, keys, prompts_file, settings.limit)
    if check.bad_count and not settings.skip_invalid:
        raise RunRefused(
            f"{prompts_file}: {check.bad_count} bad line(s); fix them or pass --skip-invalid", check
        )
    ensure_groups(client, keys)
    queued_now = enqueue_prompts(client, keys, prompts_file, settings.limit)
    orphans = requeue_orphans(client, keys)
    client.delete(keys.stop)
    total = int(client.hlen(keys.prompt_digests))
    manifest = _write_manifest(settings, prompts_file, run_dir, total, check, url)
    totals = Drained()
    progress = RunProgress(settings.run, total, enabled=show_progress)
    progress.start(already=int(client.scard(keys.done)))
    try:
        if int(client.scard(keys.done)) < total:
            with _workers(settings, url) as workers:
                _collect_until_done(
                    client, keys, collector, workers, progress, totals, total, lock_key, run_dir, settings.teachers
                )
    finally:
        progress.stop()
        collector.close()
    manifest.finished = int(client.scard(keys.done)) >= total
    manifest.updated_at = utcnow()
    (run_dir / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    counts = count_records(run_dir)
    final = _snapshot(client, keys, total, counts, settings.teachers, finished=manifest.finished)
    write_progress_snapshot(run_dir, final)
    return RunResult(
        run=settings.run,
        run_dir=run_dir,
        total=total,
        conversations=counts["conversations"],
        dead=counts["dead"],
        duplicates_dropped=totals.duplicates,
        queued_now=queued_now,
        requeued_orphans=orphans,
        elapsed_s=time.monotonic() - started,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        tool_calls=totals.tool_calls,
        check=check,
        endpoints=final["endpoints"],
        policy=settings.policy,
    )


def _collect_until_done(
    client: redis.Redis,
    keys: RunKeys,
    collector: Collector,
    workers: "WorkerPool",
    progress: RunProgress,
    totals: Drained,
    total: int,
    lock_key: str,
    run_dir: Path,
    teachers: list[TeacherConfig],
) -> None:
    last_snapshot = 0.0
    while True:
        drained = collector.drain(block_ms=200)
        for name in ("conversations", "dead", "duplicates", "input_tokens", "output_tokens", "tool_calls"):
            setattr(totals, name, getattr(totals, name) + getattr(drained, name))
        done = int(client.scard(keys.done))
        now = time.monotonic()
        if now - last_snapshot > 1.0:
            last_snapshot = now
            client.expire(lock_key, LOCK_TTL_S)
            workers.check()
            snapshot = _snapshot(client, keys, total, None, teachers, finished=False)
            progress.update(done=done, dead=snapshot["dead"], in_flight=snapshot["in_flight"],
                            tokens=totals.input_tokens + totals.output_tokens, endpoints=snapshot["endpoints"])
            write_progress_snapshot(run_dir, snapshot)
        if done >= total:
            progress.update(done=done, dead=totals.dead, in_flight=0, tokens=totals.input_tokens + totals.output_tokens)
            client.set(keys.stop, "1")
            return


def endpoint_stats(client: redis.Redis, keys: RunKeys, teachers: list[TeacherConfig]) -> dict[str, dict[str, Any]]:
    """Per-endpoint numbers: requests, in flight, errors, tokens, mean latency, estimated cost."""
    stats: dict[str, dict[str, Any]] = {}
    for teacher in teachers:
        raw = client.hgetall(keys.endpoint_stats(teacher.name))
        requests = int(raw.get("requests", 0))
        tokens_in, tokens_out = int(raw.get("input_tokens", 0)), int(raw.get("output_tokens", 0))
        cost = None
        if teacher.price_in_per_mtok is not None or teacher.price_out_per_mtok is not None:
            cost = (tokens_in * (teacher.price_in_per_mtok or 0) + tokens_out * (teacher.price_out_per_mtok or 0)) / 1e6
        stats[teacher.name] = {
            "kind": teacher.kind,
            "conversations": int(raw.get("conversations", 0)),
            "requests": requests,
            "in_flight": int(client.zcount(endpoint_leases_key(teacher.base_url, teacher.model), time.time(), "+inf")),
            "errors": int(raw.get("errors", 0)),
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "mean_latency_s": round(float(raw.get("teacher_s", 0.0)) / requests, 4) if requests else None,
            "cost_usd": round(cost, 6) if cost is not None else None,
        }
    return stats


def _snapshot(
    client: redis.Redis,
    keys: RunKeys,
    total: int,
    counts: dict[str, int] | None,
    teachers: list[TeacherConfig],
    *,
    finished: bool,
) -> dict[str, Any]:
    pending = client.xpending(keys.tasks, TASKS_GROUP)["pending"] if client.exists(keys.tasks) else 0
    done = int(client.scard(keys.done))
    dead = int(client.xlen(keys.dead)) if counts is None else counts["dead"]
    return {
        "run": keys.run,
        "total": total,
        "done": done if counts is None else counts["conversations"] + counts["dead"],
        "dead": dead,
        "in_flight": int(pending),
        "queued": int(client.xlen(keys.tasks)) - int(pending) if client.exists(keys.tasks) else 0,
        "retries": int(client.hget(keys.stats, "retries") or 0),
        "endpoints": endpoint_stats(client, keys, teachers),
        "coordinator_pid": os.getpid(),
        "coordinator_host": socket.gethostname(),
        "finished": finished,
        "updated_at": utcnow().isoformat(),
    }


def count_records(run_dir: Path) -> dict[str, int]:
    from coordinator.collector import CONVERSATIONS_FILE, DEAD_FILE

    def lines(path: Path) -> int:
        if not path.exists():
            return 0
        with path.open("rb") as handle:
            return sum(1 for raw in handle if raw.strip())

    return {"conversations": lines(run_dir / CONVERSATIONS_FILE), "dead": lines(run_dir / DEAD_FILE)}


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
    )
    path.write_text(manifest.model_dump_json(indent=2))
    return manifest


class WorkerPool:
    """The run's Ray actors; an actor Ray could not bring back is replaced."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        from worker.actor import GenerationWorker, WorkerSpec

        self._actor_class = GenerationWorker
        per_worker = max(1, -(-settings.concurrency // settings.workers))
        self.spec_json = WorkerSpec(
            run=settings.run,
            redis_url=redis_url,
            workspace=str(settings.workspace.resolve()),
            teachers=settings.teachers,
            policy=settings.policy,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
            limits=settings.limits,
            system_prompt=settings.system_prompt,
            custom_tools=settings.custom_tools,
            slots=per_worker,
            max_attempts=settings.max_attempts,
            visibility_timeout_s=settings.visibility_timeout_s,
            retry_backoff_s=settings.retry_backoff_s,
        ).model_dump_json()
        self.run = settings.run
        # Keys travel to the workers' environment only (never in the spec, records or logs).
        self.env_vars = {t.api_key_env: t.api_key() for t in settings.teachers if t.api_key_env}
        self.actors: list[Any] = []
        self.refs: list[Any] = []
        for index in range(settings.workers):
            self._launch(index)

    def _launch(self, index: int) -> None:
        # SPREAD puts the workers on different nodes of a cluster, next to their local teachers.
        options: dict[str, Any] = {"name": f"{self.run}-worker-{index}", "scheduling_strategy": "SPREAD"}
        if self.env_vars:
            options["runtime_env"] = {"env_vars": self.env_vars}
        actor = self._actor_class.options(**options).remote(self.spec_json, f"worker-{index}")
        ref = actor.run.remote()
        if index < len(self.actors):
            self.actors[index], self.refs[index] = actor, ref
        else:
            self.actors.append(actor)
            self.refs.append(ref)

    def check(self) -> None:
        import ray

        ready, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        for ref in ready:
            index = self.refs.index(ref)
            try:
                ray.get(ref)
            except Exception:  # noqa: BLE001 - the actor is gone for good: start another
                self._launch(index)

    def stop(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        import ray

        reports = []
        ready, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=timeout_s)
        for ref in ready:
            with contextlib.suppress(Exception):
                reports.append(ray.get(ref))
        for actor in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
        return reports


@contextlib.contextmanager
def _workers(settings: Settings, redis_url: str) -> Iterator[WorkerPool]:
    import ray

    started_ray = False
    if not ray.is_initialized():
        ray.init(
            address=settings.ray_address,
            namespace="distill",
            include_dashboard=False,
            logging_level="ERROR",
            log_to_driver=False,
            configure_logging=True,
        )
        started_ray = True
    pool = WorkerPool(settings, redis_url)
    try:
        yield pool
    finally:
        pool.stop()
        if started_ray:
            ray.shutdown()
