"""`distill convert`: captured conversations -> mlx-lm training files, keeping only good trajectories.

A trajectory is kept only if it is worth imitating: it ended in a final answer, every tool call
got its real result, every call's arguments fit the tool's schema, no call repeats, it stays
under the tool-call budget and the student's context. Every other one is counted under the
first reason that rejects it, so a report says exactly what was thrown away and why.

It reads distill's own records and plain chat lines (`{"messages", "tools"}`, as mlx-lm and most
datasets write them; see trainer/chat_lines.py) alike, with the same rules for both.

Verdicts (is the answer right?) come from each record and from RUN/verdicts.jsonl, whose later
verdict wins; a record with a reference answer is checked again by today's rule (shared/verdicts.py,
without the workspace: path-looking tokens name files), so a run judged by an older, looser rule
cannot pass a wrong answer. `require_verified` keeps only passing trajectories; `best_of` keeps one
per prompt and never a failed one (see `BestOf`). The report gives pass@1 and pass@k
(`shared.verdicts.pass_rates`, the same numbers eval and the viewer show).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from distill.shared.errors import LineError, line_error
from distill.shared.jsonl import parse_json_object
from distill.shared.records import (
    CONVERSATIONS_FILE,
    SCHEMA_VERSION,
    Conversation,
    Record,
    is_infra_error,
    run_limits,
    tool_result_problem,
    utcnow,
)
from distill.shared.secrets import TAG
from distill.shared.verdicts import (
    VERDICTS_FILE,
    Expected,
    PassRates,
    Verdict,
    latest_verdicts,
    named_files,
    pass_rates,
    reference_verdict,
)
from distill.trainer.chat_lines import (
    ArgumentsNotObject,
    RawMessage,
    Trajectory,
    arguments_object,
    is_plain_chat,
    plain_trajectory,
)
from distill.trainer.errors import TrainerError
from distill.trainer.render import (
    MarkerInText,
    assistant_spans,
    canonical_json,
    chat_messages,
    encode,
    load_tokenizer,
    render_text,
)
from distill.trainer.rendered import NotThisFamily, is_rendered_text, parse_rendered
from distill.trainer.schema_check import argument_errors, tool_schemas
from distill.trainer.thinking import ReasoningMode, ReasoningStats, resolve, template_thinks, with_reasoning
from distill.trainer.thinking import add as add_reasoning
from distill.trainer.thinking import count as count_reasoning

SPLITS = ("train", "valid", "test")
REPORT_FILE = "report.json"
# What earlier pipelines wrote instead of a tool's result (shared/records.py:PLACEHOLDER_RESULTS), written
# on purpose by --placeholder-results.
PLACEHOLDER_RESULT = "[Tool execution completed]"


class DropReason(StrEnum):
    """Why a conversation was left out; the first that applies wins, checked in this order."""

    INVALID_RECORD = "invalid_record"
    REDACTED = "secrets_redacted"
    TOOL_INFRA_ERROR = "tool_infrastructure_error"
    NOT_FINAL_ANSWER = "status_not_final_answer"
    FAILED_VERIFICATION = "failed_verification"
    UNVERIFIED = "unverified"
    BAD_TOOL_RESULT = "missing_or_placeholder_tool_result"
    ARGUMENTS_NOT_JSON = "arguments_not_json_object"
    INVALID_ARGUMENTS = "arguments_fail_schema"
    REPEATED_CALL = "repeated_identical_call"
    TOO_MANY_TOOL_CALLS = "too_many_tool_calls"
    NO_FINAL_ANSWER = "no_final_text_answer"
    HOLDS_TURN_MARKER = "text_holds_end_of_turn_marker"
    TOO_LONG = "longer_than_max_seq_length"
    DUPLICATE = "exact_duplicate"
    NOT_BEST_OF = "not_best_of_samples"


DROP_DESCRIPTIONS = {
    DropReason.INVALID_RECORD: "invalid record (bad JSON, unknown schema, missing fields)",
    DropReason.REDACTED: "secrets were withheld from it (--drop-redacted)",
    DropReason.TOOL_INFRA_ERROR: "a tool result is an infrastructure error (time limit, crash), not the tool's answer",
    DropReason.NOT_FINAL_ANSWER: "status is not final_answer",
    DropReason.FAILED_VERIFICATION: "failed verification (the answer is wrong)",
    DropReason.UNVERIFIED: "unverified (no reference answer or verdict)",
    DropReason.BAD_TOOL_RESULT: "a tool result is missing, empty or a placeholder",
    DropReason.ARGUMENTS_NOT_JSON: "tool-call arguments are not a JSON object",
    DropReason.INVALID_ARGUMENTS: "unknown tool or arguments that fail its schema",
    DropReason.REPEATED_CALL: "the same call (name + arguments) repeated",
    DropReason.TOO_MANY_TOOL_CALLS: "more tool calls than max_tool_calls",
    DropReason.NO_FINAL_ANSWER: "no final text answer",
    DropReason.HOLDS_TURN_MARKER: "an assistant turn's text holds the student template's end-of-turn marker",
    DropReason.TOO_LONG: "longer than max_seq_length tokens",
    DropReason.DUPLICATE: "exact duplicate of a kept conversation",
    DropReason.NOT_BEST_OF: "another sample of the prompt was kept (best-of)",
}


class DroppedRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: int
    task_id: str | None = None
    sample: int = 0
    reason: DropReason
    detail: str


class TokenStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: int = 0
    max: int = 0
    mean: float = 0.0


class VerificationStats(PassRates):
    """How many answers were right, over every valid record (before any filter): shared.verdicts'
    PassRates (pass@1 and pass@k over the prompts with a verified sample, unverified ones apart)."""

    records: int = 0
    # pass@1 under its older name (0 when nothing was verified).
    pass_rate: float = 0.0


class ConvertReport(Record):
    """What `distill convert` kept and dropped; written to OUT/report.json."""

    source: str
    tokenizer: str
    out_dir: str
    format: Literal["chat", "text"]
    max_tool_calls: int
    max_seq_length: int
    split_ratios: tuple[float, float, float]
    require_verified: bool = False
    best_of: bool = False
    drop_redacted: bool = False
    # Every tool result of the kept conversations was written as PLACEHOLDER_RESULT (a counterfactual).
    placeholder_results: bool = False
    records: int = 0
    kept: int = 0
    dropped: dict[DropReason, int] = Field(default_factory=lambda: {r: 0 for r in DropReason})
    splits: dict[str, int] = Field(default_factory=lambda: {s: 0 for s in SPLITS})
    tokens: TokenStats = Field(default_factory=TokenStats)
    verification: VerificationStats = Field(default_factory=VerificationStats)
    # Turns with the teacher's reasoning in the kept conversations, and what `--reasoning` did.
    reasoning: ReasoningStats = Field(default_factory=ReasoningStats)
    drops: list[DroppedRecord] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)


# --- reading ---------------------------------------------------------------------------------


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
class _Line:
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


def read_conversations(path: Path) -> Iterator[_Line]:
    """Stream a conversations file: one _Line per non-blank line, with a parsed record or an error."""
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            offset += len(raw)
            if raw.strip():
                yield _parse_line(str(path), number, raw, offset)


def _parse_line(path: str, number: int, raw: bytes, offset: int) -> _Line:
    data = parse_json_object(path, number, raw)
    if isinstance(data, LineError):
        return _Line(number=number, error=str(data), end_offset=offset)
    if is_rendered_text(data):
        try:
            data = parse_rendered(data["text"])
        except NotThisFamily as problem:
            return _Line(number=number, error=str(LineError(path, number, "text", str(problem))), end_offset=offset)
    if is_plain_chat(data):
        trajectory = plain_trajectory(path, number, data)
        if isinstance(trajectory, LineError):
            return _Line(number=number, error=str(trajectory), end_offset=offset)
        return _Line(number=number, conversation=trajectory, end_offset=offset)
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        reason = "is required" if version is None else f"unsupported version {version!r} (this distill reads {SCHEMA_VERSION})"
        return _Line(number=number, error=str(LineError(path, number, "schema_version", reason)), end_offset=offset)
    try:
        record = _RawConversation.model_validate(data)
    except ValidationError as error:
        return _Line(number=number, error=str(line_error(path, number, error)), end_offset=offset)
    return _Line(number=number, conversation=record_trajectory(record), end_offset=offset)


def record_trajectory(record: Any) -> Trajectory:
    """A distill record (validated as _RawConversation) as a Trajectory; its other fields ride along."""
    extra = record.model_dump(mode="json", exclude={"messages", "tools", "task_id", "status", "error"})
    return Trajectory(task_id=record.task_id, messages=record.messages, tools=record.tools,
                      status=record.status, error=record.error, sample=record.sample, verdict=record.verdict,
                      extra=extra)


# --- filtering -------------------------------------------------------------------------------


class _Rejected(Exception):
    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def training_messages(conversation: Trajectory, *, max_tool_calls: int) -> list[dict[str, Any]]:
    """The conversation's messages ready for training, or _Rejected with the first reason."""
    for turn in conversation.messages:
        if turn.role == "tool" and is_infra_error(turn.content, turn.outcome):
            detail = f"tool call {turn.tool_call_id!r} ({turn.name}): {(turn.content or '')[:200]}"
            raise _Rejected(DropReason.TOOL_INFRA_ERROR, detail)
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
    problem = tool_result_problem(messages, allow_empty=False)
    if problem is not None:
        raise _Rejected(DropReason.BAD_TOOL_RESULT, problem)


