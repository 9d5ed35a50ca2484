"""Training examples with per-token loss masks, and the batch iterator and loss mlx-lm trains with.

mlx-lm's own batches carry one (offset, length) pair per sequence, which can only mask a prefix;
these carry a full mask per token so every assistant turn is trained. `iterate_batches` and
`masked_loss` are passed to `mlx_lm.tuner.train(..., iterate_batches=..., loss=...)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from distill.shared.errors import WHOLE_LINE, LineError, line_error
from distill.shared.jsonl import count_lines, iter_jsonl
from distill.trainer.errors import TrainerError, field_error
from distill.trainer.render import MaskedTokens, render_all, render_masked, render_text

# mlx-lm pads to a multiple of 32 too: fewer distinct shapes means fewer recompilations of the
# compiled training step.
PAD_MULTIPLE = 32


class _Function(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    arguments: dict[str, Any]


class _ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    function: _Function


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    tool_calls: list[_ToolCall] | None = None


class ChatLine(BaseModel):
    """One line of train/valid/test.jsonl in mlx-lm's chat format."""

    model_config = ConfigDict(extra="forbid")

    messages: list[_Message]
    tools: list[dict[str, Any]] | None = None


class TextLine(BaseModel):
    """One line in mlx-lm's text format (already rendered)."""

    model_config = ConfigDict(extra="forbid")

    text: str


class MaskedDataset:
    """Tokenised examples: item i is (tokens, mask) as numpy arrays."""

    def __init__(self, examples: list[tuple[np.ndarray, np.ndarray]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.examples[index]

    def itemlen(self, index: int) -> int:
        return len(self.examples[index][0])

    @property
    def trained_tokens(self) -> int:
        return int(sum(mask.sum() for _, mask in self.examples))


# (split file name, examples tokenised so far, examples in the file)
TokenizeCallback = Callable[[str, int, int], Any]


def load_split(
    path: Path,
    tokenizer: Any,
    *,
    max_seq_length: int,
    train_on: Literal["assistant", "all"] = "assistant",
    on_progress: TokenizeCallback | None = None,
) -> MaskedDataset:
    """Read and tokenise one split file; a missing file is an empty split.

    Raises TrainerError `file:line: field X: reason` for a bad line, and for an example longer
    than `max_seq_length` (mlx-lm would silently cut its end, often the final answer: re-run
    convert with the same max_seq_length instead) or with nothing to train on.
    """
    if not path.exists():
        return MaskedDataset([])
    total = count_lines(path)
    examples = []
    for done, (number, data) in enumerate(iter_jsonl(path), start=1):
        if isinstance(data, LineError):
            raise TrainerError(str(data))
        examples.append(_example(path, number, data, tokenizer, max_seq_length, train_on))
        if on_progress is not None:
            on_progress(path.name, done, total)
    return MaskedDataset(examples)


def _example(
    path: Path, number: int, data: dict[str, Any], tokenizer: Any, max_seq_length: int, train_on: str
) -> tuple[np.ndarray, np.ndarray]:
    masked = masked_line(path, number, data, tokenizer, train_on)
    if len(masked.tokens) > max_seq_length:
        raise field_error(
            path, number, "messages",
            f"{len(masked.tokens)} tokens > max_seq_length {max_seq_length}; "
            "run distill convert with the same --max-seq-length",
        )
    # The first token is never a target (nothing predicts it), so it cannot count.
    if not any(masked.mask[1:]):
        raise field_error(path, number, "messages", "no assistant tokens to train on")
    return np.asarray(masked.tokens, np.int32), np.asarray(masked.mask, np.bool_)


def masked_line(path: Path, number: int, data: dict[str, Any], tokenizer: Any, train_on: str) -> MaskedTokens:
    """One split line's tokens and loss mask, exactly as training sees them (`distill view` shows this)."""
    model = TextLine if "text" in data else ChatLine
    try:
        model.model_validate(data)
    except ValidationError as error:
        raise TrainerError(str(line_error(str(path), number, error))) from None
    try:
        if model is TextLine:
            return render_all(tokenizer, data["text"])
        if train_on == "all":
            return render_all(tokenizer, render_text(tokenizer, data["messages"], data.get("tools")))
        return render_masked(tokenizer, data["messages"], data.get("tools"))
    except TrainerError as error:
        raise TrainerError(str(LineError(str(path), number, WHOLE_LINE, str(error)))) from None


def iterate_batches(
    dataset: MaskedDataset,
    batch_size: int,
    max_seq_length: int,
    loop: bool = False,
    seed: int | None = None,
    comm_group: Any = None,
) -> Iterator[tuple[mx.array, mx.array]]:
    """Yield (tokens, mask) batches, shaped [batch, length], in mlx-lm's iterate_batches contract.

    Like mlx-lm: examples sorted by length into batches, batches visited in random order, each
    distributed worker takes its share. Unlike it: a dataset smaller than the batch repeats its
    examples (tiny validation sets still validate), and nothing is truncated (load_split refused
    long examples already).
    """
    if len(dataset) == 0:
        raise TrainerError("a dataset split is empty")
    offset, step = (comm_group.rank(), comm_group.size()) if comm_group is not None else (0, 1)
    if batch_size % step != 0:
        raise TrainerError(f"batch_size {batch_size} must be divisible by the {step} workers")
    order = sorted(range(len(dataset)), key=dataset.itemlen)
    if len(order) < batch_size:
        order = [order[i % len(order)] for i in range(batch_size)]
    batches = [order[i + offset : i + batch_size : step] for i in range(0, len(order) - batch_size + 1, batch_size)]
    if seed is not None:
        np.random.seed(seed)
    while True:
        for index in np.random.permutation(len(batches)):
            yield _padded([dataset[j] for j in batches[index]], max_seq_length)
        if not loop:
            break


def _padded(rows: list[tuple[np.ndarray, np.ndarray]], max_seq_length: int) -> tuple[mx.array, mx.array]:
    """One [batch, width] pair of tokens and mask, zero-padded to a multiple of PAD_MULTIPLE."""
    longest = max(len(tokens) for tokens, _ in rows)
    width = max(longest, min(max_seq_length, PAD_MULTIPLE * -(-longest // PAD_MULTIPLE)))
    tokens = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), np.bool_)
    for row, (row_tokens, row_mask) in enumerate(rows):
        tokens[row, : len(row_tokens)] = row_tokens
        mask[row, : len(row_mask)] = row_mask
    return mx.array(tokens), mx.array(mask)


def masked_loss(model: nn.Module, tokens: mx.array, mask: mx.array) -> tuple[mx.array, mx.array]:
    """Mean cross-entropy over the masked target tokens, and how many there were.

    Same shape of computation as mlx-lm's default_loss; only the mask differs: target t+1 is
    trained when mask[t+1] is set (padding is never set).
    """
    inputs = tokens[:, :-1]
    targets = tokens[:, 1:]
    weights = mask[:, 1:]
    logits = model(inputs)
    cross_entropy = nn.losses.cross_entropy(logits, targets) * weights
    count = weights.sum()
    return cross_entropy.astype(mx.float32).sum() / count, count
