"""pydantic-ai message history -> OpenAI chat messages with every tool call paired to its real result.

Calls and results are paired by `tool_call_id` and told apart by `part_kind`, never by attribute
sniffing: `hasattr(part, "tool_name")` matches calls *and* returns, which is how the seed's
pipeline lost every real result.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)

from distill.shared.reasoning import join_reasoning, reasoning_share, split_thinking
from distill.shared.records import ChatMessage, FunctionCall, ToolCall, ToolOutcome


@dataclass
class Captured:
    messages: list[ChatMessage]
    tool_calls: int
    invalid_tool_calls: int
    dropped_unanswered_calls: int
    final_text: str | None


def to_chat_messages(history: list[ModelMessage], outcomes: Mapping[str, ToolOutcome] | None = None) -> Captured:
    """`outcomes` (by tool_call_id) says how each tool call the tools answered ended; a call that
    pydantic-ai answered itself (unknown tool, arguments that fail the schema) is a `tool_error`."""
    outcomes = outcomes or {}
    messages: list[ChatMessage] = []
    invalid = 0
    # Some servers number calls per turn ("call_0" every time): a reused id is renamed where the
    # call is made, and the results that follow it answer the new name.
    ids = _CallIds()
    for message in history:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if part.part_kind == "system-prompt":
                    messages.append(ChatMessage(role="system", content=part.content))
                elif part.part_kind == "user-prompt":
                    messages.append(ChatMessage(role="user", content=_text(part.content)))
                elif part.part_kind == "tool-return":
                    # pydantic-ai v2 answers an unknown tool or bad arguments with a non-success return.
                    refused = getattr(part, "outcome", "success") != "success"
                    if refused:
                        invalid += 1
                    outcome = "tool_error" if refused else outcomes.get(part.tool_call_id, "ok")
                    messages.append(ChatMessage(role="tool", tool_call_id=ids.answer(part.tool_call_id),
                                                name=part.tool_name, content=part.model_response_str(), outcome=outcome))
                elif part.part_kind == "retry-prompt":
                    # What the teacher was told about its bad call is that call's real result.
                    if part.tool_name is not None:
                        invalid += 1
                        messages.append(ChatMessage(role="tool", tool_call_id=ids.answer(part.tool_call_id),
                                                    name=part.tool_name, content=part.model_response(),
                                                    outcome="tool_error"))
                    else:
                        messages.append(ChatMessage(role="user", content=part.model_response()))
                elif part.part_kind == "retry-feedback" and messages and messages[-1].role == "assistant":
                    # What the teacher was told about a reply it gave ("Please return text."). An
                    # empty reply leaves no turn, so the feedback on it is dropped with it.
                    messages.append(ChatMessage(role="user", content=part.model_response()))
        elif isinstance(message, ModelResponse):
            _append_response(messages, message, ids)
    messages, dropped = _drop_unanswered_calls(messages)
    calls = sum(len(m.tool_calls or []) for m in messages)
    final = messages[-1].content if messages and messages[-1].role == "assistant" and not messages[-1].tool_calls else None
    return Captured(messages, calls, invalid, dropped, final or None)


def to_model_messages(system: str, prompt: str, turns: Sequence[ChatMessage]) -> list[ModelMessage]:
    """The inverse of `to_chat_messages` for a conversation to continue: the system prompt, the
    prompt and its history (see `continuation_problem`) as pydantic-ai's own history, ending on the
    tool results that the teacher's next request carries."""
    history: list[ModelMessage] = [ModelRequest(parts=[SystemPromptPart(system), UserPromptPart(prompt)])]
    names: dict[str, str] = {}
    returns: list[ToolReturnPart] = []
    for message in turns:
        if message.role == "assistant":
            if returns:
                history.append(ModelRequest(parts=list(returns)))
                returns.clear()
            parts: list[ThinkingPart | TextPart | ToolCallPart] = [ThinkingPart(message.reasoning)] if message.reasoning else []
            if message.content:
                parts.append(TextPart(message.content))
            for call in message.tool_calls or []:
                names[call.id] = call.function.name
                parts.append(ToolCallPart(call.function.name, call.function.arguments, tool_call_id=call.id))
            history.append(ModelResponse(parts=parts))
        elif message.role == "tool" and message.tool_call_id is not None:
            name = message.name or names.get(message.tool_call_id, "")
            returns.append(ToolReturnPart(name, message.content or "", tool_call_id=message.tool_call_id))
    if returns:
        history.append(ModelRequest(parts=returns))
    return history


