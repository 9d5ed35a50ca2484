"""What `distill demo` does, with its defaults: the CLI reads them here without importing the demo."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from distill.shared.settings import BuiltinTool

if TYPE_CHECKING:
    from distill.coordinator.synth import Kind

DEFAULT_OUT = Path("distill-demo")
# One chain kind: answering it takes a second call built from the first call's result. `docstring`
# (read the lines grep pointed to) is the chain a 135M student learns within the demo's budget;
# `siblings` (list a file's functions) and `importers` (name every importing file) it did not.
DEMO_KINDS: tuple[Kind, ...] = ("defined", "method", "docstring")


@dataclass
class DemoOptions:
    """Everything the demo does, with the defaults `distill demo` runs on."""

    out: Path = DEFAULT_OUT
    # The student; None: the bundled SmolLM2-135M-Instruct, built into OUT/model.
    student: Path | None = None
    # A real OpenAI-compatible teacher instead of the scripted one.
    teacher_url: str | None = None
    teacher_model: str | None = None
    # The code base the questions are about; None: a copy of distill's own source.
    workspace: Path | None = None
    kinds: Sequence[Kind] = DEMO_KINDS
    train_tasks: int = 40
    heldout_tasks: int = 8
    seed: int = 0
    max_tool_calls: int = 4
    iters: int = 36
    batch_size: int = 1
    learning_rate: float = 2e-4
    # LoRA layers from the top; -1: all (a tiny test model has fewer than 16).
    num_layers: int = 16
    max_seq_length: int = 1024
    val_batches: int = 1
    # Tokens per student answer in the evaluation; a tool call and a one-sentence answer fit.
    eval_max_tokens: int = 96
    teacher_concurrency: int = 4
    # Tool schemas described in one sentence: a third of the tokens of the full docstrings.
    tool_docs: Literal["full", "brief"] = "brief"
    # Also train on the same data with every tool result a placeholder, and evaluate that adapter too.
    compare_placeholder: bool = False

    def tools(self) -> list[BuiltinTool]:
        """grep answers most kinds; params may need read_file for long signatures, docstring always does."""
        return ["grep", "read_file"] if {"params", "docstring"} & set(self.kinds) else ["grep"]
