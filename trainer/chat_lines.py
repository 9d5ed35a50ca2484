"""Conversations as they stand in files, before any check: distill's records and plain chat lines.

Plain chat lines are what mlx-lm and most datasets write: `{"messages": [...], "tools": [...]}`
in OpenAI format, tool-call arguments as JSON strings or objects, ids often missing (Qwen-style
templates never render them, so many datasets leave them out). A plain line becomes the same
`Trajectory` a distill record gives, with ids derived from the content, so convert and repair
apply one set of rules to both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distill.shared.errors import LineError, line_error
from distill.shared.reasoning import split_thinking
from distill.shared.records import ToolOutcome
from distill.shared.verdicts import Verdict


class RawFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    # Strings are accepted here and parsed later, so "arguments as a JSON string" becomes a drop
    # reason (or is repaired) instead of an invalid record.
    arguments: dict[str, Any] | str | None = None


class RawToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["function"] = "function"
    function: RawFunction


class RawMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[RawToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    # distill's records only (shared/records.py:ToolOutcome); absent in older records and plain chat.
    outcome: ToolOutcome | None = None
    # Assistant turns: the teacher's thinking, kept apart from content (shared/reasoning.py).
    reasoning: str | None = None


@dataclass
class Trajectory:
    """What convert and repair need of a conversation, whichever file it came from."""

    task_id: str
    messages: list[RawMessage]
    tools: list[dict[str, Any]]
    status: str = "final_answer"
    error: str | None = None
    # Which sample of its prompt, and whether its answer is right (a plain line: 0, and open).
    sample: int = 0
    verdict: Verdict = field(default_factory=Verdict)
    # Fields of a distill record that a plain line does not have; kept for repair's output.
    extra: dict[str, Any] = field(default_factory=dict)


# --- plain chat lines ------------------------------------------------------------------------


class _PlainFunction(BaseModel):
    # Datasets carry extra keys of their own; what a template renders is all that matters here.
    model_config = ConfigDict(extra="ignore")

    name: str
    arguments: dict[str, Any] | str | None = None


class _PlainToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    type: Literal["function"] = "function"
    function: _PlainFunction


class _PlainMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[_PlainToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    # Reasoning as datasets and servers write it (shared/reasoning.py:REASONING_FIELDS).
    reasoning_content: str | None = None
    reasoning: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        """OpenAI allows content as a list of parts; only text parts can be trained on."""
        if isinstance(value, list):
            texts = [part.get("text", "") for part in value if isinstance(part, dict) and part.get("type") == "text"]
            if len(texts) != len(value):
                raise ValueError("only text content parts are supported")
            return "".join(texts)
        return value


class _PlainLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, min_length=1)
    messages: list[_PlainMessage] = Field(min_length=1)
    tools: list[dict[str, Any]] = Field(default_factory=list)


class ArgumentsNotObject(ValueError):
    """Tool-call arguments that are not a JSON object (or a JSON string holding one)."""


def arguments_object(name: str, arguments: Any) -> dict[str, Any]:
    """Tool-call arguments as a JSON object; a JSON string is decoded (templates would double-encode it)."""
    if isinstance(arguments, dict):
        return arguments
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    try:
        decoded = json.loads(arguments)
    except json.JSONDecodeError as error:
        raise ArgumentsNotObject(f"{name}: arguments are not JSON ({error.msg})") from None
    if not isinstance(decoded, dict):
        raise ArgumentsNotObject(f"{name}: arguments are JSON {type(decoded).__name__}, not an object")
    return decoded


def is_plain_chat(data: dict[str, Any]) -> bool:
    """A line without distill's schema_version but with messages is a plain chat line."""
    return "schema_version" not in data and "messages" in data


def plain_trajectory(path: str, number: int, data: dict[str, Any]) -> Trajectory | LineError:
    try:
        line = _PlainLine.model_validate(data)
    except ValidationError as error:
        return line_error(path, number, error)
    messages = _with_ids(line.messages)
    if isinstance(messages, str):
        return LineError(path, number, "messages", messages)
    task_id = line.id or content_id(data.get("messages"), line.tools)
    return Trajectory(task_id=task_id, messages=messages, tools=line.tools)


def content_id(messages: Any, tools: Any) -> str:
    """A stable id for a line that has none: the same conversation always gets the same id."""
    body = json.dumps([messages, tools], sort_keys=True, ensure_ascii=False, default=str)
    return f"c-{hashlib.sha256(body.encode()).hexdigest()[:16]}"


def _with_ids(messages: list[_PlainMessage]) -> list[RawMessage] | str:
    """Give every call an id, and every tool message the id of the call it answers, by order.

    A tool message without `tool_call_id` answers the earliest call not yet answered, which is
    how templates that render no ids (Qwen's) read the conversation too.
    """
    out: list[RawMessage] = []
    unanswered: list[str] = []
    for index, message in enumerate(messages):
        calls = None
        if message.tool_calls:
            calls = []
            for position, call in enumerate(message.tool_calls):
                call_id = call.id or f"call_{index}_{position}"
                unanswered.append(call_id)
                calls.append(RawToolCall(id=call_id, function=RawFunction(**call.function.model_dump())))
        call_id = message.tool_call_id
        if message.role == "tool":
            if call_id is None:
                if not unanswered:
                    return f"message {index} is a tool result that answers no earlier call"
                call_id = unanswered[0]
            if call_id in unanswered:
                unanswered.remove(call_id)
        content, reasoning = message.content, None
        if message.role == "assistant":
            thought, content = split_thinking(message.content)
            reasoning = message.reasoning_content or message.reasoning or thought
        out.append(RawMessage(role=message.role, content=content, tool_calls=calls,
                              tool_call_id=call_id if message.role == "tool" else None, name=message.name,
                              reasoning=reasoning))
    return out
