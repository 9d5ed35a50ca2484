"""The files convert and repair read: distill's own records, plain chat lines and rendered text
lines, each line parsed into a `Trajectory` or an error that names file and line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError, create_model

from distill.shared.errors import LineError, line_error
from distill.shared.jsonl import parse_json_object
from distill.shared.records import (
    CONVERSATIONS_FILE,
    SCHEMA_VERSION,
    Conversation,
    Record,
)
from distill.trainer.chat_lines import (
    RawMessage,
    Trajectory,
    is_plain_chat,
    plain_trajectory,
)
from distill.trainer.errors import TrainerError
from distill.trainer.rendered import NotThisFamily, is_rendered_text, parse_rendered

# Conversation's fields without its validators: a record whose only fault is its content (a
# placeholder result, a call with no answer) must reach the filters and be dropped for that
# reason, not be refused as invalid. The fields stay in step with shared.records automatically.
_RawConversation = create_model(  # type: ignore[call-overload]
    "_RawConversation",
    __base__=Record,
    **{
        name: (info.annotation, info)
        for name, info in Conversation.model_fields.items()
        if name not in ("messages", "schema_version")
    },
    messages=(list[RawMessage], ...),
)


@dataclass(frozen=True)
class SourceLine:
    number: int
    conversation: Trajectory | None = None
    error: str | None = None
    # Bytes of the file read up to the end of this line, for progress.
    end_offset: int = 0


def conversations_path(source: Path) -> Path:
    """A run directory means its conversations.jsonl; a file is used as is."""
    source = Path(source)
    if source.is_dir():
        path = source / CONVERSATIONS_FILE
        if not path.is_file():
            raise TrainerError(f"{source}: no {CONVERSATIONS_FILE} in this run directory")
        return path
    if not source.is_file():
        raise TrainerError(f"{source}: no such file or run directory")
    problem = wrong_kind(source)
    if problem is not None:
        raise TrainerError(f"{source}: {problem}")
    return source


def wrong_kind(path: Path) -> str | None:
    """What the file is when it is plainly not conversations, judged by its first line; else None.

    Only kinds distill itself writes and users mix up are named; anything else is left to the
    line-by-line reader, whose errors name the line and field.
    """
    with path.open("rb") as handle:
        first = next((line for line in handle if line.strip()), b"")
    try:
        data = json.loads(first)
    except ValueError:
        return None
    if not isinstance(data, dict) or "messages" in data or "schema_version" in data:
        return None
    if "prompt" in data:
        return "this is a prompts file, not conversations: run distill generate first"
    if "variants" in data or "drops" in data:
        return "this is a report (eval.json or report.json), not conversations"
    return None


def read_conversations(path: Path) -> Iterator[SourceLine]:
    """Stream a conversations file: one SourceLine per non-blank line, with a parsed record or an error."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            offset += len(raw)
            if raw.strip():
                yield _parse_line(str(path), number, raw, offset)


def _parse_line(path: str, number: int, raw: bytes, offset: int) -> SourceLine:
    data = parse_json_object(path, number, raw)
    if isinstance(data, LineError):
        return SourceLine(number=number, error=str(data), end_offset=offset)
    if is_rendered_text(data):
        try:
            data = parse_rendered(data["text"])
        except NotThisFamily as problem:
            return SourceLine(number=number, error=str(LineError(path, number, "text", str(problem))), end_offset=offset)
    if is_plain_chat(data):
        trajectory = plain_trajectory(path, number, data)
        if isinstance(trajectory, LineError):
            return SourceLine(number=number, error=str(trajectory), end_offset=offset)
        return SourceLine(number=number, conversation=trajectory, end_offset=offset)
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        reason = "is required" if version is None else f"unsupported version {version!r} (this distill reads {SCHEMA_VERSION})"
        return SourceLine(number=number, error=str(LineError(path, number, "schema_version", reason)), end_offset=offset)
    try:
        record = _RawConversation.model_validate(data)
    except ValidationError as error:
        return SourceLine(number=number, error=str(line_error(path, number, error)), end_offset=offset)
    return SourceLine(number=number, conversation=record_trajectory(record), end_offset=offset)


def record_trajectory(record: Any) -> Trajectory:
    """A distill record (validated as _RawConversation) as a Trajectory; its other fields ride along."""
    extra = record.model_dump(mode="json", exclude={"messages", "tools", "task_id", "status", "error"})
    return Trajectory(task_id=record.task_id, messages=record.messages, tools=record.tools,
                      status=record.status, error=record.error, sample=record.sample, verdict=record.verdict,
                      extra=extra)
