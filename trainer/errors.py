"""The one error type the trainer raises for problems the user can fix."""

from __future__ import annotations

from distill.shared.errors import DistillError, LineError


class TrainerError(DistillError):
    """A user-facing problem, phrased as one line: `file:line: field X: reason` where it applies.

    The CLI prints the message and exits non-zero; it never shows a traceback for these.
    """


def field_error(path: object, line: int, field: str, reason: str) -> TrainerError:
    return TrainerError(str(LineError(str(path), line, field, reason)))