def _arguments_object(name: str, arguments: Any) -> dict[str, Any]:
    try:
        return arguments_object(name, arguments)
    except ArgumentsNotObject as problem:
        raise _Rejected(DropReason.ARGUMENTS_NOT_JSON, str(problem)) from None


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
    """Deterministic split from the prompt id, so every attempt and sample of a prompt lands in the same split."""
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


@dataclass(frozen=True)
class _Kept:
    split: str
    payload: dict[str, Any]
    tokens: int
    line: int = 0
    task_id: str = ""
    sample: int = 0
    tool_calls: int = 0
    verdict: Verdict = field(default_factory=Verdict)
    # What happened to its turns' reasoning (trainer/thinking.py:count), added up when written.
    reasoning: dict[str, int] = field(default_factory=dict)
    # The files the answer names all appear in a tool result (see `grounded`).
    grounded: bool = False


_EXPECTED: TypeAdapter[Any] = TypeAdapter(Expected)


def final_text(conversation: Trajectory) -> str | None:
    """The closing assistant text (no tool calls after it), or None."""
    last = conversation.messages[-1] if conversation.messages else None
    if last is None or last.role != "assistant" or last.tool_calls or not isinstance(last.content, str):
        return None
    return last.content if last.content.strip() else None


def grounded(conversation: Trajectory) -> bool:
    """Whether the answer names files and every one of them appears in a tool result: an answer
    read off the tools, not a guess that happens to match."""
    named = named_files(final_text(conversation) or "")
    if not named:
        return False
    seen: set[str] = set()
    for message in conversation.messages:
        if message.role == "tool" and message.content:
            seen.update(named_files(message.content))
    return all(path in seen for path in named)


