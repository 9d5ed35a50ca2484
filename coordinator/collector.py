"""Results stream -> `conversations.jsonl` and `dead.jsonl`, each task exactly once.

A task is one sample of one prompt, named by its task key (shared/keys.py: `task_key`).

The order of every step is what makes the output exact:
1. append the batch's new lines, flush and fsync;
2. then mark their task ids done in Redis;
3. then acknowledge (and delete) the stream entries.
A crash between 1 and 2 leaves lines on disk that Redis doesn't know: on start, `recover()` reads
the files back into the done set, so the re-delivered results are recognised as duplicates.
A crash in the middle of 1 leaves a partial last line, which `recover()` cuts off.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from distill.shared.keys import DATA_FIELD, RESULTS_GROUP, RunKeys, task_key
from distill.shared.queue import DEAD_STREAM_MAXLEN, parse_result
from distill.shared.errors import DistillError, LineError
from distill.shared.jsonl import DurableAppender, cut_partial_line, iter_jsonl
from distill.shared.records import CONVERSATIONS_FILE, DEAD_FILE, Conversation, DeadLetter

CONSUMER = "collector"
RECOVER_BATCH = 2_000


class OutputError(DistillError):
    """The output files can't be written; nothing unwritten was acknowledged."""


@dataclass
class Drained:
    conversations: int = 0
    dead: int = 0
    duplicates: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    # Verdicts of the conversations written (passed / failed / no verdict).
    passed: int = 0
    failed: int = 0
    unverified: int = 0

    def add(self, other: Drained) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def iter_task_keys(path: Path) -> Iterator[str]:
    """The task key of every record in a results file (a record without `sample` is sample 0)."""
    if not path.exists():
        return
    for _, record in iter_jsonl(path):
        if isinstance(record, LineError):
            raise OutputError(f"{record}: the file is damaged; move the line away and run again")
        yield task_key(str(record.get("task_id")), int(record.get("sample", 0)))


class Collector:
    def __init__(self, client: redis.Redis, keys: RunKeys, run_dir: Path) -> None:
        self.client = client
        self.keys = keys
        self.run_dir = run_dir
        self.conversations_path = run_dir / CONVERSATIONS_FILE
        self.dead_path = run_dir / DEAD_FILE
        self._files = {path: DurableAppender(path) for path in (self.conversations_path, self.dead_path)}
        self._read_pending_first = True

    def recover(self) -> int:
        """Make Redis' done set agree with the files; returns how many records are on disk."""
        on_disk = 0
        for path in (self.conversations_path, self.dead_path):
            if path.exists() and not path.is_file():
                raise OutputError(f"cannot write {path}: it is not a regular file")
            cut_partial_line(path)
            batch: list[str] = []
            for key in iter_task_keys(path):
                batch.append(key)
                on_disk += 1
                if len(batch) >= RECOVER_BATCH:
                    self.client.sadd(self.keys.done, *batch)
                    batch = []
            if batch:
                self.client.sadd(self.keys.done, *batch)
        return on_disk

    def restart_from_pending(self) -> None:
        """Read our own un-acked entries again before new ones (after a Redis restart)."""
        self._read_pending_first = True

    def drain(self, block_ms: int = 200, count: int = 200) -> Drained:
        """Write what the results stream holds now (waiting up to block_ms for something)."""
        # After a restart our own un-acked entries come first: they may already be on disk.
        start = "0" if self._read_pending_first else ">"
        response = self.client.xreadgroup(
            RESULTS_GROUP, CONSUMER, {self.keys.results: start}, count=count, block=None if start == "0" else block_ms
        )
        entries = response[0][1] if response else []
        if not entries:
            # Idle: look at our own un-acked entries on the next turn. The client retries a read
            # whose answer a dropped connection lost (distill.shared.retry), and entries it had
            # delivered are then ours but never come again with ">".
            self._read_pending_first = start == ">"
        return self._write(entries)

    def _write(self, entries: list[tuple[str, dict[str, str]]]) -> Drained:
        drained = Drained()
        if not entries:
            return drained
        fresh: list[tuple[str, Conversation | DeadLetter, str]] = []
        # A pending entry deleted under us comes back without fields: only its ack is left to do.
        live = [(entry_id, fields[DATA_FIELD], parse_result(fields)) for entry_id, fields in entries if fields]
        done = self.client.smismember(self.keys.done, [record.key for _, _, record in live]) if live else []
        seen: set[str] = set()
        for (entry_id, data, record), already in zip(live, done):
            if already or record.key in seen:
                drained.duplicates += 1
                continue
            seen.add(record.key)
            fresh.append((entry_id, record, data))
        self._append(fresh)
        pipe = self.client.pipeline(transaction=True)
        if fresh:
            pipe.sadd(self.keys.done, *[record.key for _, record, _ in fresh])
        for _, record, data in fresh:
            if isinstance(record, DeadLetter):
                pipe.xadd(self.keys.dead, {DATA_FIELD: data}, maxlen=DEAD_STREAM_MAXLEN, approximate=True)
        ids = [entry_id for entry_id, _ in entries]
        pipe.xack(self.keys.results, RESULTS_GROUP, *ids)
        pipe.xdel(self.keys.results, *ids)
        pipe.execute()
        for _, record, _ in fresh:
            if isinstance(record, Conversation):
                drained.conversations += 1
                drained.input_tokens += record.usage.input_tokens
                drained.output_tokens += record.usage.output_tokens
                drained.tool_calls += record.usage.tool_calls
                outcome = record.verdict.outcome
                setattr(drained, outcome, getattr(drained, outcome) + 1)
            else:
                drained.dead += 1
        return drained

    def _append(self, fresh: list[tuple[str, Conversation | DeadLetter, str]]) -> None:
        lines: dict[Path, list[str]] = {}
        for _, record, data in fresh:
            path = self.conversations_path if isinstance(record, Conversation) else self.dead_path
            # The payload was just validated against the record's model: it goes to disk as it came,
            # one JSON line (re-serialised only if a producer sent it spread over several lines).
            line = data if "\n" not in data else record.model_dump_json()
            lines.setdefault(path, []).append(line)
        for path, chunk in lines.items():
            try:
                self._files[path].append(chunk)
            except OSError as error:  # the entries stay un-acked for the next run
                raise OutputError(f"cannot write {path}: {error.strerror or error}") from None

    def close(self) -> None:
        for appender in self._files.values():
            appender.close()
