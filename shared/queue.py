"""The task and result streams: the operations both the coordinator and the workers perform.

Delivery is at-least-once (consumer groups, XAUTOCLAIM); the coordinator's de-duplication by task
id on write turns that into exactly-once output.
"""

from __future__ import annotations

from typing import Any

import redis

from distill.shared.keys import DATA_FIELD, KIND_FIELD, RESULTS_GROUP, TASKS_GROUP, RunKeys
from distill.shared.records import Conversation, DeadLetter, ResultKind

DEAD_STREAM_MAXLEN = 10_000


def ensure_groups(client: redis.Redis, keys: RunKeys) -> None:
    for stream, group in ((keys.tasks, TASKS_GROUP), (keys.results, RESULTS_GROUP)):
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise


def result_fields(record: Conversation | DeadLetter) -> dict[str, str]:
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
    pipe.xadd(keys.tasks, {DATA_FIELD: payload})
    pipe.xack(keys.tasks, TASKS_GROUP, entry_id)
    pipe.xdel(keys.tasks, entry_id)
    pipe.execute()