class Verification:
    """Each record's verdict (a later one from verdicts.jsonl wins), counted, and required if asked."""

    def __init__(self, later: dict[tuple[str, int], Verdict], *, require: bool, refuse_failed: bool = False) -> None:
        self.later = later
        self.require = require
        # best-of: a failed answer is never the one kept, whether or not verification is required.
        self.refuse_failed = refuse_failed
        self.outcomes: dict[str, list[bool | None]] = {}

    def verdict_of(self, conversation: Any) -> Verdict:
        """The record's verdict (a reference checked again by today's rule), counted for pass@k."""
        verdict = self.later.get((conversation.task_id, conversation.sample), conversation.verdict)
        expected = conversation.extra.get("expected")
        if expected is not None and verdict.method != "judge" and verdict.passed is not False:
            answer = final_text(conversation) if conversation.status == "final_answer" else None
            verdict = reference_verdict(_EXPECTED.validate_python(expected), answer,
                                        prompt=conversation.extra.get("prompt"))
        self.outcomes.setdefault(conversation.task_id, []).append(verdict.passed)
        return verdict

    def check(self, verdict: Verdict) -> None:
        """With `require`, only a passed verdict goes on (with best-of, no failed one); _Rejected says why."""
        if verdict.passed or not (self.require or (self.refuse_failed and verdict.passed is False)):
            return
        reason = DropReason.UNVERIFIED if verdict.passed is None else DropReason.FAILED_VERIFICATION
        detail = verdict.detail or ("nothing verified the answer" if verdict.passed is None else "the answer is wrong")
        raise _Rejected(reason, f"{verdict.method or 'no verdict'}: {detail}"[:300])

    def stats(self) -> VerificationStats:
        rates = pass_rates(self.outcomes)
        return VerificationStats(**rates.model_dump(), records=rates.samples, pass_rate=rates.pass_at_1 or 0.0)


