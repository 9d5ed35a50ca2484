"""What eval.json keeps of each held-out conversation beyond its counts: every tool call with the
real result its tool gave, and whether the last answer was cut off at the token limit.

Enough to answer "did it answer from the tool result?" from the report alone (and in the viewer).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from distill.shared.records import Conversation, ToolOutcome

# A tool result longer than this is cut in the report (grep over a big tree can return pages).
MAX_RESULT_CHARS = 4000
# pydantic-ai's FinishReason for an answer that stopped at max_tokens (OpenAI's "length").
TOKEN_LIMIT_FINISH = "length"


class EvalToolCall(BaseModel):
    """One tool call a variant made on one prompt, and the real result its tool gave."""

    model_config = ConfigDict(extra="forbid")

    name: str
    arguments: dict[str, Any]
    # None: the conversation ended before the call had a result (a loop cut at the tool limit).
    result: str | None = None
    outcome: ToolOutcome | None = None
    # The result was longer than MAX_RESULT_CHARS and is cut here.
    result_cut: bool = False


def tool_calls_with_results(conversation: Conversation) -> list[EvalToolCall]:
    """Every tool call in order, each paired with its tool message by call id."""
    results = {m.tool_call_id: m for m in conversation.messages if m.role == "tool"}
    calls: list[EvalToolCall] = []
    for message in conversation.messages:
        for call in message.tool_calls or []:
            answer = results.get(call.id)
            text = answer.content if answer is not None else None
            calls.append(EvalToolCall(
                name=call.function.name,
                arguments=call.function.arguments,
                result=text[:MAX_RESULT_CHARS] if text is not None else None,
                outcome=answer.outcome if answer is not None else None,
                result_cut=text is not None and len(text) > MAX_RESULT_CHARS,
            ))
    return calls


def hit_token_limit(conversation: Conversation) -> bool:
    """Whether the model's last response stopped at the token limit rather than ending by itself.

    Read from pydantic-ai's own history (finish_reason, mapped from the server's "length"): the
    chat messages alone cannot tell a finished sentence from one cut at max_tokens.
    """
    responses = [m for m in conversation.raw_messages if isinstance(m, dict) and m.get("kind") == "response"]
    return bool(responses) and responses[-1].get("finish_reason") == TOKEN_LIMIT_FINISH
