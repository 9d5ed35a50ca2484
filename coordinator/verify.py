"""`distill verify`: judge a finished run's conversations after the fact, into RUN/verdicts.jsonl.

conversations.jsonl is never rewritten: each verdict is appended to verdicts.jsonl (flushed and
fsynced line by line), and readers take the last verdict a (task, sample) has there over the
record's own. A reference verdict is never overruled by the judge; a record the judge already
decided is skipped unless `rejudge`, so an interrupted verify resumes where it stopped.

The judge's requests hold leases on its endpoint like a teacher's (worker/pool.py). Given the
Redis of a live run, they share that run's caps; otherwise a private embedded Redis holds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis
from pydantic import ValidationError

from distill.coordinator.collector import CONVERSATIONS_FILE
from distill.coordinator.redis_server import embedded_redis
from distill.shared.connection import connect_async
from distill.shared.errors import DistillError, LineError, line_error
from distill.shared.jsonl import DurableAppender, iter_jsonl
from distill.shared.records import Conversation, utcnow
from distill.shared.settings import JudgeConfig
from distill.shared.verdicts import VERDICTS_FILE, Verdict, VerdictRecord, latest_verdicts
from distill.worker.judge import Judge, JudgeUnavailable
from distill.worker.pool import EndpointPool

logger = logging.getLogger(__name__)

# A judge that keeps failing a conversation: give up on it after this many tries (it stays open).
MAX_TRIES = 3


class VerifyError(DistillError):
    """The run can't be verified (no conversations, a bad line)."""


@dataclass
class VerifyResult:
    run_dir: Path
    verdicts_file: Path
    records: int = 0
    judged: int = 0
    passed: int = 0
    failed: int = 0
    # Judged but left open (the judge failed or gave no valid verdict).
    unverified: int = 0
    skipped_reference: int = 0
    skipped_judged: int = 0
    details: list[str] = field(default_factory=list)


def conversations_to_judge(run_dir: Path, result: VerifyResult, *, rejudge: bool) -> Iterator[Conversation]:
    """The run's records that need the judge: no reference verdict, and not judged yet (unless rejudge)."""
    path = run_dir / CONVERSATIONS_FILE
    if not path.is_file():
        raise VerifyError(f"{run_dir}: no {CONVERSATIONS_FILE} in this run folder")
    later = latest_verdicts(run_dir / VERDICTS_FILE)
    for number, item in iter_jsonl(path):
        if isinstance(item, LineError):
            raise VerifyError(str(item))
        try:
            conversation = Conversation.model_validate(item)
        except ValidationError as error:
            raise VerifyError(str(line_error(str(path), number, error))) from None
        result.records += 1
        filed = later.get((conversation.task_id, conversation.sample))
        verdict = filed or conversation.verdict
        if verdict.method == "reference":
            result.skipped_reference += 1
        elif not rejudge and (verdict.method == "judge" or (filed is not None and filed.passed is not None)):
            # Decided already: by the judge, or failed for want of a final answer (one recorded
            # verdict, so a second verify has nothing left to do). Open ones are tried again.
            result.skipped_judged += 1
        else:
            yield conversation


@contextlib.asynccontextmanager
async def lease_redis(redis_url: str | None) -> AsyncIterator[aioredis.Redis]:
    """The Redis that holds the judge's leases: the one given, or a private embedded one."""
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="distill-verify-"))
            redis_url = stack.enter_context(embedded_redis(Path(scratch))).url
        client = connect_async(redis_url)
        try:
            yield client
        finally:
            await client.aclose()


def verify_run(
    run_dir: Path,
    judge: JudgeConfig,
    *,
    redis_url: str | None = None,
    rejudge: bool = False,
    concurrency: int | None = None,
    on_verdict: Callable[[VerifyResult], None] | None = None,
) -> VerifyResult:
    """Judge every conversation of the run that needs it; append the verdicts; return the counts."""
    run_dir = Path(run_dir)
    result = VerifyResult(run_dir=run_dir, verdicts_file=run_dir / VERDICTS_FILE)
    rubric = judge.rubric()
    judge.api_key()  # a missing key fails here, before any work
    asyncio.run(_verify(run_dir, judge, rubric, redis_url, rejudge, concurrency or judge.max_concurrency,
                        result, on_verdict))
    return result


async def _verify(
    run_dir: Path,
    config: JudgeConfig,
    rubric: str | None,
    redis_url: str | None,
    rejudge: bool,
    concurrency: int,
    result: VerifyResult,
    on_verdict: Callable[[VerifyResult], None] | None,
) -> None:
    judge = Judge(config, rubric)
    # Each verdict on disk before the next: a crash loses at most the line in flight.
    writer = DurableAppender(result.verdicts_file)
    try:
        async with lease_redis(redis_url) as client:
            pool = EndpointPool([config], client, "spread")
            running: set[asyncio.Task[None]] = set()
            for conversation in conversations_to_judge(run_dir, result, rejudge=rejudge):
                if len(running) >= concurrency:
                    finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in finished:
                        task.result()  # an unexpected error stops the verify here
                running.add(asyncio.create_task(_judge_one(conversation, judge, pool, writer, result, on_verdict)))
            for pending in asyncio.as_completed(running):
                await pending
    finally:
        writer.close()
        await judge.aclose()


async def _judge_one(
    conversation: Conversation,
    judge: Judge,
    pool: EndpointPool,
    writer: DurableAppender,
    result: VerifyResult,
    on_verdict: Callable[[VerifyResult], None] | None,
) -> None:
    verdict = Verdict(detail="judge unavailable")
    for attempt in range(1, MAX_TRIES + 1):
        async with pool.seat() as seat:
            try:
                verdict = await judge.verdict(conversation, slot=seat.request)
            except JudgeUnavailable as failure:
                pool.record_failure(seat, failure.retry_after_s)
                verdict = Verdict(detail=f"judge unavailable after {attempt} tries: {failure.reason}"[:500])
                logger.warning("judge failed on %s (try %d): %s", conversation.key, attempt, failure.reason)
                continue
            pool.record_success(seat)
            break
    record = VerdictRecord(task_id=conversation.task_id, sample=conversation.sample, run=conversation.run,
                           verdict=verdict, judge_model=judge.config.model, created_at=utcnow())
    writer.append([record.model_dump_json()])
    result.judged += 1
    if verdict.passed is None:
        result.unverified += 1
        result.details.append(f"{conversation.key}: {verdict.detail}")
    elif verdict.passed:
        result.passed += 1
    else:
        result.failed += 1
    if on_verdict is not None:
        on_verdict(result)
