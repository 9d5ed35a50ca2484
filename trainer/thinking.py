"""What a student learns of its teacher's reasoning (`distill convert --reasoning`).

`keep` renders each turn's reasoning the way the student's template expects: a thinking template
(Qwen3, DeepSeek-R1, GLM: it reads `reasoning_content`) gets the field and decides itself what to
show (Qwen3 shows it for the turns after the last user query, and `<think></think>` empty on the
last turn); any other template gets a `<think>` block opening the turn's content, the convention
those families' reasoning fine-tunes use. `drop` leaves it out. `auto` keeps it for a thinking
template and drops it for any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from distill.shared.reasoning import THINK_CLOSE, THINK_OPEN
from distill.trainer.render import hf_tokenizer

ReasoningMode = Literal["auto", "keep", "drop"]
REASONING_MODES: tuple[str, ...] = ("auto", "keep", "drop")


class ReasoningStats(BaseModel):
    """How many assistant turns had reasoning, and what convert did with it."""

    model_config = ConfigDict(extra="forbid")

    # The mode asked for, and what it meant for this student (auto: keep or drop).
    mode: ReasoningMode = "auto"
    applied: Literal["keep", "drop"] = "drop"
    # Whether the student's template renders `reasoning_content` itself.
    template_thinks: bool = False
    # Over the kept conversations.
    turns_with_reasoning: int = 0
    # Rendered into the training text (and so trained on).
    kept: int = 0
    dropped: int = 0
    # Asked to keep, but the template does not show it (Qwen3: turns before the last user query;
    # Llama: the content of a tool-call turn).
    dropped_by_template: int = 0


def template_thinks(tokenizer: Any) -> bool:
    """Whether the student's chat template renders reasoning itself (it reads `reasoning_content`)."""
    template = getattr(hf_tokenizer(tokenizer), "chat_template", None) or ""
    if isinstance(template, dict):
        template = template.get("default", "")
    return "reasoning_content" in template


def resolve(mode: str, thinks: bool) -> Literal["keep", "drop"]:
    if mode not in REASONING_MODES:
        raise ValueError(f"reasoning must be one of {', '.join(REASONING_MODES)}, not {mode!r}")
    if mode == "auto":
        return "keep" if thinks else "drop"
    return "keep" if mode == "keep" else "drop"


def with_reasoning(messages: Sequence[dict[str, Any]], applied: str, thinks: bool) -> list[dict[str, Any]]:
    """The training messages with each turn's reasoning kept as the template expects, or dropped."""
    out = []
    for message in messages:
        reasoning = message.get("reasoning_content")
        if reasoning is None:
            out.append(message)
            continue
        message = {key: value for key, value in message.items() if key != "reasoning_content"}
        if applied == "keep":
            if thinks:
                message["reasoning_content"] = reasoning
            else:
                message["content"] = f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{message.get('content') or ''}"
        out.append(message)
    return out


def count(applied: str, original: Sequence[dict[str, Any]], rendered: str) -> dict[str, int]:
    """One conversation's reasoning turns: kept when their text is in the rendering."""
    counts = {"turns_with_reasoning": 0, "kept": 0, "dropped": 0, "dropped_by_template": 0}
    for message in original:
        reasoning = message.get("reasoning_content")
        if not reasoning:
            continue
        counts["turns_with_reasoning"] += 1
        if applied == "drop":
            counts["dropped"] += 1
        elif reasoning.strip() in rendered:
            counts["kept"] += 1
        else:
            counts["dropped_by_template"] += 1
    return counts


def add(stats: ReasoningStats, counts: dict[str, int]) -> None:
    for name, value in counts.items():
        setattr(stats, name, getattr(stats, name) + value)