class BestOf:
    """One trajectory per prompt: passed before unverified (a failed one never gets here), then
    grounded (the files it names appear in a tool result) before not, then the fewest tool calls,
    then the fewest tokens, then the earliest line. Every other one is dropped."""

    OUTCOME_ORDER = {"passed": 0, "unverified": 1, "failed": 2}

    def __init__(self) -> None:
        self.best: dict[str, _Kept] = {}

    @classmethod
    def rank(cls, kept: _Kept) -> tuple[int, bool, int, int, int]:
        return (cls.OUTCOME_ORDER[kept.verdict.outcome], not kept.grounded, kept.tool_calls, kept.tokens, kept.line)

    def offer(self, kept: _Kept) -> DroppedRecord | None:
        """Hold `kept` if it beats the prompt's best so far; returns the loser as a drop, if any."""
        current = self.best.get(kept.task_id)
        if current is None:
            self.best[kept.task_id] = kept
            return None
        winner, loser = (kept, current) if self.rank(kept) < self.rank(current) else (current, kept)
        self.best[kept.task_id] = winner
        detail = (f"sample {winner.sample} (line {winner.line}: {winner.verdict.outcome}, "
                  f"{'grounded' if winner.grounded else 'not grounded'}, {winner.tool_calls} tool calls, "
                  f"{winner.tokens} tokens) was kept")
        return DroppedRecord(line=loser.line, task_id=loser.task_id, sample=loser.sample,
                             reason=DropReason.NOT_BEST_OF, detail=detail)

    def winners(self) -> list[_Kept]:
        return sorted(self.best.values(), key=lambda kept: kept.line)


ProgressCallback = Callable[[int, int, int], Any]
"""Called as bytes are read: (bytes read so far, kept, dropped)."""


