"""Which trajectories are worth imitating: the checks that drop one with its reason, the verdict a
kept one must carry (`Verification`), and the one sample of a prompt that `--best-of` keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter

from distill.shared.records import (
    is_infra_error,
    tool_result_problem,
)
from distill.shared.verdicts import (
    Expected,
    Verdict,
    named_files,
    pass_rates,
    reference_verdict,
)
from distill.trainer.chat_lines import (
    ArgumentsNotObject,
    Trajectory,
    arguments_object,
)
from distill.trainer.convert_report import DroppedRecord, DropReason, VerificationStats
from distill.trainer.render import (
    canonical_json,
    chat_messages,
)
from distill.trainer.schema_check import argument_errors, tool_schemas


class Rejected(Exception):
    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def training_messages(conversation: Trajectory, *, max_tool_calls: int) -> list[dict[str, Any]]:
    """The conversation's messages ready for training, or Rejected with the first reason."""
    for turn in conversation.messages:
        if turn.role == "tool" and is_infra_error(turn.content, turn.outcome):
            detail = f"tool call {turn.tool_call_id!r} ({turn.name}): {(turn.content or '')[:200]}"
            raise Rejected(DropReason.TOOL_INFRA_ERROR, detail)
    if conversation.status != "final_answer":
        suffix = f": {conversation.error}" if conversation.error else ""
        raise Rejected(DropReason.NOT_FINAL_ANSWER, f"status {conversation.status}{suffix}"[:300])
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
                raise Rejected(DropReason.INVALID_ARGUMENTS, f"unknown tool {function['name']!r}")
            problems = argument_errors(schemas[function["name"]], function["arguments"])
            if problems:
                raise Rejected(DropReason.INVALID_ARGUMENTS, f"{function['name']}: {problems[0]}"[:300])
            key = canonical_json([function["name"], function["arguments"]])
            if key in seen:
                shown = canonical_json(function["arguments"])[:200]
                raise Rejected(DropReason.REPEATED_CALL, f"{function['name']} called twice with {shown}")
            seen.add(key)
            calls += 1
    if calls > max_tool_calls:
        raise Rejected(DropReason.TOO_MANY_TOOL_CALLS, f"{calls} tool calls > max_tool_calls {max_tool_calls}")
    last = messages[-1] if messages else {}
    if last.get("role") != "assistant" or last.get("tool_calls") or not (last.get("content") or "").strip():
        raise Rejected(DropReason.NO_FINAL_ANSWER, f"the last message is {_describe(last)}")
    return chat_messages(messages)


def _check_tool_results(messages: list[dict[str, Any]]) -> None:
    problem = tool_result_problem(messages, allow_empty=False)
    if problem is not None:
        raise Rejected(DropReason.BAD_TOOL_RESULT, problem)


def _arguments_object(name: str, arguments: Any) -> dict[str, Any]:
    try:
        return arguments_object(name, arguments)
    except ArgumentsNotObject as problem:
        raise Rejected(DropReason.ARGUMENTS_NOT_JSON, str(problem)) from None


def _describe(message: dict[str, Any]) -> str:
    if not message:
        return "missing"
    if message.get("tool_calls"):
        return "an assistant tool call"
    if message.get("role") != "assistant":
        return f"a {message.get('role')} message"
    return "an empty assistant message"


@dataclass(frozen=True)
class Kept:
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
        """With `require`, only a passed verdict goes on (with best-of, no failed one); Rejected says why."""
        if verdict.passed or not (self.require or (self.refuse_failed and verdict.passed is False)):
            return
        reason = DropReason.UNVERIFIED if verdict.passed is None else DropReason.FAILED_VERIFICATION
        detail = verdict.detail or ("nothing verified the answer" if verdict.passed is None else "the answer is wrong")
        raise Rejected(reason, f"{verdict.method or 'no verdict'}: {detail}"[:300])

    def stats(self) -> VerificationStats:
        rates = pass_rates(self.outcomes)
        return VerificationStats(**rates.model_dump(), records=rates.samples, pass_rate=rates.pass_at_1 or 0.0)


class BestOf:
    """One trajectory per prompt: passed before unverified (a failed one never gets here), then
    grounded (the files it names appear in a tool result) before not, then the fewest tool calls,
    then the fewest tokens, then the earliest line. Every other one is dropped."""

    OUTCOME_ORDER = {"passed": 0, "unverified": 1, "failed": 2}

    def __init__(self) -> None:
        self.best: dict[str, Kept] = {}

    @classmethod
    def rank(cls, kept: Kept) -> tuple[int, bool, int, int, int]:
        return (cls.OUTCOME_ORDER[kept.verdict.outcome], not kept.grounded, kept.tool_calls, kept.tokens, kept.line)

    def offer(self, kept: Kept) -> DroppedRecord | None:
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

    def winners(self) -> list[Kept]:
        return sorted(self.best.values(), key=lambda kept: kept.line)
