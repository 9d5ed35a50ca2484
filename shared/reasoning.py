"""A teacher's reasoning, kept apart from its answer.

Reasoning models send their thinking either in a separate field (`reasoning_content`, or
`reasoning` on newer vLLM and Ollama) or as a `<think>...</think>` block that opens the content.
A template that puts `<think>` in the generation prompt (Qwen3, DeepSeek-R1) makes the model's
text start inside the block, so only the closing tag shows. Both shapes end here as (reasoning,
answer), the answer without the blank lines that separated it from the block.
"""

from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Fields of an OpenAI-style message that carry reasoning, by the servers that send them.
REASONING_FIELDS = ("reasoning_content", "reasoning")


def split_thinking(text: str | None) -> tuple[str | None, str | None]:
    """(reasoning, answer) of an assistant text: a leading `<think>` block is taken out.

    Only a block at the start counts (after whitespace), or a lone closing tag when the opening one
    was in the prompt: a `<think>` quoted in the middle of an answer is the answer's text. An
    unclosed block is all reasoning (the model stopped while thinking). Returns the text unchanged
    with no reasoning when there is no block.
    """
    if text is None:
        return None, None
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        body = stripped[len(THINK_OPEN):]
        end = body.find(THINK_CLOSE)
        if end < 0:
            return body.strip() or None, None
        reasoning, answer = body[:end], body[end + len(THINK_CLOSE):]
    elif THINK_CLOSE in text and THINK_OPEN not in text:
        reasoning, _, answer = text.partition(THINK_CLOSE)
    else:
        return None, text
    return reasoning.strip() or None, answer.lstrip() or None


def join_reasoning(parts: list[str]) -> str | None:
    """Several thinking parts of one turn as one text (None when they hold nothing)."""
    text = "\n\n".join(part.strip() for part in parts if part and part.strip())
    return text or None


def reasoning_share(reasoning: str | None, answer_chars: int) -> float:
    """The share of a response's generated characters that was reasoning (0 when none)."""
    thought = len(reasoning or "")
    total = thought + answer_chars
    return thought / total if total else 0.0
