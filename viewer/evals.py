"""eval.json side by side: every variant (base, adapter, teacher) on the same prompt in one row.

Read as plain JSON: variants and per-prompt fields are shown when present (accuracy against
expected answers lands in eval.json with issue 14), so an older or newer report still opens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Totals in the order a reader compares them; any other numeric total follows.
TOTALS_ORDER = (
    "prompts", "with_reference", "correct", "wrong", "no_answer", "named_extra_files", "accuracy", "final_answers", "truncated", "tool_calls", "mean_calls_per_prompt", "distinct_calls",
    "repeated_calls", "invalid_calls", "tool_limit_hits", "errors",
)
CORRECT_KEYS = ("correct", "passed")
# Totals that are shares of one, shown as percentages.
SHARES = ("accuracy",)


@dataclass
class CallResult:
    """One tool call and the real result its tool gave (eval.json's `tool_results`)."""

    call: str
    result: str | None
    outcome: str | None
    cut: bool = False


@dataclass
class Cell:
    status: str
    tool_calls: int
    calls: list[str]
    answer: str | None
    error: str | None
    seconds: float | None
    correct: bool | None
    # Why the answer was judged right or wrong ("" where eval.json has no reason).
    verdict: str = ""
    truncated: bool = False
    # Each call with its result; empty in reports written before eval kept results.
    results: list[CallResult] = field(default_factory=list)


def _results(prompt: dict[str, Any]) -> list[CallResult]:
    found = []
    for item in prompt.get("tool_results") or []:
        if not isinstance(item, dict):
            continue
        arguments = item.get("arguments")
        shown = json.dumps(arguments, ensure_ascii=False, separators=(",", ":")) if isinstance(arguments, dict) else ""
        found.append(CallResult(call=f"{item.get('name')}({shown})", result=item.get("result"),
                                outcome=item.get("outcome"), cut=bool(item.get("result_cut"))))
    return found


def _verdict(prompt: dict[str, Any]) -> str:
    verdict = prompt.get("verdict")
    if isinstance(verdict, dict):
        verdict = verdict.get("detail")
    return verdict if isinstance(verdict, str) else ""


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
                verdict=_verdict(prompt),
                truncated=prompt.get("truncated") is True,
                results=_results(prompt),
            )
    return EvalTable(variants=names, totals=totals, rows=list(rows.values()))


def chart_files(eval_file: Path, report: dict[str, Any]) -> dict[str, tuple[Path, str]]:
    """The charts that go with an evaluation, by the name the page asks for: eval's tool-call bars
    beside eval.json, and the training loss in the evaluated adapter's folder. Only files that exist."""
    from distill.trainer.evaluate import PLOT_FILE as TOOL_CALLS_PLOT
    from distill.trainer.train_config import PLOT_FILE as LOSS_PLOT

    charts = {TOOL_CALLS_PLOT: (eval_file.parent / TOOL_CALLS_PLOT, "tool calls and answers, per variant")}
    adapter = report.get("adapter_path")
    if isinstance(adapter, str) and adapter:
        charts[LOSS_PLOT] = (Path(adapter) / LOSS_PLOT, "the adapter's training and validation loss")
    return {name: found for name, found in charts.items() if found[0].is_file()}
