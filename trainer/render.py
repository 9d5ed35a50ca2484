"""Render conversations with the student's own chat template, and mark which tokens are trained.

The student learns from exactly the text its chat template produces, so everything here goes
through `tokenizer.apply_chat_template` (never a hand-written format). The loss mask covers every
assistant turn (its text, its tool calls and its end-of-turn token), not just the last one as
mlx-lm's `mask_prompt` does: a tool-calling trajectory teaches mostly in its middle turns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.trainer.errors import TrainerError


def check_model_source(model: str | Path) -> str:
    """Return `model` as a string, or raise TrainerError when it names a missing local path.

    Anything that looks like a path (has a separator or starts with '.' or '~') must exist;
    otherwise mlx-lm would take it for a Hugging Face repo id and try to download it.
    """
    text = str(model)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise TrainerError(f"{text}: a model must be a directory (config.json, weights, tokenizer)")
        return str(path)
    # A Hugging Face id is "name" or "org/name"; anything else that is missing is a typo'd path.
    if text.startswith((".", "~", "/")) or text.count("/") > 1 or "\\" in text:
        raise TrainerError(f"{text}: model directory not found")
    return text


def load_tokenizer(model: str | Path) -> Any:
    """The student's tokenizer, as mlx-lm loads it (a TokenizerWrapper around the HF tokenizer)."""
    from mlx_lm.utils import load_tokenizer as mlx_load_tokenizer

    source = check_model_source(model)
    try:
        return mlx_load_tokenizer(Path(source) if Path(source).exists() else source)
    except Exception as error:  # noqa: BLE001 - any loader failure is reported as the user's input
        raise TrainerError(f"{source}: cannot load a tokenizer ({type(error).__name__}: {error})") from None


def hf_tokenizer(tokenizer: Any) -> Any:
    """The Hugging Face tokenizer inside mlx-lm's wrapper (offset mappings live there)."""
    return getattr(tokenizer, "_tokenizer", tokenizer)


