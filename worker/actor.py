"""The generation worker: an async Ray actor running many conversations at once.

The contract, in one place:
- A task is read from the tasks stream (consumer group) or reclaimed with XAUTOCLAIM once its
  holder has been silent for `visibility_timeout_s` (a dead worker). Live workers heartbeat their
  tasks, so a long conversation is never stolen.
- Every start of a task counts one attempt (a Redis counter, so attempts survive worker deaths).
- Success: the record is published to the results stream and the task acknowledged in one
  transaction. Nothing is written to disk here; the coordinator does that, exactly once.
- A retryable failure (endpoint down, timeout, 5xx, 429): back off, then put the task back as a
  fresh stream entry (acknowledging the old one in the same transaction).
- A non-retryable failure, or a task that has used `max_attempts`: a dead letter with the reason.
- The coordinator sets the run's stop key when every prompt has ended; workers then return.
- Redis away: the worker waits for it (distill.shared.retry); its tasks stay pending meanwhile.
- Every failure is logged; a worker started by the coordinator logs to RUN_DIR/logs/<actor>.log.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, cast

import ray
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict

from distill.shared.connection import connect_async, redact_url
from distill.shared.keys import DATA_FIELD, TASKS_GROUP, RunKeys, tool_calls_field, tool_time_field
from distill.shared.mcp_config import McpServerConfig, McpSetupError
from distill.shared.queue import add_ack, add_publish, add_requeue
from distill.shared.records import Conversation, DeadLetter, PromptTask, TeacherInfo, WorkerInfo
from distill.shared.retry import REDIS_DOWN, outlast_redis_async
from distill.shared.secrets import SecretsConfig
from distill.shared.settings import GenerationLimits, JudgeConfig, Policy, TeacherConfig
from distill.shared.verdicts import Verdict
from distill.worker.agent import ConversationFailed, Conversations
from distill.worker.judge import Judge, JudgeUnavailable
from distill.worker.pool import EndpointPool, Seat
from distill.worker.toolcore import ToolCore

log = logging.getLogger(__name__)

PUBLISH_PATIENCE_S = 300.0
# How often the loop looks for the stop key and for dead workers' tasks. Doing both on every refill
# cost two Redis round trips per conversation; neither needs to be quicker than this.
HOUSEKEEPING_S = 0.5


class WorkerSpec(BaseModel):
    """Everything a worker needs, sent by the coordinator. Holds no API key, only env var names."""

    model_config = ConfigDict(extra="forbid")

    run: str
    redis_url: str
    workspace: str
    teachers: list[TeacherConfig]
    policy: Policy = "local-first"
    breaker_failures: int = 3
    breaker_cooldown_s: float = 10.0
    limits: GenerationLimits
    system_prompt: str
    custom_tools: list[str] = []
    # Started by each worker for its life (their `${VAR}` values read from the worker's environment).
    mcp_servers: list[McpServerConfig] = []
    slots: int = 8
    max_attempts: int = 3
    visibility_timeout_s: float = 120.0
    retry_backoff_s: float = 1.0
    read_block_ms: int = 500
    # Judges the conversations that have no reference answer (the `[judge]` table).
    judge: JudgeConfig | None = None
    judge_rubric: str | None = None
    # Where the worker's log file goes (the run folder's logs/, at the same path on every node).
    log_dir: str | None = None
    # The run's `[secrets]` rules: the tools redact by them (shared/secrets.py).
    secrets: SecretsConfig = SecretsConfig()


class WorkerReport(BaseModel):
    actor: str
    node: str
    finished: int = 0
    retried: int = 0
    dead: int = 0
    # CPU seconds this worker process spent on the run (the benchmark's overhead figure).
    cpu_s: float = 0.0
    # Its tool processes, and the CPU seconds they spent (tools run apart from the agent loop).
    tool_processes: int = 0
    tool_cpu_s: float = 0.0


class GenerationLoop:
    """The worker's logic, independent of Ray so it can also run in-process."""

    def __init__(self, spec: WorkerSpec, actor_name: str, ray_node_id: str | None = None) -> None:
        self.spec = spec
        self.keys = RunKeys(spec.run)
        self.info = WorkerInfo(node=socket.gethostname(), actor=actor_name, pid=os.getpid(), ray_node_id=ray_node_id)
        self.consumer = f"{actor_name}-{self.info.node}-{self.info.pid}"
        self.report = WorkerReport(actor=actor_name, node=self.info.node)
        self.redis: aioredis.Redis | None = None
        self.pool: EndpointPool | None = None
        self.judge = Judge(spec.judge, spec.judge_rubric) if spec.judge else None
        self.judge_pool: EndpointPool | None = None
        self.in_flight: dict[str, asyncio.Task[None]] = {}
        self.slot_freed = asyncio.Event()
        self.stopping = False
        self.next_housekeeping = 0.0
        # Tools, agents and one client per teacher (its connection pool) live as long as the worker.
        self.conversations = Conversations(ToolCore(spec.workspace, spec.custom_tools, spec.limits, secrets=spec.secrets),
                                           system_prompt=spec.system_prompt, worker=self.info)

    async def run(self) -> WorkerReport:
        cpu_started = time.process_time()
        self.redis = connect_async(
            self.spec.redis_url,
            max_connections=self.spec.slots + 8,
            socket_timeout=max(30.0, self.spec.read_block_ms / 1000 + 10),
        )
        self.pool = EndpointPool(
            self.spec.teachers,
            self.redis,
            self.spec.policy,
            breaker_failures=self.spec.breaker_failures,
            breaker_cooldown_s=self.spec.breaker_cooldown_s,
        )
        if self.spec.judge is not None:
            # The judge's requests take leases like a teacher's: one cap per endpoint, over every worker.
            self.judge_pool = EndpointPool([self.spec.judge], self.redis, "spread",
                                           breaker_failures=self.spec.breaker_failures,
                                           breaker_cooldown_s=self.spec.breaker_cooldown_s)
        if self.spec.mcp_servers:
            try:
                await self.conversations.start_mcp(self.spec.mcp_servers, worker=self.info.actor,
                                                   log_dir=Path(self.spec.log_dir) if self.spec.log_dir else None)
            except McpSetupError as error:
                # The run's preflight started them on the coordinator's node; this node can't.
                log.error("%s; this worker stops (its tasks stay queued for a worker that can)", error)
                await self.conversations.aclose()
                await self.redis.aclose()
                raise
        tools = self.conversations.tool_pool
        self.report.tool_processes = tools.processes
        await self.redis.hset(self.keys.tool_processes, self.consumer, tools.processes)
        await tools.warm()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            await self._loop()
        finally:
            heartbeat.cancel()
            self.report.tool_cpu_s = tools.cpu_seconds()
            await self.conversations.aclose()
            if self.judge is not None:
                await self.judge.aclose()
            await self.redis.aclose()
        self.report.cpu_s = time.process_time() - cpu_started
        return self.report

    async def _loop(self) -> None:
        while True:
            try:
                if await self._step():
                    return
            except REDIS_DOWN as error:
                await self._wait_for_redis(error)

    async def _wait_for_redis(self, error: BaseException) -> None:
        """Redis restarting: our tasks stay pending there and nothing is lost; wait as long as it takes."""
        assert self.redis is not None
        log.warning("lost Redis (%s); waiting for it", _describe(error))
        async for attempt in outlast_redis_async(None, log):
            with attempt:
                await self.redis.ping()
        log.warning("Redis is back")

    async def _step(self) -> bool:
        """One turn of the loop: start what there is room for. True when the run is over."""
        assert self.redis is not None
        now = time.monotonic()
        housekeeping = now >= self.next_housekeeping
        if housekeeping:
            self.next_housekeeping = now + HOUSEKEEPING_S
            self.stopping = bool(await self.redis.exists(self.keys.stop))
            if self.conversations.tool_pool.executions:
                # Numbers of calls still in conversations (an infra error shows before they end).
                pipe = self.redis.pipeline(transaction=False)
                self._count_tool_calls(pipe)
                await pipe.execute()
        if self.stopping and not self.in_flight:
            return True
        free = self.spec.slots - len(self.in_flight)
        if free <= 0 or self.stopping:
            await asyncio.wait(list(self.in_flight.values()), timeout=HOUSEKEEPING_S,
                               return_when=asyncio.FIRST_COMPLETED)
            return False
        entries = await self._next_entries(free, reclaim=housekeeping)
        for entry_id, fields in entries:
            task = asyncio.create_task(self._handle(entry_id, fields))
            self.in_flight[entry_id] = task
            task.add_done_callback(functools.partial(self._slot_done, entry_id))
        if not entries and self.in_flight:
            # Queue empty for now: wake when a slot frees up or new work may have arrived.
            self.slot_freed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.slot_freed.wait(), timeout=0.2)
        return False

    def _slot_done(self, entry_id: str, _task: object = None) -> None:
        self.in_flight.pop(entry_id, None)
        self.slot_freed.set()

    async def _next_entries(self, count: int, *, reclaim: bool) -> list[tuple[str, dict[str, str]]]:
        assert self.redis is not None
        if reclaim:
            idle_ms = int(self.spec.visibility_timeout_s * 1000)
            _next, claimed, _deleted = await self.redis.xautoclaim(
                self.keys.tasks, TASKS_GROUP, self.consumer, idle_ms, "0-0", count=count
            )
            if claimed:
                return [(entry_id, fields) for entry_id, fields in claimed if fields] or []
        # Idle: block on the stream. Busy: don't block, a finishing conversation must refill at once.
        block = self.spec.read_block_ms if not self.in_flight else None
        response: Any = await self.redis.xreadgroup(
            TASKS_GROUP, self.consumer, {self.keys.tasks: ">"}, count=count, block=block
        )
        return response[0][1] if response else []

    async def _heartbeat(self) -> None:
        """Reset the idle time of our tasks so no other worker reclaims a live conversation."""
        assert self.redis is not None
        interval = max(0.2, self.spec.visibility_timeout_s / 3)
        while True:
            await asyncio.sleep(interval)
            if self.in_flight:
                try:
                    await self.redis.xclaim(
                        self.keys.tasks, TASKS_GROUP, self.consumer, 0, list(self.in_flight), justid=True
                    )
                except Exception as error:  # noqa: BLE001 - a missed beat only risks a duplicate, never a loss
                    log.warning("heartbeat for %d task(s) missed: %s", len(self.in_flight), _describe(error))

    async def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        try:
            await self._run_task(entry_id, fields)
        except REDIS_DOWN as error:
            log.warning("task entry %s: Redis went away (%s); it stays pending and is redone",
                        entry_id, _describe(error))
        except Exception:  # logged here, or the event loop drops it silently
            log.exception("task entry %s: unexpected failure; it stays pending and is redone", entry_id)

    async def _run_task(self, entry_id: str, fields: dict[str, str]) -> None:
        assert self.redis is not None
        task = PromptTask.model_validate_json(fields[DATA_FIELD])
        # One round trip: is it done already, count this attempt, where did it fail last.
        pipe = self.redis.pipeline(transaction=False)
        pipe.sismember(self.keys.done, task.key)
        pipe.hincrby(self.keys.attempts, task.key, 1)
        pipe.hget(self.keys.last_endpoint, task.key)
        done, attempt, last_endpoint = await pipe.execute()
        if done:
            await self._ack(entry_id)
            return
        attempt = int(attempt)
        if attempt > self.spec.max_attempts:
            last = cast("str | None", await self.redis.hget(self.keys.last_error, task.key))
            reason = last or "the worker running it died (no error was recorded)"
            await self._publish_dead(entry_id, task, f"gave up after {self.spec.max_attempts} attempts: {reason}",
                                     "AttemptsExhausted", attempt - 1, [])
            return
        assert self.pool is not None
        # A retry avoids the endpoint that failed this task last, when another one is usable.
        avoid = {last_endpoint or ""}
        record: Conversation | None = None
        error: ConversationFailed | None = None
        async with self.pool.seat(avoid=avoid) as seat:
            teacher = seat.teacher
            try:
                record = await self.conversations.run(task, teacher, attempt=attempt, slot=seat.request)
            except ConversationFailed as failure:
                error = failure
            except Exception as failure:  # one bad prompt must never kill the worker
                log.warning("task %s: unexpected %s on %s", task.task_id, type(failure).__name__, teacher.name,
                            exc_info=True)
                error = ConversationFailed(
                    f"{type(failure).__name__}: {failure}", retryable=True, error_type=type(failure).__name__, partial=[]
                )
            await self._account(seat, record, error)
        if record is None:
            assert error is not None
            await self._failed(entry_id, task, attempt, teacher, error)
            return
        if self.judge is not None and record.verdict.passed is None and record.status == "final_answer":
            record.verdict = await self._judged(record)
        await self._publish(entry_id, record)
        self.report.finished += 1

    async def _judged(self, record: Conversation) -> Verdict:
        """The judge's verdict, or an open one saying why there is none: a judge that fails never
        costs the conversation (`distill verify` can judge it later)."""
        assert self.judge is not None and self.judge_pool is not None
        async with self.judge_pool.seat() as seat:
            try:
                verdict = await self.judge.verdict(record, slot=seat.request)
            except JudgeUnavailable as failure:
                log.warning("task %s: judge unavailable (%s); the record goes out unjudged", record.task_id,
                            failure.reason)
                self.judge_pool.record_failure(seat, failure.retry_after_s)
                return Verdict(detail=f"judge unavailable: {failure.reason}"[:500])
            self.judge_pool.record_success(seat)
        return verdict

    async def _account(self, seat: Seat, record: Conversation | None, error: ConversationFailed | None) -> None:
        """Per-endpoint numbers for progress, summary and status; the breaker learns the outcome."""
        assert self.redis is not None and self.pool is not None
        name = seat.teacher.name
        pipe = self.redis.pipeline(transaction=False)
        self._count_tool_calls(pipe)
        stats = self.keys.endpoint_stats(name)
        if record is not None:
            self.pool.record_success(seat)
            pipe.hincrby(stats, "conversations", 1)
            pipe.hincrby(stats, "requests", record.usage.requests)
            pipe.hincrby(stats, "input_tokens", record.usage.input_tokens)
            pipe.hincrby(stats, "output_tokens", record.usage.output_tokens)
            pipe.hincrbyfloat(stats, "teacher_s", record.timings.teacher_s)
        elif error is not None:
            if error.retryable and error.teacher_fault:
                self.pool.record_failure(seat, error.retry_after_s)
            pipe.hincrby(stats, "errors", 1)
            pipe.hincrby(stats, "requests", max(1, error.requests))
        await pipe.execute()

    def _count_tool_calls(self, pipe: Any) -> None:
        """Every tool execution since the last count: by tool and outcome, and its time."""
        for run in self.conversations.tool_pool.drain():
            pipe.hincrby(self.keys.tool_calls, tool_calls_field(run.tool, run.outcome), 1)
            pipe.hincrby(self.keys.tool_times, tool_time_field(run.tool, run.seconds), 1)

    async def _failed(
        self, entry_id: str, task: PromptTask, attempt: int, teacher: TeacherConfig, failure: ConversationFailed
    ) -> None:
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(self.keys.last_error, task.key, failure.reason)
        pipe.hset(self.keys.last_endpoint, task.key, teacher.name)
        await pipe.execute()
        if failure.retryable and attempt < self.spec.max_attempts:
            backoff = max(self.spec.retry_backoff_s * 2 ** (attempt - 1), failure.retry_after_s or 0.0)
            log.warning("task %s: attempt %d on %s failed (%s); retrying in %.1f s",
                        task.task_id, attempt, teacher.name, failure.reason, backoff)
            await asyncio.sleep(backoff)
            pipe = self.redis.pipeline(transaction=True)
            add_requeue(pipe, self.keys, entry_id, task.model_dump_json())
            pipe.hincrby(self.keys.stats, "retries", 1)
            await pipe.execute()
            self.report.retried += 1
            return
        reason = failure.reason if not failure.retryable else (
            f"gave up after {attempt} attempts: {failure.reason}"
        )
        log.warning("task %s: dead letter after attempt %d on %s: %s", task.task_id, attempt, teacher.name, reason)
        info = TeacherInfo(endpoint=teacher.name, base_url=redact_url(teacher.base_url), model=teacher.model)
        await self._publish_dead(entry_id, task, reason, failure.error_type, attempt, failure.partial, info)

    async def _publish_dead(
        self,
        entry_id: str,
        task: PromptTask,
        reason: str,
        error_type: str,
        attempts: int,
        partial: list[dict[str, Any]],
        teacher: TeacherInfo | None = None,
    ) -> None:
        dead = DeadLetter(
            task_id=task.task_id,
            sample=task.sample,
            run=task.run,
            prompt=task.prompt,
            reason=reason,
            error_type=error_type,
            attempts=attempts,
            partial_messages=json.loads(json.dumps(partial, default=str)),
            teacher=teacher,
            worker=self.info,
            metadata=task.metadata,
        )
        await self._publish(entry_id, dead)
        self.report.dead += 1

    async def _publish(self, entry_id: str, record: Conversation | DeadLetter) -> None:
        """Result and ack in one transaction; a finished conversation outlives a Redis restart.

        After PUBLISH_PATIENCE_S the error is raised: the task stays pending and is redone, late, never lost.
        """
        assert self.redis is not None
        async for attempt in outlast_redis_async(PUBLISH_PATIENCE_S, log):
            with attempt:
                pipe = self.redis.pipeline(transaction=True)
                add_publish(pipe, self.keys, entry_id, record)
                await pipe.execute()

    async def _ack(self, entry_id: str) -> None:
        assert self.redis is not None
        pipe = self.redis.pipeline(transaction=True)
        add_ack(pipe, self.keys, entry_id)
        await pipe.execute()


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def log_to_file(log_dir: Path, actor_name: str) -> Path | None:
    """Send this process's distill log lines to LOG_DIR/<actor>.log (appended across restarts).

    Ray keeps a worker's output in its own session folder, out of the user's sight; the run folder
    is where a user looks. Returns the file, or None when the folder can't be written here.
    """
    path = log_dir / f"{actor_name}.log"
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError as error:
        log.warning("cannot write the worker log %s (%s); logging to Ray's worker log only", path, error)
        return None
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {actor_name} pid %(process)d %(name)s: %(message)s")
    )
    package = logging.getLogger("distill")
    for old in [h for h in package.handlers if getattr(h, "distill_worker_log", False)]:
        package.removeHandler(old)
        old.close()
    handler.distill_worker_log = True  # type: ignore[attr-defined]
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    return path


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class GenerationWorker:
    """Ray's shell around GenerationLoop: restarted by Ray when it dies, its tasks reclaimed."""

    def __init__(self, spec_json: str, actor_name: str, secrets: dict[str, str] | None = None) -> None:
        # API keys arrive as an argument (kept out of the spec, runtime_env and logs) and are
        # read back from the environment by TeacherConfig.api_key(), as on the coordinator.
        os.environ.update(secrets or {})
        self.spec = WorkerSpec.model_validate_json(spec_json)
        self.actor_name = actor_name
        if self.spec.log_dir:
            log_to_file(Path(self.spec.log_dir), actor_name)
        log.info("worker %s started on %s (pid %d) for run %s", actor_name, socket.gethostname(), os.getpid(),
                 self.spec.run)

    async def run(self) -> dict[str, Any]:
        node_id = ray.get_runtime_context().get_node_id()
        report = await GenerationLoop(self.spec, self.actor_name, node_id).run()
        return report.model_dump()

    def where(self) -> dict[str, Any]:
        return {"node": socket.gethostname(), "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}
