"""One record as the page shows it: turns in order, each tool call beside its real result and timing.

Works on plain dicts. Timings come from fields the record carries itself when present (a tool
message's `duration_s`), otherwise from pydantic-ai's own history (`raw_messages`): a request
lasts from its ModelRequest's timestamp to the ModelResponse's, a tool from the response that
asked for it to the timestamp of its return part.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# Results longer than this are folded: the first lines show, the rest opens on a click.
FOLD_LINES = 12
FOLD_CHARS = 1500

# Keys a tool message (or a record-level entry) may use for how the call went and how long it ran.
OUTCOME_KEYS = ("outcome", "tool_outcome")
SECONDS_KEYS = ("duration_s", "seconds", "elapsed_s", "execution_s")


@dataclass
class ToolStep:
    call_id: str
    name: str
    arguments: str
    result: str | None = None
    outcome: str | None = None
    seconds: float | None = None

    @property
    def result_lines(self) -> int:
        return 0 if self.result is None else self.result.count("\n") + 1

    @property
    def folded(self) -> bool:
        return self.result is not None and (self.result_lines > FOLD_LINES or len(self.result) > FOLD_CHARS)

    @property
    def preview(self) -> str:
        if self.result is None:
            return ""
        head = "\n".join(self.result.splitlines()[:FOLD_LINES])
        return head[:FOLD_CHARS]

    @property
    def rest(self) -> str:
        """The folded part: what follows the preview."""
        if self.result is None:
            return ""
        preview = self.preview
        return self.result[len(preview):].lstrip("\n") if self.result.startswith(preview) else self.result


@dataclass
class Turn:
    role: str
    content: str | None = None
    calls: list[ToolStep] = field(default_factory=list)
    seconds: float | None = None
    note: str | None = None
    # An assistant turn's thinking, kept apart from its content (shared/reasoning.py).
    reasoning: str | None = None


# --- small readers ---------------------------------------------------------------------------


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round(max(0.0, (later - earlier).total_seconds()), 3)


def _first(mapping: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if mapping.get(key) is not None:
            return mapping[key]
    return None


def arguments_text(arguments: Any) -> str:
    """Arguments pretty-printed; a JSON string (or garbled text) is shown as it came."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return json.dumps(arguments, indent=2, ensure_ascii=False)


def final_answer(record: dict[str, Any]) -> str | None:
    messages = record.get("messages") or []
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "assistant" and not last.get("tool_calls"):
        return last.get("content")
    return None


def verdict_state(verdict: Any) -> str | None:
    """passed | failed | unverified, from a `{"passed": true|false|null, ...}` verdict; None if absent."""
    if not isinstance(verdict, dict) or "passed" not in verdict:
        return None
    passed = verdict.get("passed")
    return "passed" if passed is True else "failed" if passed is False else "unverified"