def chat_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-format messages cleaned for training files and chat templates.

    None fields are dropped, and `content` is always a string: Qwen-style templates concatenate
    it (a None would fail there), and a tool-calling assistant turn with "" renders like None.
    Tool-call arguments must already be JSON objects (see convert).
    """
    cleaned = []
    for message in messages:
        out: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
        if message.get("tool_calls"):
            out["tool_calls"] = [
                {
                    "id": call["id"],
                    "type": call.get("type", "function"),
                    "function": {
                        "name": call["function"]["name"],
                        "arguments": call["function"]["arguments"],
                    },
                }
                for call in message["tool_calls"]
            ]
        if message.get("tool_call_id"):
            out["tool_call_id"] = message["tool_call_id"]
        if message.get("name"):
            out["name"] = message["name"]
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning and message["role"] == "assistant":
            # The field thinking templates (Qwen3, DeepSeek, GLM) read; convert decides whether
            # a turn carries it (`--reasoning`).
            out["reasoning_content"] = reasoning
        cleaned.append(out)
    return cleaned


def render_text(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    add_generation_prompt: bool = False,
) -> str:
    """The conversation as the student's chat template writes it."""
    try:
        text = tokenizer.apply_chat_template(
            list(messages),
            tools=list(tools) if tools else None,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except Exception as error:  # noqa: BLE001 - template errors come from the data
        raise TrainerError(f"the chat template cannot render this conversation: {error}") from None
    if not isinstance(text, str):
        raise TrainerError("the tokenizer's apply_chat_template(tokenize=False) did not return text")
    return text


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of rendered text; no BOS/EOS added (the template already wrote its own)."""
    return list(hf_tokenizer(tokenizer)(text, add_special_tokens=False)["input_ids"])


def count_tokens(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Length of the rendered conversation in student tokens, as training will see it."""
    return len(encode(tokenizer, render_text(tokenizer, messages, tools)))


@dataclass(frozen=True)
class MaskedTokens:
    """A rendered conversation: `mask[i]` says whether token i is a training target."""

    text: str
    tokens: list[int]
    mask: list[bool]

    def trained_text(self, tokenizer: Any) -> list[str]:
        """The trained tokens decoded, one string per contiguous trained span (for checks)."""
        spans: list[list[int]] = []
        previous = False
        for token, keep in zip(self.tokens, self.mask, strict=True):
            if keep and not previous:
                spans.append([])
            if keep:
                spans[-1].append(token)
            previous = keep
        decoder = hf_tokenizer(tokenizer)
        return [decoder.decode(span, skip_special_tokens=False) for span in spans]


# Stands in for one message's content in probe renderings: text no template changes (no
# whitespace to trim, nothing to escape) and no conversation holds.
_SENTINEL = "DISTILLxSENTINELx7f3a"


def assistant_spans(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[str, list[tuple[int, int]]]:
    """The full rendering and the character span of every assistant turn in it.

    Found in one rendering of the whole conversation, so templates that render a turn differently
    once later turns follow (Qwen3 drops earlier thinking, Mistral moves the tools block to the
    last user message) are masked as they render. Two probes teach the template's own markers:
    the text it writes between a message and the assistant turn after it (the generation prompt
    and the end of that message, learnt by rendering the message with sentinel content), and the
    text that ends an assistant turn. A turn's span starts after the first and ends with the
    second (trailing whitespace after it is template glue the model never generates). A template
    whose turns cannot be found this way is refused rather than mis-masked.
    """
    full = render_text(tokenizer, messages, tools)
    if not any(message["role"] == "assistant" for message in messages):
        return full, []  # nothing to train on: the caller says so with the file and line
    end_marker = _end_of_turn(tokenizer, messages, tools)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        if index == 0:
            raise TrainerError("a conversation cannot open with an assistant turn: nothing shows where it starts")
        lead = _lead_in(tokenizer, messages, index, tools)
        # Past the previous message's own text first, so a lead-in quoted inside it is not taken.
        cursor = _after_content(full, messages[index - 1], cursor)
        at = full.find(lead, cursor)
        if at < 0:
            raise _unmaskable(index, "starts")
        start = at + len(lead)
        end = full.find(end_marker, start)
        if end < 0:
            raise _unmaskable(index, "ends")
        end += len(end_marker)
        content = (message.get("content") or "").strip()
        found = full.find(content, start) if content else -1
        if 0 <= found < end < found + len(content):
            raise MarkerInText(f"assistant message {index} holds the chat template's end-of-turn marker "
                               f"{end_marker!r}: the student would learn to end its turn there")
        missing = [call["function"]["name"] for call in message.get("tool_calls") or []
                   if call["function"]["name"] not in full[start:end]]
        if missing:
            # SmolLM2's template, for one, renders only `content`: the student would learn an
            # empty turn where the teacher called a tool.
            raise TrainerError(f"the chat template does not render the tool calls of assistant message {index} "
                               f"({', '.join(missing)}): this student cannot learn them from this template")
        spans.append((start, end))
        cursor = end
    return full, spans


class MarkerInText(TrainerError):
    """One conversation's own text holds the template's end-of-turn marker: that conversation
    cannot be masked (others can), unlike a template that cannot be masked at all."""


def _unmaskable(index: int, what: str) -> TrainerError:
    return TrainerError(
        f"cannot find where assistant message {index} {what} in the chat template's rendering, so its loss "
        "mask would not be exact (use train_on: all to train on every token instead)"
    )


def _lead_in(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], index: int, tools: Sequence[Mapping[str, Any]] | None
) -> str:
    """What the template writes after message `index - 1`'s content up to where assistant turn
    `index` begins: that message's closing text and the generation prompt."""
    probe = [dict(message) for message in messages[:index]]
    probe[-1]["content"] = _SENTINEL
    text = render_text(tokenizer, probe, tools, add_generation_prompt=True)
    at = text.rfind(_SENTINEL)
    lead = text[at + len(_SENTINEL):] if at >= 0 else ""
    if not lead.strip():
        raise TrainerError(
            f"the chat template marks no boundary before assistant message {index} (no generation prompt "
            "and nothing after the message before it), so its loss mask would not be exact "
            "(use train_on: all to train on every token instead)"
        )
    return lead


def _end_of_turn(
    tokenizer: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None
) -> str:
    """The text that closes an assistant turn (`<|im_end|>`, `<|eot_id|>`, `</s>`, `<end_of_turn>`)."""
    first = next(index for index, message in enumerate(messages) if message["role"] == "assistant")
    probe = [dict(message) for message in messages[:first]] + [{"role": "assistant", "content": _SENTINEL}]
    text = render_text(tokenizer, probe, tools)
    at = text.rfind(_SENTINEL)
    marker = text[at + len(_SENTINEL):].strip() if at >= 0 else ""
    if not marker:
        raise TrainerError(
            "the chat template writes nothing after an assistant turn, so where a turn ends is unknown "
            "and its loss mask would not be exact (use train_on: all to train on every token instead)"
        )
    return marker


def _after_content(full: str, message: Mapping[str, Any], cursor: int) -> int:
    """Where `message`'s own text ends in `full` (searched from `cursor`), or `cursor` when the
    template wrote it transformed (escaped, trimmed) and it cannot be found as is."""
    content = (message.get("content") or "").strip()
    if not content:
        return cursor
    at = full.find(content, cursor)
    return cursor if at < 0 else at + len(content)


def render_masked(
    tokenizer: Any,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> MaskedTokens:
    """Tokens of the rendered conversation with every assistant turn marked as a target."""
    full, spans = assistant_spans(tokenizer, messages, tools)
    encoded = hf_tokenizer(tokenizer)(full, add_special_tokens=False, return_offsets_mapping=True)
    tokens = list(encoded["input_ids"])
    mask = []
    span_index = 0
    for start, _end in encoded["offset_mapping"]:
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        inside = span_index < len(spans) and spans[span_index][0] <= start
        mask.append(inside)
    return MaskedTokens(text=full, tokens=tokens, mask=mask)


def render_all(tokenizer: Any, text: str) -> MaskedTokens:
    """Plain text trained on every token (the `{"text": ...}` format, or `train_on: all`)."""
    tokens = encode(tokenizer, text)
    return MaskedTokens(text=text, tokens=tokens, mask=[True] * len(tokens))


def canonical_json(value: Any) -> str:
    """Key-sorted compact JSON: equal values give equal strings (for dedup and hashes)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
