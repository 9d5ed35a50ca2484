"""Reading a prompts file, one line at a time, with an error for every bad line.

Format: JSONL, one object a line: {"prompt": str, "id"?: str, "system"?: str, "metadata"?: object}.
Blank lines are skipped. Unknown keys are refused (a typo such as "promt" must not silently lose a
field); put anything extra under "metadata".
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distill.shared.records import PromptTask

MAX_PROMPT_CHARS = 200_000
MAX_LINE_BYTES = 8 * 1024 * 1024


class PromptsFileError(Exception):
    """The file as a whole can't be used (missing, empty, unreadable)."""


@dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: field {self.field}: {self.reason}"


class PromptLine(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    id: str | None = Field(default=None, min_length=1, max_length=200)
    system: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("prompt")
    @classmethod
    def _real_prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(f"is {len(value):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
        return value


def read_prompts(path: Path, run: str) -> Iterator[PromptTask | BadLine]:
    """Stream the file: a PromptTask for each good line, a BadLine for each bad one."""
    if not path.is_file():
        raise PromptsFileError(f"{path}: prompts file not found")
    seen_any = False
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_LINE_BYTES:
                yield BadLine(str(path), number, "(line)", f"line is longer than {MAX_LINE_BYTES:,} bytes")
                continue
            if not raw.strip():
                continue
            seen_any = True
            yield _parse_line(str(path), number, raw, run)
    if not seen_any:
        raise PromptsFileError(f"{path}: the file has no prompts")


def _parse_line(path: str, number: int, raw: bytes, run: str) -> PromptTask | BadLine:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return BadLine(path, number, "(line)", f"not UTF-8 (byte {error.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        return BadLine(path, number, "(line)", f"not JSON: {error.msg} at column {error.colno}")
    if not isinstance(data, dict):
        return BadLine(path, number, "(line)", f"expected a JSON object, got {type(data).__name__}")
    try:
        line = PromptLine.model_validate(data)
    except ValidationError as error:
        problems = [_describe(problem) for problem in error.errors()]
        return BadLine(path, number, problems[0][0], "; ".join([problems[0][1]] + [f"field {f}: {m}" for f, m in problems[1:]]))
    task_id = line.id or PromptTask.stable_id(line.prompt, line.system)
    return PromptTask(
        task_id=task_id,
        run=run,
        prompt=line.prompt,
        system=line.system,
        metadata=line.metadata,
        source_line=number,
    )


def _describe(problem: dict[str, Any]) -> tuple[str, str]:
    field = ".".join(str(part) for part in problem["loc"]) or "(line)"
    if problem["type"] == "extra_forbidden":
        return field, "unknown key (put extra data under metadata)"
    if problem["type"] == "missing":
        return field, "is required"
    return field, str(problem["msg"]).removeprefix("Value error, ")