def tool_meta(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per tool-call id: `outcome` and `seconds` where the record states them itself.

    Read from the tool messages, or from a record-level `tool_outcomes` (a list of entries with
    `tool_call_id`, or a mapping by id); absent keys simply stay absent.
    """
    meta: dict[str, dict[str, Any]] = {}

    def take(call_id: Any, entry: Any) -> None:
        if not isinstance(call_id, str):
            return
        if isinstance(entry, str):
            meta.setdefault(call_id, {})["outcome"] = entry
        elif isinstance(entry, dict):
            found = meta.setdefault(call_id, {})
            outcome, seconds = _first(entry, OUTCOME_KEYS), _first(entry, SECONDS_KEYS)
            if outcome is not None:
                found["outcome"] = str(outcome)
            if isinstance(seconds, int | float):
                found["seconds"] = float(seconds)

    listed = record.get("tool_outcomes")
    if isinstance(listed, dict):
        for call_id, entry in listed.items():
            take(call_id, entry)
    elif isinstance(listed, list):
        for entry in listed:
            if isinstance(entry, dict):
                take(entry.get("tool_call_id"), entry)
    for message in record.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "tool":
            take(message.get("tool_call_id"), message)
    return {call_id: found for call_id, found in meta.items() if found}


@dataclass
class RawTimings:
    """Seconds per model request (in response order) and per tool call id, from raw_messages."""

    requests: list[tuple[float | None, list[str]]] = field(default_factory=list)
    tools: dict[str, float] = field(default_factory=dict)


def raw_timings(raw_messages: Any) -> RawTimings:
    timings = RawTimings()
    if not isinstance(raw_messages, list):
        return timings
    asked_at: dict[str, datetime | None] = {}
    sent: datetime | None = None
    for message in raw_messages:
        if not isinstance(message, dict):
            continue
        stamp = _timestamp(message.get("timestamp"))
        parts = [part for part in message.get("parts") or [] if isinstance(part, dict)]
        if message.get("kind") == "request":
            sent = stamp
            for part in parts:
                call_id = part.get("tool_call_id")
                if part.get("part_kind") in ("tool-return", "retry-prompt") and call_id in asked_at:
                    seconds = _seconds(_timestamp(part.get("timestamp")) or stamp, asked_at[call_id])
                    if seconds is not None:
                        timings.tools[call_id] = seconds
        elif message.get("kind") == "response":
            ids = [part["tool_call_id"] for part in parts if part.get("part_kind") == "tool-call" and part.get("tool_call_id")]
            timings.requests.append((_seconds(stamp, sent), ids))
            for call_id in ids:
                asked_at[call_id] = stamp
    return timings


# --- turns -----------------------------------------------------------------------------------


def conversation_turns(record: dict[str, Any]) -> list[Turn]:
    """A conversation's messages in order; tool results sit under the call that asked for them."""
    meta = tool_meta(record)
    timings = raw_timings(record.get("raw_messages"))
    results = {
        message.get("tool_call_id"): message
        for message in record.get("messages") or []
        if isinstance(message, dict) and message.get("role") == "tool"
    }
    shown: set[str] = set()
    turns: list[Turn] = []
    by_call = {call_id: seconds for seconds, ids in timings.requests for call_id in ids}
    text_only = [seconds for seconds, ids in timings.requests if not ids]
    for message in record.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = str(message.get("role"))
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id in shown:
                continue
            turns.append(Turn(role="tool", content=message.get("content"), note=f"result for {call_id!r}, which no call asked for"))
            continue
        turn = Turn(role=role, content=message.get("content"), reasoning=message.get("reasoning") or None)
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            call_id = str(call.get("id"))
            answer = results.get(call_id)
            step = ToolStep(
                call_id=call_id,
                name=str(function.get("name")),
                arguments=arguments_text(function.get("arguments")),
                result=answer.get("content") if answer else None,
                outcome=meta.get(call_id, {}).get("outcome"),
                seconds=meta.get(call_id, {}).get("seconds", timings.tools.get(call_id)),
            )
            shown.add(call_id)
            turn.calls.append(step)
        if role == "assistant":
            if turn.calls:
                turn.seconds = next((by_call[c.call_id] for c in turn.calls if c.call_id in by_call), None)
            elif text_only:
                turn.seconds = text_only.pop(0)
        turns.append(turn)
    return turns


def _part_text(part: dict[str, Any]) -> str:
    content = part.get("content")
    if isinstance(content, str):
        return content
    if content is None and part.get("part_kind") == "retry-prompt":
        return "(the tool asked the model to retry)"
    return json.dumps(content, indent=2, ensure_ascii=False, default=str)


def raw_turns(raw_messages: Any) -> list[Turn]:
    """pydantic-ai's own history (a dead letter's partial history) as turns; unanswered calls show so."""
    timings = raw_timings(raw_messages)
    turns: list[Turn] = []
    steps: dict[str, ToolStep] = {}
    responses = iter(timings.requests)
    for message in raw_messages if isinstance(raw_messages, list) else []:
        if not isinstance(message, dict):
            continue
        parts = [part for part in message.get("parts") or [] if isinstance(part, dict)]
        if message.get("kind") == "response":
            seconds, _ids = next(responses, (None, []))
            turn = Turn(role="assistant", seconds=seconds)
            texts = [str(part.get("content") or "") for part in parts if part.get("part_kind") == "text"]
            turn.content = "".join(texts) or None
            for part in parts:
                if part.get("part_kind") == "tool-call":
                    call_id = str(part.get("tool_call_id"))
                    step = ToolStep(call_id=call_id, name=str(part.get("tool_name")), arguments=arguments_text(part.get("args")))
                    step.seconds = timings.tools.get(call_id)
                    steps[call_id] = step
                    turn.calls.append(step)
            turns.append(turn)
            continue
        for part in parts:
            kind = part.get("part_kind")
            if kind in ("tool-return", "retry-prompt") and part.get("tool_call_id") in steps:
                steps[part["tool_call_id"]].result = _part_text(part)
            elif kind == "system-prompt":
                turns.append(Turn(role="system", content=_part_text(part)))
            elif kind in ("user-prompt", "retry-prompt"):
                turns.append(Turn(role="user", content=_part_text(part)))
    return turns
