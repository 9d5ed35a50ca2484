"""`distill convert`: captured conversations -> mlx-lm training files, keeping only good trajectories.

A trajectory is kept only if it is worth imitating: it ended in a final answer, every tool call
got its real result, every call's arguments fit the tool's schema, no call repeats, it stays
under the tool-call budget and the student's context. Every other one is counted under the
first reason that rejects it, so a report says exactly what was thrown away and why.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from distill.shared.records import SCHEMA_VERSION, Conversation, Record, is_placeholder, utcnow
from distill.trainer.errors import TrainerError
from distill.trainer.render import canonical_json, chat_messages, encode, load_tokenizer, render_text
from distill.trainer.schema_check import argument_errors, tool_schemas

SPLITS = ("train", "valid", "test")
CONVERSATIONS_FILE = "conversations.jsonl"
REPORT_FILE = "report.json"


class DropReason(StrEnum):
    """Why a conversation was left out; the first that applies wins, checked in this order."""

    INVALID_RECORD = "invalid_record"
    NOT_FINAL_ANSWER = "status_not_final_answer"
    BAD_TOOL_RESULT = "missing_or_placeholder_tool_result"
    ARGUMENTS_NOT_JSON = "arguments_not_json_object"
    INVALID_ARGUMENTS = "arguments_fail_schema"
    REPEATED_CALL = "repeated_identical_call"
    TOO_MANY_TOOL_CALLS = "too_many_tool_calls"
    NO_FINAL_ANSWER = "no_final_text_answer"
    TOO_LONG = "longer_than_max_seq_length"
    DUPLICATE = "exact_duplicate"


DROP_DESCRIPTIONS = {
    DropReason.INVALID_RECORD: "invalid record (bad JSON, unknown schema, missing fields)",
    DropReason.NOT_FINAL_ANSWER: "status is not final_answer",
    DropReason.BAD_TOOL_RESULT: "a tool result is missing, empty or a placeholder",
    DropReason.ARGUMENTS_NOT_JSON: "tool-call arguments are not a JSON object",
    DropReason.INVALID_ARGUMENTS: "unknown tool or arguments that fail its schema",
    DropReason.REPEATED_CALL: "the same call (name + arguments) repeated",
    DropReason.TOO_MANY_TOOL_CALLS: "more tool calls than max_tool_calls",
    DropReason.NO_FINAL_ANSWER: "no final text answer",
    DropReason.TOO_LONG: "longer than max_seq_length tokens",
    DropReason.DUPLICATE: "exact duplicate of a kept conversation",
}


class DroppedRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: int
    task_id: str | None = None
    reason: DropReason
    detail: str


class TokenStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: int = 0
    max: int = 0
    mean: float = 0.0


class ConvertReport(Record):
    """What `distill convert` kept and dropped; written to OUT/report.json."""

    source: str
    tokenizer: str
    out_dir: str
    format: Literal["chat", "text"]
    max_tool_calls: int
    max_seq_length: int
    split_ratios: tuple[float, float, float]
    records: int = 0
    kept: int = 0
    dropped: dict[DropReason, int] = Field(default_factory=lambda: {r: 0 for r in DropReason})
    splits: dict[str, int] = Field(default_factory=lambda: {s: 0 for s in SPLITS})
    tokens: TokenStats = Field(default_factory=TokenStats)
    drops: list[DroppedRecord] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)


# --- reading ---------------------------------------------------------------------------------


class _RawFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    # Strings are accepted here and parsed later, so "arguments as a JSON string" becomes a drop
    # reason (or is repaired) instead of an invalid record.
    arguments: dict[str, Any] | str | None = None


class _RawToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["function"] = "function"
    function: _RawFunction


class _RawMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[_RawToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


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
    messages=(list[_RawMessage], ...),
)


@dataclass(frozen=True)
class _Line:
    number: int
    conversation: Any = None  # a _RawConversation
    error: str | None = None


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
    return source


def read_conversations(path: Path, on_bytes: Any = None) -> Iterator[_Line]:
    """Stream a conversations file: one _Line per non-blank line, with a parsed record or an error."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if on_bytes is not None:
                on_bytes(len(raw))
            if not raw.strip():
                continue
            yield _parse_line(path, number, raw)


