"""Errors a user can fix, and the one way distill words them: `file:line: field X: reason`.

Every user-facing error subclasses `DistillError`; the CLI prints its message as one line and
exits non-zero, never with a traceback. Every JSONL file distill reads (prompts, conversations,
training splits, datasets) goes through `iter_jsonl`, so a bad line reads the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

WHOLE_LINE = "(line)"


class DistillError(Exception):
    """A problem the user can fix, phrased for them in one line (or one line per problem)."""


@dataclass(frozen=True)
class LineError:
    """One bad line of an input file."""

    path: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        if self.field == WHOLE_LINE:
            return f"{self.path}:{self.line}: {self.reason}"
        return f"{self.path}:{self.line}: field {self.field}: {self.reason}"


def validation_problems(error: ValidationError, *, extra_hint: str = "") -> list[tuple[str, str]]:
    """(field, reason) for each problem pydantic found. Values are never echoed: they may be secrets."""
    problems = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or WHOLE_LINE
        if problem["type"] == "extra_forbidden":
            reason = "unknown key" + (f" ({extra_hint})" if extra_hint else "")
        elif problem["type"] == "missing":
            reason = "is required"
        else:
            reason = str(problem["msg"]).removeprefix("Value error, ")
        problems.append((field, reason))
    return problems


def describe_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem: `source: field a.b.0.c: reason`."""
    return "\n".join(f"{source}: field {field}: {reason}" for field, reason in validation_problems(error))


def line_error(path: str, line: int, error: ValidationError, *, extra_hint: str = "") -> LineError:
    """A line's validation problems as one LineError: the first names the field, the rest follow."""
    problems = validation_problems(error, extra_hint=extra_hint)
    (field, reason), rest = problems[0], problems[1:]
    return LineError(path, line, field, "; ".join([reason] + [f"field {f}: {r}" for f, r in rest]))