class _CallIds:
    """Tool-call ids made unique within one record, and which call a later result answers."""

    def __init__(self) -> None:
        self._used: set[str] = set()
        self._current: dict[str, str] = {}

    def call(self, original: str) -> str:
        unique, n = original, 1
        while unique in self._used:
            n += 1
            unique = f"{original}~{n}"
        self._used.add(unique)
        self._current[original] = unique
        return unique

    def answer(self, original: str) -> str:
        """The id of the latest call made under `original` (results follow their call)."""
        return self._current.get(original, original)


def _append_response(messages: list[ChatMessage], response: ModelResponse, ids: _CallIds) -> None:
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for part in response.parts:
        if part.part_kind == "thinking":
            thoughts.append(part.content)
        elif part.part_kind == "text":
            texts.append(part.content)
        elif part.part_kind == "tool-call":
            calls.append(
                ToolCall(
                    id=ids.call(part.tool_call_id),
                    function=FunctionCall(name=part.tool_name, arguments=_arguments(part.args)),
                )
            )
    # pydantic-ai splits a leading <think> block into a thinking part but leaves the blank lines
    # after it; a text that still holds a block (a closing tag only: the opening one was in the
    # prompt) is split here. Either way the answer never carries the thinking.
    thought, content = split_thinking("".join(texts) or None)
    if thoughts and content is not None:
        content = content.lstrip() or None
    reasoning = join_reasoning([*thoughts, thought or ""])
    if content is None and not calls and reasoning is None:
        return
    messages.append(ChatMessage(role="assistant", content=content, tool_calls=calls or None, reasoning=reasoning))


def reasoning_tokens(response: ModelResponse) -> int:
    """How many of a response's output tokens were reasoning: the server's count when it sends
    one, else the reasoning's share of the generated characters (servers such as mlx_lm.server
    and vLLM with a reasoning parser report no split)."""
    reported = (response.usage.details or {}).get("reasoning_tokens")
    if reported:
        return int(reported)
    thought = join_reasoning([part.content for part in response.parts if part.part_kind == "thinking"])
    text = "".join(part.content for part in response.parts if part.part_kind == "text")
    inline, answer = split_thinking(text or None)
    reasoning = join_reasoning([thought or "", inline or ""])
    if reasoning is None:
        return 0
    answer_chars = len(answer or "") + sum(len(str(part.args or "")) for part in response.parts
                                           if part.part_kind == "tool-call")
    return round((response.usage.output_tokens or 0) * reasoning_share(reasoning, answer_chars))


def _arguments(args: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Arguments as a JSON object; text the model garbled is kept verbatim under `_raw`."""
    if isinstance(args, Mapping):
        return dict(args)
    if not args:
        return {}
    try:
        parsed = json.loads(args)
    except json.JSONDecodeError:
        return {"_raw": args}
    return parsed if isinstance(parsed, dict) else {"_raw": args}


def _drop_unanswered_calls(messages: list[ChatMessage]) -> tuple[list[ChatMessage], int]:
    """A run stopped by the loop guard ends on calls that never ran: they are not data."""
    answered = {m.tool_call_id for m in messages if m.role == "tool"}
    kept: list[ChatMessage] = []
    dropped = 0
    for message in messages:
        if message.tool_calls:
            calls = [c for c in message.tool_calls if c.id in answered]
            dropped += len(message.tool_calls) - len(calls)
            if not calls and not message.content:
                continue
            message = message.model_copy(update={"tool_calls": calls or None})
        kept.append(message)
    return kept, dropped


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(item) for item in content)


def raw_history(history: list[ModelMessage]) -> list[Any]:
    return json.loads(ModelMessagesTypeAdapter.dump_json(history))
