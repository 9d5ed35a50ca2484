"""The one error type the trainer raises for problems the user can fix."""

from __future__ import annotations


class TrainerError(Exception):
    """A user-facing problem, phrased as one line: `file:line: field X: reason` where it applies.

    The CLI prints the message and exits non-zero; it never shows a traceback for these.
    """


def field_error(path: object, line: int, field: str, reason: str) -> TrainerError:
    return TrainerError(f"{path}:{line}: field {field}: {reason}")
