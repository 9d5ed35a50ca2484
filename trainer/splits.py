"""train / valid / test: a stable split by task id, written under temporary names and renamed only
when complete, with the small splits never left empty while another can give a line."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from distill.trainer.convert_report import PLACEHOLDER_RESULT, SPLITS
from distill.trainer.errors import TrainerError
from distill.trainer.filters import Kept


def split_of(task_id: str, ratios: tuple[float, float, float]) -> str:
    """Deterministic split from the prompt id, so every attempt and sample of a prompt lands in the same split."""
    bucket = int(hashlib.sha256(task_id.encode()).hexdigest()[:15], 16) / 16**15
    if bucket < ratios[0]:
        return "train"
    if bucket < ratios[0] + ratios[1]:
        return "valid"
    return "test"


def check_ratios(ratios: tuple[float, float, float]) -> tuple[float, float, float]:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6 or ratios[0] <= 0:
        raise TrainerError(f"split ratios {ratios}: need three non-negative numbers (train > 0) that add up to 1")
    return (float(ratios[0]), float(ratios[1]), float(ratios[2]))


def _move_first_line(source: Path, target: Path) -> None:
    with source.open("r", encoding="utf-8") as handle:
        first = handle.readline()
        rest = handle.read()
    source.write_text(rest, encoding="utf-8")
    with target.open("a", encoding="utf-8") as handle:
        handle.write(first)


def _balance(temp: dict[str, Path], counts: dict[str, int]) -> None:
    """Make train non-empty, and valid non-empty once there are two examples (mlx-lm validates)."""
    total = sum(counts.values())
    if total >= 1 and counts["train"] == 0:
        donor = max(("valid", "test"), key=lambda s: counts[s])
        _move_first_line(temp[donor], temp["train"])
        counts[donor] -= 1
        counts["train"] += 1
    if total >= 2 and counts["valid"] == 0:
        donor = "test" if counts["test"] > 0 else "train"
        _move_first_line(temp[donor], temp["valid"])
        counts[donor] -= 1
        counts["valid"] += 1


def with_placeholder_results(payload: dict[str, Any]) -> dict[str, Any]:
    """A chat line with every tool message's content replaced by PLACEHOLDER_RESULT (the rest kept)."""
    messages = [{**m, "content": PLACEHOLDER_RESULT} if m.get("role") == "tool" else m for m in payload["messages"]]
    return {**payload, "messages": messages}


class SplitFiles:
    """The three split files, written under temporary names and renamed only when complete."""

    def __init__(self, out: Path, placeholder_results: bool = False) -> None:
        self.out = out
        self.placeholder_results = placeholder_results
        self.temp = {name: out / f".{name}.jsonl.partial" for name in SPLITS}
        self.counts = {name: 0 for name in SPLITS}
        self.handles: dict[str, Any] = {}

    def __enter__(self) -> SplitFiles:
        self.handles = {name: self.temp[name].open("w", encoding="utf-8") for name in SPLITS}
        return self

    def write(self, kept: Kept) -> None:
        payload = with_placeholder_results(kept.payload) if self.placeholder_results else kept.payload
        self.handles[kept.split].write(json.dumps(payload, ensure_ascii=False) + "\n")
        self.counts[kept.split] += 1

    def finish(self) -> dict[str, int]:
        self._close()
        _balance(self.temp, self.counts)
        for name in SPLITS:
            final = self.out / f"{name}.jsonl"
            if self.counts[name]:
                os.replace(self.temp[name], final)
            else:
                self.temp[name].unlink(missing_ok=True)
                final.unlink(missing_ok=True)
        return dict(self.counts)

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        self._close()
        if error is not None:
            for partial in self.temp.values():
                partial.unlink(missing_ok=True)

    def _close(self) -> None:
        for handle in self.handles.values():
            handle.close()
