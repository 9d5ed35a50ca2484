"""The task and result streams: the operations both the coordinator and the workers perform.

Delivery is at-least-once (consumer groups, XAUTOCLAIM); the coordinator's de-duplication by task
id on write turns that into exactly-once output.

The transactions that move a task on (`add_requeue`, `add_publish`, `add_ack`) only queue their
commands on a pipeline the caller made and executes: redis-py queues pipeline commands
synchronously on the sync and the asyncio client alike, so the coordinator (sync) and the workers
(asyncio) share one definition, and a caller can add its own counters to the same transaction.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio
from redis.typing import EncodableT, FieldT

from distill.shared.keys import DATA_FIELD, KIND_FIELD, RESULTS_GROUP, TASKS_GROUP, RunKeys
from distill.shared.records import Conversation, DeadLetter, ResultKind

DEAD_STREAM_MAXLEN = 10_000

Pipeline = redis.client.Pipeline | redis.asyncio.client.Pipeline


def ensure_groups(client: redis.Redis, keys: RunKeys) -> None:
    for stream, group in ((keys.tasks, TASKS_GROUP), (keys.results, RESULTS_GROUP)):
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise


def result_fields(record: Conversation | DeadLetter) -> dict[FieldT, EncodableT]:
    kind: ResultKind = "conversation" if isinstance(record, Conversation) else "dead"
    return {KIND_FIELD: kind, DATA_FIELD: record.model_dump_json()}


def parse_result(fields: dict[str, Any]) -> Conversation | DeadLetter:
    data = fields[DATA_FIELD]
    if fields.get(KIND_FIELD) == "conversation":
        return Conversation.model_validate_json(data)
    return DeadLetter.model_validate_json(data)


def requeue_orphans(client: redis.Redis, keys: RunKeys, consumer: str = "coordinator-requeue") -> int:
    """Put every task still pending in the group back on the stream as a fresh entry.

    Called by a starting coordinator: workers are owned by the coordinator that made them, so a
    task pending now belonged to a worker of a run that died. The attempt it used stays counted.
    """
    moved = 0
    start = "0-0"
    while True:
        start, entries, _deleted = client.xautoclaim(keys.tasks, TASKS_GROUP, consumer, 0, start, count=500)
        for entry_id, fields in entries:
            if fields:
                requeue(client, keys, entry_id, fields[DATA_FIELD])
                moved += 1
            else:
                client.xack(keys.tasks, TASKS_GROUP, entry_id)
        if start == "0-0":
            return moved


def requeue(client: redis.Redis, keys: RunKeys, entry_id: str, payload: str) -> None:
    pipe = client.pipeline(transaction=True)
    add_requeue(pipe, keys, entry_id, payload)
    pipe.execute()


def add_ack(pipe: Pipeline, keys: RunKeys, entry_id: str) -> None:
    """The task entry is finished with: acknowledged and deleted (the stream keeps only live work)."""
    pipe.xack(keys.tasks, TASKS_GROUP, entry_id)
    pipe.xdel(keys.tasks, entry_id)


def add_requeue(pipe: Pipeline, keys: RunKeys, entry_id: str, payload: str) -> None:
    """The task goes back as a fresh entry and the old one is acknowledged, in one transaction."""
    pipe.xadd(keys.tasks, {DATA_FIELD: payload})
    add_ack(pipe, keys, entry_id)


def add_publish(pipe: Pipeline, keys: RunKeys, entry_id: str, record: Conversation | DeadLetter) -> None:
    """The task's record goes on the results stream and the task is acknowledged, in one transaction."""
    pipe.xadd(keys.results, result_fields(record))
    add_ack(pipe, keys, entry_id)
