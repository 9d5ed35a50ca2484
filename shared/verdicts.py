"""Is an answer right? Reference answers, the one rule that matches them, and verdicts.

A prompt line may carry `expected`: a string the final answer must contain, or `{"any": [...]}`
(one of them), `{"all": [...]}` (every one), `{"regex": "..."}` (Python `re` syntax, searched in
the answer as written). Strings match case-insensitively with whitespace runs collapsed, so
"coordinator/collector.py" matches "Coordinator/Collector.py" and a line break inside a phrase.

The worker (when a conversation ends), `distill verify`, convert and eval all decide through
`check_answer`, so "right" means the same thing everywhere. A verdict says who decided
(`reference` or `judge`) and whether it passed; `passed: null` means nothing could verify it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import regex
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from distill.shared.errors import DistillError, LineError, line_error
from distill.shared.jsonl import iter_jsonl

VERDICTS_FILE = "verdicts.jsonl"
# A pattern that backtracks for longer than this on one answer counts as no match, not a hang.
REGEX_TIMEOUT_S = 1.0
MAX_DETAIL_CHARS = 500

VerdictMethod = Literal["reference", "judge"]


def normalize(text: str) -> str:
    """What "contains" compares: case folded, every whitespace run one space, ends trimmed."""
    return " ".join(text.split()).casefold()


class _Strings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @staticmethod
    def _nonblank(values: list[str]) -> list[str]:
        if not values:
            raise ValueError("needs at least one string")
        if any(not value.strip() for value in values):
            raise ValueError("holds an empty string, which every answer would contain")
        return values


class AnyOf(_Strings):
    """The answer contains at least one of these."""

    any: list[str]

    @field_validator("any")
    @classmethod
    def _check(cls, values: list[str]) -> list[str]:
        return cls._nonblank(values)


class AllOf(_Strings):
    """The answer contains every one of these."""

    all: list[str]

    @field_validator("all")
    @classmethod
    def _check(cls, values: list[str]) -> list[str]:
        return cls._nonblank(values)


class Pattern(BaseModel):
    """The answer matches this regular expression somewhere (`re.search`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        if not value:
            raise ValueError("is empty, which every answer would match")
        try:
            regex.compile(value)
        except regex.error as error:
            raise ValueError(f"not a valid regular expression ({error})") from None
        return value


EXPECTED_SHAPES = 'a string, or an object with one key: "any" (list), "all" (list) or "regex" (string)'


def _expected_shape(value: Any) -> Any:
    """One clear reason for a wrongly shaped `expected`, instead of a union's three."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("is empty, which every answer would contain")
        return value
    if isinstance(value, AnyOf | AllOf | Pattern):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(f"must be {EXPECTED_SHAPES}")
    (key, inner), = value.items()
    model = {"any": AnyOf, "all": AllOf, "regex": Pattern}.get(key)
    if model is None:
        raise ValueError(f"unknown key {key!r}; use {EXPECTED_SHAPES}")
    if model is Pattern and not isinstance(inner, str):
        raise ValueError('"regex" takes a string')
    if model is not Pattern and (not isinstance(inner, list) or not all(isinstance(v, str) for v in inner)):
        raise ValueError(f'"{key}" takes a list of strings')
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise ValueError(f'"{key}" {error.errors()[0]["msg"].removeprefix("Value error, ")}') from None


Expected = Annotated[str | AnyOf | AllOf | Pattern, BeforeValidator(_expected_shape)]


class Verdict(BaseModel):
    """Whether a trajectory's answer is right, and who said so. The default: nobody could tell."""

    model_config = ConfigDict(extra="forbid")

    passed: bool | None = None
    method: VerdictMethod | None = None
    detail: str = ""
    # The judge's 0-1 score; a reference check has none.
    score: float | None = Field(default=None, ge=0.0, le=1.0)

    @property
    def outcome(self) -> Literal["passed", "failed", "unverified"]:
        return "unverified" if self.passed is None else ("passed" if self.passed else "failed")


def describe(expected: Expected) -> str:
    """The reference as a user wrote it, for verdict details and tables."""
    if isinstance(expected, str):
        return repr(expected)
    if isinstance(expected, AnyOf):
        return "any of " + ", ".join(repr(v) for v in expected.any)
    if isinstance(expected, AllOf):
        return "all of " + ", ".join(repr(v) for v in expected.all)
    return f"/{expected.regex}/"


def check_answer(expected: Expected, answer: str | None) -> Verdict:
    """The reference verdict on a final answer (None or blank: there is no answer, so it fails)."""
    if answer is None or not answer.strip():
        return Verdict(passed=False, method="reference", detail=f"no final answer; expected {describe(expected)}")
    if isinstance(expected, Pattern):
        try:
            found = regex.search(expected.regex, answer, timeout=REGEX_TIMEOUT_S) is not None
        except TimeoutError:
            return Verdict(passed=False, method="reference",
                           detail=f"/{expected.regex}/ took longer than {REGEX_TIMEOUT_S:g}s on the answer")
        return Verdict(passed=found, method="reference",
                       detail=f"answer {'matches' if found else 'does not match'} /{expected.regex}/")
    text = normalize(answer)
    wanted = [expected] if isinstance(expected, str) else (expected.any if isinstance(expected, AnyOf) else expected.all)
    present = [value for value in wanted if normalize(value) in text]
    missing = [value for value in wanted if value not in present]
    if isinstance(expected, AnyOf):
        passed = bool(present)
        detail = f"answer contains {present[0]!r}" if passed else "answer contains none of " + ", ".join(map(repr, wanted))
    else:
        passed = not missing
        detail = "answer contains " + ", ".join(repr(v) for v in wanted) if passed else f"answer lacks {missing[0]!r}"
    return Verdict(passed=passed, method="reference", detail=detail[:MAX_DETAIL_CHARS])


def reference_verdict(expected: Expected | None, answer: str | None) -> Verdict:
    """check_answer where there is a reference; the unverified verdict where there is none."""
    return Verdict() if expected is None else check_answer(expected, answer)


# --- the verdicts file -------------------------------------------------------------------------


class VerdictRecord(BaseModel):
    """One line of RUN/verdicts.jsonl: a later verdict on one (task, sample) of the run.

    conversations.jsonl is never rewritten; readers take a record's own verdict unless this file
    has one for it, and the last line for a (task, sample) wins.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    task_id: str
    sample: int = Field(default=0, ge=0)
    run: str
    verdict: Verdict
    judge_model: str | None = None
    created_at: datetime


def read_verdicts(path: Path) -> Iterator[VerdictRecord | LineError]:
    """Each line of a verdicts file as a record, or the error that names its line and field."""
    for number, item in iter_jsonl(path):
        if isinstance(item, LineError):
            yield item
            continue
        try:
            yield VerdictRecord.model_validate(item)
        except ValidationError as error:
            yield line_error(str(path), number, error)


class VerdictsFileError(DistillError):
    """A verdicts file has a line that is not a verdict record."""


def latest_verdicts(path: Path) -> dict[tuple[str, int], Verdict]:
    """(task id, sample) -> the last verdict the file gives it; a missing file gives none.

    A truncated last line (a crash mid-write) is skipped: it held no verdict, and the record's own
    verdict still stands. Any other bad line raises VerdictsFileError naming file, line and field.
    """
    if not path.is_file():
        return {}
    latest: dict[tuple[str, int], Verdict] = {}
    for item in read_verdicts(path):
        if isinstance(item, LineError):
            if item.reason.startswith("truncated last line"):
                continue
            raise VerdictsFileError(str(item))
        latest[(item.task_id, item.sample)] = item.verdict
    return latest