def _parse_line(path: Path, number: int, raw: bytes) -> _Line:
    where = f"{path}:{number}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return _Line(number=number, error=f"{where}: not UTF-8 (byte {error.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if not raw.endswith(b"\n"):
            return _Line(number=number, error=f"{where}: truncated last line (not complete JSON)")
        return _Line(number=number, error=f"{where}: not JSON ({error.msg} at column {error.colno})")
    if not isinstance(data, dict):
        return _Line(number=number, error=f"{where}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        reason = (
            "is required"
            if version is None
            else f"unsupported version {version!r} (this distill reads {SCHEMA_VERSION})"
        )
        return _Line(number=number, error=f"{where}: field schema_version: {reason}")
    try:
        conversation = _RawConversation.model_validate(data)
    except ValidationError as error:
        problem = error.errors()[0]
        field = ".".join(str(part) for part in problem["loc"]) or "(record)"
        message = {"missing": "is required", "extra_forbidden": "unknown key"}.get(problem["type"], problem["msg"])
        return _Line(number=number, error=f"{where}: field {field}: {message}")
    return _Line(number=number, conversation=conversation)


# --- filtering -------------------------------------------------------------------------------


class _Rejected(Exception):
    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def training_messages(conversation: Any, *, max_tool_calls: int) -> list[dict[str, Any]]:
    """The conversation's messages ready for training, or _Rejected with the first reason."""
    if conversation.status != "final_answer":
        suffix = f": {conversation.error}" if conversation.error else ""
        raise _Rejected(DropReason.NOT_FINAL_ANSWER, f"status {conversation.status}{suffix}"[:300])
    messages = [message.model_dump(exclude_none=True) for message in conversation.messages]
    _check_tool_results(messages)
    schemas = tool_schemas(conversation.tools)
    seen: set[str] = set()
    calls = 0
    for message in messages:
        for call in message.get("tool_calls") or []:
            function = call["function"]
            function["arguments"] = _arguments_object(function["name"], function.get("arguments"))
            if function["name"] not in schemas:
                raise _Rejected(DropReason.INVALID_ARGUMENTS, f"unknown tool {function['name']!r}")
            problems = argument_errors(schemas[function["name"]], function["arguments"])
            if problems:
                raise _Rejected(DropReason.INVALID_ARGUMENTS, f"{function['name']}: {problems[0]}"[:300])
            key = canonical_json([function["name"], function["arguments"]])
            if key in seen:
                shown = canonical_json(function["arguments"])[:200]
                raise _Rejected(DropReason.REPEATED_CALL, f"{function['name']} called twice with {shown}")
            seen.add(key)
            calls += 1
    if calls > max_tool_calls:
        raise _Rejected(DropReason.TOO_MANY_TOOL_CALLS, f"{calls} tool calls > max_tool_calls {max_tool_calls}")
    last = messages[-1] if messages else {}
    if last.get("role") != "assistant" or last.get("tool_calls") or not (last.get("content") or "").strip():
        raise _Rejected(DropReason.NO_FINAL_ANSWER, f"the last message is {_describe(last)}")
    return chat_messages(messages)


def _check_tool_results(messages: list[dict[str, Any]]) -> None:
    calls: set[str] = set()
    answered: set[str] = set()
    for message in messages:
        for call in message.get("tool_calls") or []:
            if call["id"] in calls:
                raise _Rejected(DropReason.BAD_TOOL_RESULT, f"tool call id {call['id']!r} is used twice")
            calls.add(call["id"])
        if message["role"] == "tool":
            call_id = message.get("tool_call_id", "")
            content = message.get("content")
            if call_id not in calls:
                raise _Rejected(DropReason.BAD_TOOL_RESULT, f"tool result {call_id!r} answers no earlier call")
            if call_id in answered:
                raise _Rejected(DropReason.BAD_TOOL_RESULT, f"tool call {call_id!r} has two results")
            if content is None:
                raise _Rejected(DropReason.BAD_TOOL_RESULT, f"tool call {call_id!r} has a null result")
            # An empty result is how the seed's capture bug showed up; real tools always say
            # something ("no matches", "empty file"), so empty means the result was lost.
            if not content.strip():
                raise _Rejected(DropReason.BAD_TOOL_RESULT, f"tool call {call_id!r} has an empty result")
            if is_placeholder(content):
                detail = f"tool call {call_id!r} has a placeholder result {content.strip()!r}"
                raise _Rejected(DropReason.BAD_TOOL_RESULT, detail)
            answered.add(call_id)
    missing = sorted(calls - answered)
    if missing:
        raise _Rejected(DropReason.BAD_TOOL_RESULT, f"no result for tool call(s) {', '.join(missing)}")


def _arguments_object(name: str, arguments: Any) -> dict[str, Any]:
    """Tool-call arguments as a JSON object; a JSON string is decoded (templates would double-encode it)."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        decoded = json.loads(arguments)
    except json.JSONDecodeError as error:
        raise _Rejected(DropReason.ARGUMENTS_NOT_JSON, f"{name}: arguments are not JSON ({error.msg})") from None
    if not isinstance(decoded, dict):
        detail = f"{name}: arguments are JSON {type(decoded).__name__}, not an object"
        raise _Rejected(DropReason.ARGUMENTS_NOT_JSON, detail)
    return decoded


def _describe(message: dict[str, Any]) -> str:
    if not message:
        return "missing"
    if message.get("tool_calls"):
        return "an assistant tool call"
    if message.get("role") != "assistant":
        return f"a {message.get('role')} message"
    return "an empty assistant message"


# --- splitting and writing -------------------------------------------------------------------


def split_of(task_id: str, ratios: tuple[float, float, float]) -> str:
    """Deterministic split from the task id, so every attempt of a task lands in the same split."""
    bucket = int(hashlib.sha256(task_id.encode()).hexdigest()[:15], 16) / 16**15
    if bucket < ratios[0]:
        return "train"
    if bucket < ratios[0] + ratios[1]:
        return "valid"
    return "test"


def _check_ratios(ratios: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise TrainerError(f"split ratios {ratios}: need three non-negative numbers (train > 0) that add up to 1")
    return (float(ratios[0]), float(ratios[1]), float(ratios[2]))


def _move_first_line(source: Path, target: Path) -> None:
    with source.open("r", encoding="utf-8") as handle:
        first = handle.readline()
        rest = handle.read()
    source.write_text(rest, encoding="utf-8")
    with target.open("a", encoding="utf-8") as handle:
        handle.write(first)


def _balance(temp: dict[str, Path], counts: dict[str, int]) -> None:
    """Make train non-empty, and valid non-empty once there are two examples (mlx-lm validates)."""
    total = sum(counts.values())
    if total >= 1 and counts["train"] == 0:
        donor = max(("valid", "test"), key=lambda s: counts[s])
        _move_first_line(temp[donor], temp["train"])
        counts[donor] -= 1
        counts["train"] += 1
    if total >= 2 and counts["valid"] == 0:
        donor = "test" if counts["test"] > 0 else "train"
        _move_first_line(temp[donor], temp["valid"])
        counts[donor] -= 1
        counts["valid"] += 1


# --- the command -----------------------------------------------------------------------------


def convert(
    source: Path,
    tokenizer: str | Path,
    out: Path,
    *,
    max_tool_calls: int = 5,
    max_seq_length: int = 2048,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    format: Literal["chat", "text"] = "chat",  # noqa: A002 - mirrors the --format flag
    skip_invalid: bool = False,
    console: Console | None = None,
) -> ConvertReport:
    """Filter a run's conversations and write OUT/{train,valid,test}.jsonl plus OUT/report.json.

    `source` is a run directory (its conversations.jsonl) or a conversations JSONL file, read as
    a stream. `tokenizer` is the student model (path or id): rendering and token counts use its
    chat template. `format="chat"` writes mlx-lm's `{"messages", "tools"}` lines, `"text"` the
    rendered `{"text"}`. Bad lines raise TrainerError (`file:line: field X: reason`) unless
    `skip_invalid`, which counts them as dropped. Empty splits are not written (mlx-lm cannot
    read an empty file). Returns the report.
    """
    console = console or Console()
    if max_tool_calls < 0:
        raise TrainerError(f"max_tool_calls must be >= 0, not {max_tool_calls}")
    if max_seq_length < 2:
        raise TrainerError(f"max_seq_length must be >= 2, not {max_seq_length}")
    if format not in ("chat", "text"):
        raise TrainerError(f"format must be 'chat' or 'text', not {format!r}")
    ratios = _check_ratios(tuple(split))  # type: ignore[arg-type]
    path = conversations_path(source)
    student = load_tokenizer(tokenizer)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    report = ConvertReport(
        source=str(path),
        tokenizer=str(tokenizer),
        out_dir=str(out),
        format=format,
        max_tool_calls=max_tool_calls,
        max_seq_length=max_seq_length,
        split_ratios=ratios,
    )
    temp = {name: out / f".{name}.jsonl.partial" for name in SPLITS}
    handles = {name: temp[name].open("w", encoding="utf-8") for name in SPLITS}
    seen_texts: set[str] = set()
    reasons: Counter[DropReason] = Counter()
    lengths: list[int] = []
    progress = Progress(
        TextColumn("[bold blue]convert"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[kept]} kept, {task.fields[dropped]} dropped"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    try:
        with progress:
            task = progress.add_task("convert", total=path.stat().st_size, kept=0, dropped=0)
            for line in read_conversations(path, on_bytes=lambda n: progress.advance(task, n)):
                report.records += 1
                outcome = _convert_one(line, student, report, seen_texts, skip_invalid)
                if isinstance(outcome, DroppedRecord):
                    reasons[outcome.reason] += 1
                    report.drops.append(outcome)
                else:
                    name, payload, length = outcome
                    handles[name].write(json.dumps(payload, ensure_ascii=False) + "\n")
                    report.splits[name] += 1
                    lengths.append(length)
                progress.update(task, kept=len(lengths), dropped=len(report.drops))
    except BaseException:
        for handle in handles.values():
            handle.close()
        for partial in temp.values():
            partial.unlink(missing_ok=True)
        raise
    for handle in handles.values():
        handle.close()

    _balance(temp, report.splits)
    for name in SPLITS:
        final = out / f"{name}.jsonl"
        if report.splits[name]:
            os.replace(temp[name], final)
        else:
            temp[name].unlink(missing_ok=True)
            final.unlink(missing_ok=True)
    report.kept = len(lengths)
    report.dropped = {reason: reasons.get(reason, 0) for reason in DropReason}
    if lengths:
        report.tokens = TokenStats(total=sum(lengths), max=max(lengths), mean=round(sum(lengths) / len(lengths), 1))
    (out / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    print_report(report, console)
    return report


def _convert_one(
    line: _Line,
    tokenizer: Any,
    report: ConvertReport,
    seen_texts: set[str],
    skip_invalid: bool,
) -> DroppedRecord | tuple[str, dict[str, Any], int]:
    if line.error is not None:
        if not skip_invalid:
            raise TrainerError(line.error)
        return DroppedRecord(line=line.number, reason=DropReason.INVALID_RECORD, detail=line.error)
    conversation = line.conversation
    try:
        messages = training_messages(conversation, max_tool_calls=report.max_tool_calls)
        tools = conversation.tools
        text = render_text(tokenizer, messages, tools)
        length = len(encode(tokenizer, text))
        if length > report.max_seq_length:
            raise _Rejected(DropReason.TOO_LONG, f"{length} tokens > max_seq_length {report.max_seq_length}")
        # Duplicates are judged on what the student would train on: the rendered text (tool
        # call ids differ between runs but are not part of it).
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen_texts:
            raise _Rejected(DropReason.DUPLICATE, "same rendered conversation as an earlier line")
        seen_texts.add(digest)
    except _Rejected as rejected:
        return DroppedRecord(
            line=line.number, task_id=conversation.task_id, reason=rejected.reason, detail=rejected.detail
        )
    except TrainerError as error:
        raise TrainerError(f"{report.source}:{line.number}: {error}") from None
    payload: dict[str, Any] = {"text": text} if report.format == "text" else {"messages": messages}
    if report.format == "chat" and tools:
        payload["tools"] = tools
    return split_of(conversation.task_id, report.split_ratios), payload, length


def print_report(report: ConvertReport, console: Console) -> None:
    """Counts per drop reason and per split, as a rich table."""
    table = Table(title=f"distill convert: {report.kept} of {report.records} conversations kept")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for reason in DropReason:
        count = report.dropped.get(reason, 0)
        if count:
            table.add_row(f"dropped: {DROP_DESCRIPTIONS[reason]}", str(count), style="yellow")
    for name in SPLITS:
        table.add_row(f"kept: {name}.jsonl", str(report.splits[name]), style="green")
    console.print(table)
    if report.kept:
        console.print(
            f"tokens per conversation: max {report.tokens.max}, mean {report.tokens.mean}; "
            f"report: {Path(report.out_dir) / REPORT_FILE}"
        )
