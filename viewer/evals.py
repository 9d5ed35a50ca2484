"""eval.json side by side: every variant (base, adapter, teacher) on the same prompt in one row.

Read as plain JSON: variants and per-prompt fields are shown when present (accuracy against
expected answers lands in eval.json with issue 14), so an older or newer report still opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Totals in the order a reader compares them; any other numeric total follows.
TOTALS_ORDER = (
    "prompts", "with_reference", "correct", "wrong", "no_answer", "named_extra_files", "accuracy", "final_answers", "tool_calls", "mean_calls_per_prompt", "distinct_calls",
    "repeated_calls", "invalid_calls", "tool_limit_hits", "errors",
)
CORRECT_KEYS = ("correct", "passed")
# Totals that are shares of one, shown as percentages.
SHARES = ("accuracy",)


@dataclass
class Cell:
    status: str
    tool_calls: int
    calls: list[str]
    answer: str | None
    error: str | None
    seconds: float | None
    correct: bool | None


@dataclass
class PromptRow:
    id: str
    prompt: str
    cells: list[Cell | None] = field(default_factory=list)


@dataclass
class EvalTable:
    variants: list[str]
    totals: list[tuple[str, list[Any]]]
    rows: list[PromptRow]


def _correct(prompt: dict[str, Any]) -> bool | None:
    for key in CORRECT_KEYS:
        value = prompt.get(key)
        if isinstance(value, bool):
            return value
        if isinstance(value, dict) and isinstance(value.get("passed"), bool):
            return value["passed"]
    verdict = prompt.get("verdict")
    if isinstance(verdict, dict) and isinstance(verdict.get("passed"), bool):
        return verdict["passed"]
    return None


def eval_table(report: dict[str, Any]) -> EvalTable:
    variants = [v for v in report.get("variants") or [] if isinstance(v, dict)]
    names = [str(v.get("name") or f"variant {i + 1}") for i, v in enumerate(variants)]
    keys: list[str] = []
    for variant in variants:
        for key, value in (variant.get("totals") or {}).items():
            if key not in keys and isinstance(value, int | float) and not isinstance(value, bool):
                keys.append(key)
    keys.sort(key=lambda k: (TOTALS_ORDER.index(k) if k in TOTALS_ORDER else len(TOTALS_ORDER), k))
    totals = [(key, [(v.get("totals") or {}).get(key) for v in variants]) for key in keys]
    rows: dict[str, PromptRow] = {}
    for position, variant in enumerate(variants):
        for prompt in variant.get("prompts") or []:
            if not isinstance(prompt, dict):
                continue
            key = str(prompt.get("id") or prompt.get("prompt"))
            row = rows.setdefault(key, PromptRow(id=key, prompt=str(prompt.get("prompt") or ""), cells=[None] * len(variants)))
            row.cells[position] = Cell(
                status=str(prompt.get("status") or "?"),
                tool_calls=int(prompt.get("tool_calls") or 0),
                calls=[str(c) for c in prompt.get("calls") or []],
                answer=prompt.get("answer"),
                error=prompt.get("error"),
                seconds=prompt.get("seconds"),
                correct=_correct(prompt),
            )
    return EvalTable(variants=names, totals=totals, rows=list(rows.values()))
