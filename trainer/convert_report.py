"""What `distill convert` reports: why each dropped trajectory was dropped (the reasons, in the order
they are checked), token counts, pass rates, and the split files it wrote."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.shared.records import (
    Record,
    utcnow,
)
from distill.shared.verdicts import (
    PassRates,
)
from distill.trainer.thinking import ReasoningStats

SPLITS = ("train", "valid", "test")
REPORT_FILE = "report.json"
# What earlier pipelines wrote instead of a tool's result (shared/records.py:PLACEHOLDER_RESULTS), written
# on purpose by --placeholder-results.
PLACEHOLDER_RESULT = "[Tool execution completed]"


class DropReason(StrEnum):
    """Why a conversation was left out; the first that applies wins, checked in this order."""

    INVALID_RECORD = "invalid_record"
    REDACTED = "secrets_redacted"
    TOOL_INFRA_ERROR = "tool_infrastructure_error"
    NOT_FINAL_ANSWER = "status_not_final_answer"
    FAILED_VERIFICATION = "failed_verification"
    UNVERIFIED = "unverified"
    BAD_TOOL_RESULT = "missing_or_placeholder_tool_result"
    ARGUMENTS_NOT_JSON = "arguments_not_json_object"
    INVALID_ARGUMENTS = "arguments_fail_schema"
    REPEATED_CALL = "repeated_identical_call"
    TOO_MANY_TOOL_CALLS = "too_many_tool_calls"
    NO_FINAL_ANSWER = "no_final_text_answer"
    HOLDS_TURN_MARKER = "text_holds_end_of_turn_marker"
    TOO_LONG = "longer_than_max_seq_length"
    DUPLICATE = "exact_duplicate"
    NOT_BEST_OF = "not_best_of_samples"


DROP_DESCRIPTIONS = {
    DropReason.INVALID_RECORD: "invalid record (bad JSON, unknown schema, missing fields)",
    DropReason.REDACTED: "secrets were withheld from it (--drop-redacted)",
    DropReason.TOOL_INFRA_ERROR: "a tool result is an infrastructure error (time limit, crash), not the tool's answer",
    DropReason.NOT_FINAL_ANSWER: "status is not final_answer",
    DropReason.FAILED_VERIFICATION: "failed verification (the answer is wrong)",
    DropReason.UNVERIFIED: "unverified (no reference answer or verdict)",
    DropReason.BAD_TOOL_RESULT: "a tool result is missing, empty or a placeholder",
    DropReason.ARGUMENTS_NOT_JSON: "tool-call arguments are not a JSON object",
    DropReason.INVALID_ARGUMENTS: "unknown tool or arguments that fail its schema",
    DropReason.REPEATED_CALL: "the same call (name + arguments) repeated",
    DropReason.TOO_MANY_TOOL_CALLS: "more tool calls than max_tool_calls",
    DropReason.NO_FINAL_ANSWER: "no final text answer",
    DropReason.HOLDS_TURN_MARKER: "an assistant turn's text holds the student template's end-of-turn marker",
    DropReason.TOO_LONG: "longer than max_seq_length tokens",
    DropReason.DUPLICATE: "exact duplicate of a kept conversation",
    DropReason.NOT_BEST_OF: "another sample of the prompt was kept (best-of)",
}


class DroppedRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    line: int
    task_id: str | None = None
    sample: int = 0
    reason: DropReason
    detail: str


class TokenStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: int = 0
    max: int = 0
    mean: float = 0.0


class VerificationStats(PassRates):
    """How many answers were right, over every valid record (before any filter): shared.verdicts'
    PassRates (pass@1 and pass@k over the prompts with a verified sample, unverified ones apart)."""

    records: int = 0
    # pass@1 under its older name (0 when nothing was verified).
    pass_rate: float = 0.0


class ConvertReport(Record):
    """What `distill convert` kept and dropped; written to OUT/report.json."""

    source: str
    tokenizer: str
    out_dir: str
    format: Literal["chat", "text"]
    max_tool_calls: int
    max_seq_length: int
    split_ratios: tuple[float, float, float]
    require_verified: bool = False
    best_of: bool = False
    drop_redacted: bool = False
    # Every tool result of the kept conversations was written as PLACEHOLDER_RESULT (a counterfactual).
    placeholder_results: bool = False
    records: int = 0
    kept: int = 0
    dropped: dict[DropReason, int] = Field(default_factory=lambda: {r: 0 for r in DropReason})
    splits: dict[str, int] = Field(default_factory=lambda: {s: 0 for s in SPLITS})
    tokens: TokenStats = Field(default_factory=TokenStats)
    verification: VerificationStats = Field(default_factory=VerificationStats)
    # Turns with the teacher's reasoning in the kept conversations, and what `--reasoning` did.
    reasoning: ReasoningStats = Field(default_factory=ReasoningStats)
    drops: list[DroppedRecord] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)


ProgressCallback = Callable[[int, int, int], Any]
"""Called as bytes are read: (bytes read so far, kept, dropped)."""
