"""Prompts file -> tasks stream, in two streamed passes: check every line, then enqueue.

Memory stays flat in the number of prompts: ids and digests live in Redis, not in this process.
Enqueueing is idempotent: a prompt whose id is known (queued, or already written to disk) is not
queued again, so re-running the same command resumes instead of starting over.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

from distill.shared.keys import DATA_FIELD, RunKeys
from distill.shared.prompts import BadLine, read_prompts
from distill.shared.records import PromptTask
from distill.shared.secrets import SecretsConfig

BATCH = 500
MAX_BAD_LINES_KEPT = 1_000

# KEYS: scratch hash for this check, the run's digests; ARGV: id, digest, line.
# Returns "ok", "same:<first line>" (an identical repeat), "dup:<first line>", or "changed".
CHECK_SCRIPT = """
local first = redis.call('HGET', KEYS[1], ARGV[1])
if first then
  local digest, line = string.match(first, '^(.-):(%d+)$')
  if digest == ARGV[2] then return 'same:' .. line end
  return 'dup:' .. line
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ':' .. ARGV[3])
local known = redis.call('HGET', KEYS[2], ARGV[1])
if known and known ~= ARGV[2] then return 'changed' end
return 'ok'
"""

# KEYS: digests, done, tasks, enqueued; ARGV: id, digest, then a (task key, payload) pair per
# sample, sample 0 first. Returns how many samples were queued now. Sample 0 is marked queued by
# the prompt's digest entry (as before samples existed), samples 1.. by the enqueued set, so a
# rerun with a larger --samples queues only the new samples.
ENQUEUE_SCRIPT = f"""
local queued = 0
local first = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1
for i = 3, #ARGV, 2 do
  local fresh = first
  if i > 3 then fresh = redis.call('SADD', KEYS[4], ARGV[i]) == 1 end
  if fresh and redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    redis.call('XADD', KEYS[3], '*', '{DATA_FIELD}', ARGV[i + 1])
    queued = queued + 1
  end
end
return queued
"""


@dataclass
class CheckReport:
    valid: int = 0
    repeated: int = 0
    bad_lines: list[BadLine] = field(default_factory=list)
    bad_count: int = 0

    def add_bad(self, bad: BadLine) -> None:
        self.bad_count += 1
        if len(self.bad_lines) < MAX_BAD_LINES_KEPT:
            self.bad_lines.append(bad)


def _valid_tasks(
    path: Path, run: str, limit: int | None, report: CheckReport | None, secret_rules: SecretsConfig | None = None
) -> Iterator[PromptTask]:
    taken = 0
    for item in read_prompts(path, run, secret_rules):
        if isinstance(item, BadLine):
            if report is not None:
                report.add_bad(item)
            continue
        if limit is not None and taken >= limit:
            return
        taken += 1
        yield item


def check_prompts(
    client: redis.Redis, keys: RunKeys, path: Path, limit: int | None = None, secret_rules: SecretsConfig | None = None
) -> CheckReport:
    """Pass 1: every line parsed, ids checked for duplicates inside the file and against the run."""
    report = CheckReport()
    scratch = keys.check_scratch(secrets.token_hex(6))
    check = client.register_script(CHECK_SCRIPT)
    try:
        batch: list[PromptTask] = []
        for task in _valid_tasks(path, keys.run, limit, report, secret_rules):
            batch.append(task)
            if len(batch) >= BATCH:
                _check_batch(client, check, scratch, keys, path, batch, report)
                batch = []
        _check_batch(client, check, scratch, keys, path, batch, report)
    finally:
        client.delete(scratch)
    return report


def _check_batch(client, check, scratch, keys, path, batch, report) -> None:
    if not batch:
        return
    pipe = client.pipeline(transaction=False)
    for task in batch:
        check(keys=[scratch, keys.prompt_digests], args=[task.task_id, task.content_digest(), task.source_line], client=pipe)
    for task, verdict in zip(batch, pipe.execute(), strict=True):
        if verdict == "ok":
            report.valid += 1
        elif verdict.startswith("same:"):
            report.repeated += 1
        elif verdict.startswith("dup:"):
            first = verdict.split(":", 1)[1]
            report.add_bad(
                BadLine(str(path), task.source_line, "id", f"duplicate id {task.task_id!r} with different content (first on line {first})")
            )
        else:
            report.add_bad(
                BadLine(
                    str(path),
                    task.source_line,
                    "id",
                    f"prompt {task.task_id!r} differs from the one this run already queued; use a new --run",
                )
            )


def enqueue_prompts(
    client: redis.Redis,
    keys: RunKeys,
    path: Path,
    limit: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    samples: int = 1,
    secret_rules: SecretsConfig | None = None,
) -> int:
    """Pass 2: queue every sample of every good prompt not queued or finished before.

    Returns how many (prompt, sample) tasks were new.
    """
    enqueue = client.register_script(ENQUEUE_SCRIPT)
    queued = 0
    batch: list[PromptTask] = []

    def flush() -> None:
        nonlocal queued, batch
        if not batch:
            return
        pipe = client.pipeline(transaction=False)
        for task in batch:
            args: list[str] = [task.task_id, task.content_digest()]
            for sample in range(samples):
                one = task.for_sample(sample)
                args += [one.key, one.model_dump_json()]
            enqueue(keys=[keys.prompt_digests, keys.done, keys.tasks, keys.enqueued], args=args, client=pipe)
        queued += sum(pipe.execute())
        if on_batch is not None:
            on_batch(len(batch))
        batch = []

    for task in _valid_tasks(path, keys.run, limit, None, secret_rules):
        batch.append(task)
        if len(batch) >= BATCH:
            flush()
    flush()
    return queued


def tasks_total(client: redis.Redis, keys: RunKeys) -> int:
    """(prompt, sample) tasks ever queued in the run: every prompt's sample 0, and the others."""
    return int(client.hlen(keys.prompt_digests)) + int(client.scard(keys.enqueued))
