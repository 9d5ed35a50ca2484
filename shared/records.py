"""Every record that crosses a process or a file boundary.

Each record carries `schema_version` and is validated when read, so a file written by an older
distill fails with a clear message instead of a KeyError three modules later.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill.shared.keys import task_key
from distill.shared.settings import GenerationLimits
from distill.shared.verdicts import Expected, Verdict

SCHEMA_VERSION = 1

# The files of a run folder (data/runs/<run>/), written by the coordinator, read by everyone else.
CONVERSATIONS_FILE = "conversations.jsonl"
DEAD_FILE = "dead.jsonl"
MANIFEST_FILE = "manifest.json"

# Texts that earlier pipelines wrote instead of a real tool result (docs/architecture.md). A record that
# carries one of these taught the 7B student to call tools forever, so it is refused outright.
PLACEHOLDER_RESULTS = frozenset(
    {
        "[tool execution completed]",
        "tool execution completed",
        "[tool result]",
        "none",
        "null",
    }
)


# pydantic-ai's own tool time limit, as records written before tool outcomes existed show it
# (`{"error":"Timed out after 5.0 seconds."}`): the machine's overload, not the tool's answer.
LEGACY_TOOL_TIMEOUT = re.compile(r'(\{"error":\s*")?Timed out after [0-9.]+ seconds\.("\})?(\s+Fix the errors and try again\.)?')


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION


class PromptTask(Record):
    """One prompt as it travels through the tasks stream."""

    task_id: str
    run: str
    prompt: str = Field(min_length=1)
    system: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    source_line: int = 0
    # The reference answer the final answer is checked against (shared/verdicts.py).
    expected: Expected | None = None
    # Which of the prompt's samples this is (`distill generate --samples N`: 0 .. N-1).
    sample: int = Field(default=0, ge=0)
    # Turns after the prompt that the teacher continues from: assistant tool calls, each answered
    # by its real results (`distill repair --continue-with`). Empty: the teacher starts fresh.
    history: list[ChatMessage] = Field(default_factory=list)

    @property
    def key(self) -> str:
        """What runs exactly once: this sample of this prompt."""
        return task_key(self.task_id, self.sample)

    def for_sample(self, sample: int) -> PromptTask:
        return self.model_copy(update={"sample": sample})

    @staticmethod
    def stable_id(prompt: str, system: str | None, history: Sequence[ChatMessage] = ()) -> str:
        body: list[Any] = [prompt, system]
        if history:
            # Only when present, so prompts without a history keep the ids older runs gave them.
            body.append([message.model_dump(mode="json", exclude_none=True) for message in history])
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return f"p-{digest[:16]}"

    def content_digest(self) -> str:
        """What "the same prompt" means when an id shows up twice."""
        parts: list[Any] = [self.prompt, self.system, self.metadata]
        if self.expected is not None:
            # Only when present, so prompts without a reference keep the digests older runs stored.
            parts.append(self.expected if isinstance(self.expected, str) else self.expected.model_dump())
        if self.history:
            parts.append([message.model_dump(mode="json", exclude_none=True) for message in self.history])
        body = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:24]


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    # A JSON object, never a JSON string: Qwen-style templates double-encode strings (mlx-examples #1053).
    arguments: dict[str, Any]


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


# How a tool call ended. `ok`: the tool answered, finding nothing included ("no matches").
# `tool_error`: the tool's own real answer that the input is wrong (no such file, bad regex, a path
# outside the workspace, a call that failed validation): a result worth learning from. `infra_error`: our machinery failed (time limit hit, the tool
# process died, overload): not a result, never shown to the teacher, never in a conversation.
ToolOutcome = Literal["ok", "tool_error", "infra_error"]


class ChatMessage(BaseModel):
    """One message in OpenAI chat format, plus `outcome` on tool messages (not sent to any model)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    # Tool messages only; None in records written before distill kept it.
    outcome: ToolOutcome | None = None
    # Assistant messages only: the teacher's thinking before this turn, never part of `content`
    # (shared/reasoning.py). None when the teacher did not think, and in older records.
    reasoning: str | None = None

    @model_validator(mode="after")
    def _check_shape(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        if self.role != "assistant" and self.tool_calls:
            raise ValueError("only assistant messages carry tool_calls")
        if self.role != "tool" and self.outcome is not None:
            raise ValueError("only tool messages carry an outcome")
        if self.role != "assistant" and self.reasoning is not None:
            raise ValueError("only assistant messages carry reasoning")
        return self


class TeacherInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoint: str
    base_url: str
    model: str


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    # The part of output_tokens that was reasoning: as the server reported it
    # (completion_tokens_details.reasoning_tokens), else estimated from the share of characters.
    reasoning_tokens: int = 0
    tool_calls: int = 0
    # Calls the tools refused before running (unknown tool, arguments that don't validate).
    invalid_tool_calls: int = 0


class Timings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    started_at: datetime
    finished_at: datetime
    duration_s: float
    # Time spent waiting on the teacher, summed over its requests.
    teacher_s: float = 0.0


class WorkerInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str
    actor: str
    pid: int
    # Ray's node id: tells apart several Ray nodes on one host (hostnames are then equal).
    ray_node_id: str | None = None


ConversationStatus = Literal["final_answer", "tool_limit", "error"]


class Conversation(Record):
    """A captured teacher conversation whose every tool call carries its real result."""

    task_id: str
    sample: int = Field(default=0, ge=0)
    run: str
    prompt: str
    status: ConversationStatus
    error: str | None = None
    messages: list[ChatMessage]
    tools: list[dict[str, Any]]
    teacher: TeacherInfo
    usage: Usage
    timings: Timings
    attempt: int = Field(ge=1)
    worker: WorkerInfo
    created_at: datetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)
    # pydantic-ai's own history (ModelMessagesTypeAdapter JSON) for lossless replay.
    raw_messages: list[Any] = Field(default_factory=list)
    # The prompt's reference answer, kept so the record can be checked again without the prompts file.
    expected: Expected | None = None
    # Whether the answer is right, decided when the conversation ended; RUN/verdicts.jsonl can
    # hold a later one (`distill verify`), which readers prefer.
    verdict: Verdict = Field(default_factory=Verdict)

    @property
    def key(self) -> str:
        return task_key(self.task_id, self.sample)

    @property
    def final_answer(self) -> str | None:
        """The last assistant message's text when it ends the conversation, else None."""
        last = self.messages[-1] if self.messages else None
        if last is None or last.role != "assistant" or last.tool_calls or not (last.content or "").strip():
            return None
        return last.content

    @field_validator("messages")
    @classmethod
    def _every_call_has_its_real_result(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        check_tool_results(messages)
        return messages


def check_tool_results(messages: list[ChatMessage]) -> None:
    """Raise if any tool call lacks exactly one real result (placeholders taught the student to loop)."""
    problem = tool_result_problem(messages, allow_empty=True)
    if problem is not None:
        raise ValueError(problem)


def tool_result_problem(messages: Sequence[ChatMessage | Mapping[str, Any]], *, allow_empty: bool) -> str | None:
    """What is wrong with the pairing of tool calls and results, or None when every call has one real result.

    The one rule for records (ChatMessage) and raw lines (dicts) alike. `allow_empty=False` also
    refuses an empty result: real built-in tools always say something ("no matches"), so an empty
    one in a dataset means the result was lost.
    """
    calls: set[str] = set()
    answered: set[str] = set()
    for message in messages:
        role, tool_calls, call_id, content, outcome = _message_fields(message)
        for tool_call_id in tool_calls:
            if tool_call_id in calls:
                return f"tool call id {tool_call_id!r} is used twice"
            calls.add(tool_call_id)
        if role != "tool":
            continue
        if call_id not in calls:
            return f"tool result {call_id!r} answers no earlier call"
        if call_id in answered:
            return f"tool call {call_id!r} has two results"
        if content is None:
            return f"tool call {call_id!r} has a null result"
        if not allow_empty and not content.strip():
            return f"tool call {call_id!r} has an empty result"
        if is_placeholder(content):
            return f"tool call {call_id!r} has a placeholder result {content.strip()!r}"
        # Only the explicit mark: an older record worded like a time-out still loads (convert drops it).
        if outcome == "infra_error":
            return f"tool call {call_id!r} has no real result (infrastructure error)"
        answered.add(call_id)
    missing = sorted(calls - answered)
    if missing:
        return f"no result for tool call(s) {', '.join(missing)}"
    return None


def continuation_problem(turns: Sequence[ChatMessage]) -> str | None:
    """What keeps `turns` from being a history a teacher can continue, or None.

    A history is what follows the prompt: assistant turns that call tools, each call answered by
    its real result, ending on results, so that what comes next is the teacher's own move.
    """
    if not turns:
        return "is empty"
    for index, message in enumerate(turns):
        if message.role not in ("assistant", "tool"):
            return f"message {index} is a {message.role} message; a history holds assistant and tool turns only"
        if message.role == "assistant" and not message.tool_calls:
            return f"message {index} is an assistant answer; a history ends before the answer"
    if turns[-1].role != "tool":
        return "must end with tool results"
    return tool_result_problem(turns, allow_empty=False)


def _message_fields(message: ChatMessage | Mapping[str, Any]) -> tuple[str, list[str], str, str | None, str | None]:
    if isinstance(message, ChatMessage):
        calls = [c.id for c in message.tool_calls or []]
        return message.role, calls, message.tool_call_id or "", message.content, message.outcome
    calls = [call["id"] for call in message.get("tool_calls") or []]
    return (message.get("role", ""), calls, message.get("tool_call_id") or "", message.get("content"),
            message.get("outcome"))


def is_placeholder(text: str) -> bool:
    return text.strip().lower() in PLACEHOLDER_RESULTS


def is_infra_error(content: str | None, outcome: str | None) -> bool:
    """A tool message that is not the tool's answer: marked so, or (no outcome: an older record)
    worded as pydantic-ai's own tool time limit."""
    if outcome is not None:
        return outcome == "infra_error"
    return content is not None and LEGACY_TOOL_TIMEOUT.fullmatch(content.strip()) is not None


class DeadLetter(Record):
    """A prompt that could not become a conversation, and why."""

    task_id: str
    sample: int = Field(default=0, ge=0)
    run: str
    prompt: str
    reason: str
    error_type: str
    attempts: int
    # What the last attempt had captured before it failed, kept for debugging.
    partial_messages: list[dict[str, Any]] = Field(default_factory=list)
    teacher: TeacherInfo | None = None
    worker: WorkerInfo | None = None
    created_at: datetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return task_key(self.task_id, self.sample)


ResultKind = Literal["conversation", "dead"]


class RunManifest(Record):
    """What `distill status` needs to describe a run, kept in the run folder."""

    run: str
    prompts_file: str
    prompts_total: int = 0
    invalid_lines: int = 0
    redis_url_redacted: str | None = None
    embedded_redis: bool = True
    started_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    finished: bool = False
    # The limits the run's conversations were generated under (convert and eval default to them).
    # Missing in manifests from older versions.
    limits: GenerationLimits | None = None


def run_limits(run_dir: Path) -> GenerationLimits:
    """The limits a run folder's conversations were generated under; the defaults where unknown.

    A folder without a readable manifest (a plain conversations file, a run from an older
    version) gets `GenerationLimits()`: the same defaults `distill generate` uses.
    """
    try:
        manifest = RunManifest.model_validate_json((run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return GenerationLimits()
    return manifest.limits or GenerationLimits()
