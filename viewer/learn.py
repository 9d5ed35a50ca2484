"""What the student learns from one conversation: its training line, token by token, with the loss mask.

The conversation is found in convert's split files by content (its messages, as the chat format
writes them), and that very line goes through `distill.trainer.batches.masked_line`: the function
the trainer builds its batches with. So the highlighted tokens are the trained ones by
construction, not by a second implementation that could drift.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.shared.reasoning import split_thinking
from distill.trainer.batches import masked_line
from distill.trainer.convert_report import SPLITS
from distill.trainer.render import canonical_json, chat_messages, hf_tokenizer, load_tokenizer, render_text
from distill.trainer.splits import split_of
from distill.trainer.thinking import template_thinks, with_reasoning
from distill.viewer.catalog import ConvertOutput


@dataclass(frozen=True)
class TokenPiece:
    text: str
    token: int
    trained: bool


@dataclass
class StudentView:
    split: str
    line: int
    tokenizer: str
    train_on: str
    pieces: list[TokenPiece]

    @property
    def trained(self) -> int:
        return sum(piece.trained for piece in self.pieces)


@dataclass(frozen=True)
class _Where:
    split: str
    line: int
    offset: int
    length: int


class LearnError(Exception):
    """Why the student view cannot be shown (said on the page, not raised to the user's shell)."""


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def _chat(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the chat-format training files hold them (arguments as objects)."""
    plain = []
    for message in messages:
        message = dict(message)
        if message.get("tool_calls"):
            message["tool_calls"] = [
                {**call, "function": {**call.get("function", {}), "arguments": _arguments(call.get("function", {}).get("arguments"))}}
                for call in message["tool_calls"]
            ]
        plain.append(message)
    return chat_messages(plain)


def fingerprint(messages: list[dict[str, Any]]) -> bytes:
    """What identifies a conversation in the training files: roles, texts and calls, not call ids."""
    shape = [
        [
            m["role"],
            # Kept reasoning may open the content (`--reasoning keep` for a template without
            # thinking): the line is the same conversation.
            split_thinking(m.get("content") or "")[1] or "",
            [[c["function"]["name"], c["function"]["arguments"]] for c in m.get("tool_calls") or []],
        ]
        for m in _chat(messages)
    ]
    return hashlib.sha256(canonical_json(shape).encode()).digest()


def _text_fingerprint(text: str) -> bytes:
    return hashlib.sha256(b"text\0" + text.encode()).digest()


def _line_key(raw: bytes) -> bytes | None:
    try:
        data = json.loads(raw)
        return _text_fingerprint(data["text"]) if "text" in data else fingerprint(data["messages"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class SplitLocator:
    """Finds a conversation's line in one convert output's train/valid/test.jsonl.

    First where convert put it: the split its task id hashes to, after the kept conversations
    before it that went there too, checked by content. Only when that line holds something else
    (convert moved a line to fill an empty split, or wrote another order) are all the split lines
    fingerprinted, once.
    """

    def __init__(self, convert: ConvertOutput) -> None:
        self.convert = convert
        self._where: dict[bytes, _Where] | None = None
        self._lock = threading.Lock()
        self.text_format = convert.report.get("format") == "text"
        # What convert did with reasoning (older reports: nothing to keep).
        self.reasoning = (convert.report.get("reasoning") or {}).get("applied", "drop")
        ratios = convert.report.get("split_ratios")
        self._ratios = tuple(float(r) for r in ratios) if isinstance(ratios, list) and len(ratios) == 3 else None
        self.full_scans = 0

    def _build(self) -> dict[bytes, _Where]:
        found: dict[bytes, _Where] = {}
        for split in SPLITS:
            path = self.convert.split_path(split)
            if not path.is_file():
                continue
            offset = 0
            with path.open("rb") as handle:
                for number, raw in enumerate(handle, start=1):
                    key = _line_key(raw) if raw.strip() else None
                    if key is not None:
                        found.setdefault(key, _Where(split, number, offset, len(raw)))
                    offset += len(raw)
        return found

    def _expected(self, task_id: str, kept_before: list[str]) -> _Where | None:
        """The line convert wrote this conversation to when it split by task id and moved nothing."""
        if self._ratios is None:
            return None
        split = split_of(task_id, self._ratios)  # type: ignore[arg-type]
        wanted = 1 + sum(split_of(other, self._ratios) == split for other in kept_before)  # type: ignore[arg-type]
        path = self.convert.split_path(split)
        if not path.is_file():
            return None
        offset = 0
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == wanted:
                    return _Where(split, number, offset, len(raw))
                offset += len(raw)
        return None

    def locate(self, record: dict[str, Any], tokenizer: Any, kept_before: list[str] | None = None) -> _Where | None:
        messages = record.get("messages") or []
        if self.text_format:
            chat = with_reasoning(_chat(messages), self.reasoning, template_thinks(tokenizer))
            key = _text_fingerprint(render_text(tokenizer, chat, record.get("tools")))
        else:
            key = fingerprint(messages)
        if kept_before is not None and record.get("task_id"):
            guess = self._expected(str(record["task_id"]), kept_before)
            if guess is not None:
                with self.convert.split_path(guess.split).open("rb") as handle:
                    handle.seek(guess.offset)
                    if _line_key(handle.read(guess.length)) == key:
                        return guess
        with self._lock:
            if self._where is None:
                self.full_scans += 1
                self._where = self._build()
        return self._where.get(key)


class Tokenizers:
    """Student tokenizers, loaded once per path (loading one takes a second or two)."""

    def __init__(self) -> None:
        self._loaded: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, source: str) -> Any:
        with self._lock:
            if source not in self._loaded:
                self._loaded[source] = load_tokenizer(source)
            return self._loaded[source]


def pieces_of(tokenizer: Any, text: str, tokens: list[int], mask: list[bool]) -> list[TokenPiece]:
    """Each token's own slice of the text; a token is trained when masked in and not the first.

    The first token is never a target (nothing predicts it): the trainer's loss skips it too.
    """
    encoded = hf_tokenizer(tokenizer)(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [start for start, _end in encoded["offset_mapping"]]
    if list(encoded["input_ids"]) == tokens and starts == sorted(starts):
        bounds = [*starts[1:], len(text)]
        starts[0] = 0
        texts = [text[start:end] for start, end in zip(starts, bounds, strict=True)]
    else:
        decoder = hf_tokenizer(tokenizer)
        texts = [decoder.decode([token], skip_special_tokens=False) for token in tokens]
    return [
        TokenPiece(text=piece, token=token, trained=bool(keep) and index > 0)
        for index, (piece, token, keep) in enumerate(zip(texts, tokens, mask, strict=True))
    ]


def student_view(
    record: dict[str, Any],
    locator: SplitLocator,
    tokenizers: Tokenizers,
    tokenizer_source: str | None,
    *,
    kept_before: list[str] | None = None,
    train_on: str = "assistant",
) -> StudentView:
    """The training line of `record` with its loss mask; LearnError says why there is none.

    `kept_before`: task ids of the conversations convert kept before this one, in file order
    (finds the line without reading every split line).
    """
    source = tokenizer_source or locator.convert.tokenizer
    if not source:
        raise LearnError("no tokenizer: the convert report names none; start distill view with --tokenizer MODEL")
    try:
        tokenizer = tokenizers.get(source)
    except Exception as error:  # noqa: BLE001 - shown on the page, with the path the user can fix
        raise LearnError(f"cannot load the tokenizer from {source}: {error}") from None
    where = locator.locate(record, tokenizer, kept_before)
    if where is None:
        raise LearnError(
            f"this conversation is not in {locator.convert.path}'s train/valid/test.jsonl "
            "(converted from another file, or the split files changed since)"
        )
    path: Path = locator.convert.split_path(where.split)
    with path.open("rb") as handle:
        handle.seek(where.offset)
        data = json.loads(handle.read(where.length))
    masked = masked_line(path, where.line, data, tokenizer, train_on)
    return StudentView(
        split=where.split,
        line=where.line,
        tokenizer=source,
        train_on=train_on,
        pieces=pieces_of(tokenizer, masked.text, masked.tokens, masked.mask),
    )
