"""Reading a prompts file, one line at a time, with an error for every bad line.

Format: JSONL, one object a line: {"prompt": str, "id"?: str, "system"?: str, "metadata"?: object,
"expected"?: str | {"any": [str]} | {"all": [str]} | {"regex": str}} (see shared/verdicts.py).
Blank lines are skipped. Unknown keys are refused (a typo such as "promt" must not silently lose a
field); put anything extra under "metadata".
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from distill.shared.errors import DistillError, LineError, line_error
from distill.shared.jsonl import iter_jsonl
from distill.shared.records import ChatMessage, PromptTask, continuation_problem
from distill.shared.verdicts import Expected

MAX_PROMPT_CHARS = 200_000
MAX_LINE_BYTES = 8 * 1024 * 1024

# A bad prompt line; kept under its old name for the callers that list them.
BadLine = LineError


class PromptsFileError(DistillError):
    """The file as a whole can't be used (missing, empty, unreadable)."""


class PromptLine(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    id: str | None = Field(default=None, min_length=1, max_length=200)
    system: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    expected: Expected | None = None
    history: list[ChatMessage] | None = None

    @field_validator("history")
    @classmethod
    def _continuable(cls, turns: list[ChatMessage] | None) -> list[ChatMessage] | None:
        problem = continuation_problem(turns) if turns is not None else None
        if problem is not None:
            raise ValueError(problem)
        return turns

    @field_validator("id")
    @classmethod
    def _printable_id(cls, value: str | None) -> str | None:
        # Task keys join an id and a sample number with a control character (shared/keys.py).
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters")
        return value

    @field_validator("prompt")
    @classmethod
    def _real_prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is empty")
        if len(value) > MAX_PROMPT_CHARS:
            raise ValueError(f"is {len(value):,} characters; the limit is {MAX_PROMPT_CHARS:,}")
        return value


def read_prompts(path: Path, run: str) -> Iterator[PromptTask | LineError]:
    """Stream the file: a PromptTask for each good line, a LineError for each bad one."""
    if not path.is_file():
        raise PromptsFileError(f"{path}: prompts file not found")
    seen_any = False
    for number, data in iter_jsonl(path, max_line_bytes=MAX_LINE_BYTES):
        seen_any = True
        yield data if isinstance(data, LineError) else _task(str(path), number, data, run)
    if not seen_any:
        raise PromptsFileError(f"{path}: the file has no prompts")


def _task(path: str, number: int, data: dict[str, Any], run: str) -> PromptTask | LineError:
    try:
        line = PromptLine.model_validate(data)
    except ValidationError as error:
        return line_error(path, number, error, extra_hint="put extra data under metadata")
    task_id = line.id or PromptTask.stable_id(line.prompt, line.system, line.history or ())
    return PromptTask(
        task_id=task_id,
        run=run,
        prompt=line.prompt,
        system=line.system,
        metadata=line.metadata,
        source_line=number,
        expected=line.expected,
        history=line.history or [],
    )