def convert(
    source: Path,
    tokenizer: str | Path,
    out: Path,
    *,
    max_tool_calls: int | None = None,
    max_seq_length: int = 2048,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    format: Literal["chat", "text"] = "chat",  # mirrors the --format flag
    skip_invalid: bool = False,
    require_verified: bool = False,
    best_of: bool = False,
    reasoning: ReasoningMode = "auto",
    on_progress: ProgressCallback | None = None,
    drop_redacted: bool = False,
    placeholder_results: bool = False,
) -> ConvertReport:
    """Filter a run's conversations and write OUT/{train,valid,test}.jsonl plus OUT/report.json.

    `source` is a run directory (its conversations.jsonl) or a conversations JSONL file, read as
    a stream. `tokenizer` is the student model (path or id): rendering and token counts use its
    chat template. `format="chat"` writes mlx-lm's `{"messages", "tools"}` lines, `"text"` the
    rendered `{"text"}`. Bad lines raise TrainerError (`file:line: field X: reason`) unless
    `skip_invalid`, which counts them as dropped. Empty splits are not written (mlx-lm cannot
    read an empty file). `require_verified` drops every trajectory whose verdict is not passed;
    `best_of` keeps one trajectory per prompt (see `BestOf`). Verdicts come from the records and
    from the verdicts.jsonl beside the conversations file. `reasoning` keeps or drops each turn's
    reasoning (trainer/thinking.py; auto: keep for a thinking template). `placeholder_results`
    writes the same kept conversations with every tool result replaced by PLACEHOLDER_RESULT,
    after every filter (which judged the real results): the counterfactual dataset that shows
    what real results are worth, made on purpose. Returns the report; the caller shows it.
    """
    path = conversations_path(source)
    if max_tool_calls is None:  # what generation allowed, so convert never drops what generate kept
        max_tool_calls = run_limits(path.parent).max_tool_calls
    ratios = _check_options(max_tool_calls, max_seq_length, format, split)
    if placeholder_results and format != "chat":
        raise TrainerError("--placeholder-results writes chat data only (--format chat)")
    student = load_tokenizer(tokenizer)
    thinks = template_thinks(student)
    try:
        applied = resolve(reasoning, thinks)
    except ValueError as error:
        raise TrainerError(str(error)) from None
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
        require_verified=require_verified,
        best_of=best_of,
        reasoning=ReasoningStats(mode=reasoning, applied=applied, template_thinks=thinks),
        drop_redacted=drop_redacted,
        placeholder_results=placeholder_results,
    )
    verification = Verification(latest_verdicts(path.parent / VERDICTS_FILE), require=require_verified,
                                refuse_failed=best_of)
    lengths: list[int] = []
    picker = BestOf() if best_of else None
    outcome: _Kept | DroppedRecord | None
    with _SplitFiles(out, placeholder_results) as files:
        for outcome in _filtered(path, student, report, skip_invalid, verification, on_progress):
            if isinstance(outcome, _Kept) and picker is not None:
                outcome = picker.offer(outcome)
            if isinstance(outcome, DroppedRecord):
                report.drops.append(outcome)
            elif outcome is not None:
                files.write(outcome)
                lengths.append(outcome.tokens)
                add_reasoning(report.reasoning, outcome.reasoning)
        for kept in picker.winners() if picker is not None else []:
            files.write(kept)
            lengths.append(kept.tokens)
            add_reasoning(report.reasoning, kept.reasoning)
        report.splits = files.finish()
    report.verification = verification.stats()
    _summarize(report, lengths)
    (out / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


def _check_options(
    max_tool_calls: int, max_seq_length: int, format: str, split: tuple[float, float, float]
) -> tuple[float, float, float]:
    if max_tool_calls < 0:
        raise TrainerError(f"max_tool_calls must be >= 0, not {max_tool_calls}")
    if max_seq_length < 2:
        raise TrainerError(f"max_seq_length must be >= 2, not {max_seq_length}")
    if format not in ("chat", "text"):
        raise TrainerError(f"format must be 'chat' or 'text', not {format!r}")
    return _check_ratios(tuple(split))  # type: ignore[arg-type]


def _filtered(
    path: Path,
    tokenizer: Any,
    report: ConvertReport,
    skip_invalid: bool,
    verification: Verification,
    on_progress: ProgressCallback | None,
) -> Iterator[_Kept | DroppedRecord]:
    """Every line of the file, judged in order: kept (with its split) or dropped (with the reason)."""
    seen_texts: set[str] = set()
    kept = dropped = 0
    for line in read_conversations(path):
        report.records += 1
        outcome = _convert_one(line, tokenizer, report, seen_texts, skip_invalid, verification)
        kept, dropped = (kept, dropped + 1) if isinstance(outcome, DroppedRecord) else (kept + 1, dropped)
        yield outcome
        if on_progress is not None:
            on_progress(line.end_offset, kept, dropped)


def _redacted(conversation: Trajectory) -> bool:
    """A record that counted redactions, or any line whose messages hold a tag (a plain dataset)."""
    return bool(conversation.extra.get("redactions")) or any(
        TAG.search(message.content) for message in conversation.messages if isinstance(message.content, str)
    )


def _summarize(report: ConvertReport, lengths: list[int]) -> None:
    reasons = Counter(drop.reason for drop in report.drops)
    report.kept = len(lengths)
    report.dropped = {reason: reasons.get(reason, 0) for reason in DropReason}
    if lengths:
        report.tokens = TokenStats(total=sum(lengths), max=max(lengths), mean=round(sum(lengths) / len(lengths), 1))


def with_placeholder_results(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat line with every tool message's content replaced by PLACEHOLDER_RESULT (the rest kept)."""
    messages = [{**m, "content": PLACEHOLDER_RESULT} if m.get("role") == "tool" else m for m in payload["messages"]]
    return {**payload, "messages": messages}


class _SplitFiles:
    """The three split files, written under temporary names and renamed only when complete."""

    def __init__(self, out: Path, placeholder_results: bool = False) -> None:
        self.out = out
        self.placeholder_results = placeholder_results
        self.temp = {name: out / f".{name}.jsonl.partial" for name in SPLITS}
        self.counts = {name: 0 for name in SPLITS}
        self.handles: dict[str, Any] = {}

    def __enter__(self) -> _SplitFiles:
        self.handles = {name: self.temp[name].open("w", encoding="utf-8") for name in SPLITS}
        return self

    def write(self, kept: _Kept) -> None:
        payload = with_placeholder_results(kept.payload) if self.placeholder_results else kept.payload
        self.handles[kept.split].write(json.dumps(payload, ensure_ascii=False) + "\n")
        self.counts[kept.split] += 1

    def finish(self) -> dict[str, int]:
        self._close()
        _balance(self.temp, self.counts)
        for name in SPLITS:
            final = self.out / f"{name}.jsonl"
            if self.counts[name]:
                os.replace(self.temp[name], final)
            else:
                self.temp[name].unlink(missing_ok=True)
                final.unlink(missing_ok=True)
        return dict(self.counts)

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self._close()
        if error is not None:
            for partial in self.temp.values():
                partial.unlink(missing_ok=True)

    def _close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def _convert_one(
    line: _Line,
    tokenizer: Any,
    report: ConvertReport,
    seen_texts: set[str],
    skip_invalid: bool,
    verification: Verification,
) -> DroppedRecord | _Kept:
    if line.error is not None:
        if not skip_invalid:
            raise TrainerError(line.error)
        return DroppedRecord(line=line.number, reason=DropReason.INVALID_RECORD, detail=line.error)
    conversation = line.conversation
    assert conversation is not None  # a line without an error holds one
    if report.drop_redacted and _redacted(conversation):
        return DroppedRecord(line=line.number, task_id=conversation.task_id, sample=conversation.sample,
                             reason=DropReason.REDACTED, detail=f"{conversation.extra.get('redactions') or 'some'} withheld")
    verdict = verification.verdict_of(conversation)
    try:
        if conversation.status == "final_answer":
            # After the status (a conversation that never ended has no answer to verify), before
            # every other check: a wrong answer is not data, whatever its shape.
            verification.check(verdict)
        original = training_messages(conversation, max_tool_calls=report.max_tool_calls)
        messages = with_reasoning(original, report.reasoning.applied, report.reasoning.template_thinks)
        tools = conversation.tools
        text = render_text(tokenizer, messages, tools)
        if report.format == "chat":
            # Training masks every assistant turn of this rendering: a template whose turns
            # cannot be found exactly stops here, not hours later in `distill train`.
            try:
                assistant_spans(tokenizer, messages, tools)
            except MarkerInText as marker:
                raise _Rejected(DropReason.HOLDS_TURN_MARKER, str(marker)) from None
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
        return DroppedRecord(line=line.number, task_id=conversation.task_id, sample=conversation.sample,
                             reason=rejected.reason, detail=rejected.detail)
    except TrainerError as error:
        raise TrainerError(f"{report.source}:{line.number}: {error}") from None
    payload: dict[str, Any] = {"text": text} if report.format == "text" else {"messages": messages}
    if report.format == "chat" and tools:
        payload["tools"] = tools
    calls = sum(len(message.get("tool_calls") or []) for message in messages)
    thoughts = count_reasoning(report.reasoning.applied, original, text)
    return _Kept(split_of(conversation.task_id, report.split_ratios), payload, length, line=line.number,
                 task_id=conversation.task_id, sample=conversation.sample, tool_calls=calls, verdict=verdict,
                 reasoning=thoughts, grounded=grounded(conversation))
