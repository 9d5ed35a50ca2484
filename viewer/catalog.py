"""What the folders given to `distill view` hold: runs, convert outputs and eval reports.

A run folder has `conversations.jsonl` or `dead.jsonl`; a convert output has `report.json` (with
`drops` and `splits`); an evaluation is an `eval.json` (with `variants`). Folders are searched a
few levels deep, so `distill view data/runs` finds every run and the training data and adapters
the demo writes inside them.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.shared.records import CONVERSATIONS_FILE, DEAD_FILE
from distill.trainer.convert_report import REPORT_FILE, SPLITS
from distill.trainer.evaluate import EVAL_FILE

logger = logging.getLogger(__name__)

MAX_DEPTH = 4
# Folders that never hold anything to view (the embedded Redis's data, caches).
SKIPPED_DIRS = {"redis", "__pycache__", "node_modules", ".git", ".venv"}


@dataclass
class ConvertOutput:
    id: str
    path: Path
    report: dict[str, Any]

    @property
    def source(self) -> Path | None:
        source = self.report.get("source")
        return Path(source).resolve() if source else None

    @property
    def tokenizer(self) -> str | None:
        return self.report.get("tokenizer")

    def split_path(self, split: str) -> Path:
        return self.path / f"{split}.jsonl"

    @property
    def created_at(self) -> str:
        return str(self.report.get("created_at") or "")


@dataclass
class EvalOutput:
    id: str
    path: Path
    report: dict[str, Any]


@dataclass
class RunFolder:
    id: str
    path: Path
    converts: list[ConvertOutput] = field(default_factory=list)
    evals: list[EvalOutput] = field(default_factory=list)

    @property
    def conversations_path(self) -> Path:
        return self.path / CONVERSATIONS_FILE

    @property
    def dead_path(self) -> Path:
        return self.path / DEAD_FILE

    @property
    def convert(self) -> ConvertOutput | None:
        """The newest convert output made from this run: its drop reasons are the ones shown."""
        return max(self.converts, key=lambda c: c.created_at, default=None)


@dataclass
class Catalog:
    runs: list[RunFolder] = field(default_factory=list)
    converts: list[ConvertOutput] = field(default_factory=list)
    evals: list[EvalOutput] = field(default_factory=list)

    def run(self, run_id: str) -> RunFolder | None:
        return next((run for run in self.runs if run.id == run_id), None)

    def convert(self, convert_id: str) -> ConvertOutput | None:
        return next((c for c in self.converts if c.id == convert_id), None)

    def eval(self, eval_id: str) -> EvalOutput | None:
        return next((e for e in self.evals if e.id == eval_id), None)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        logger.warning("%s: not readable as JSON (%s)", path, error)
        return None
    return data if isinstance(data, dict) else None


def _walk(root: Path) -> list[Path]:
    """Folders under root (root included), MAX_DEPTH levels deep, hidden and skipped ones left out."""
    found = []
    base = len(root.parts)
    for folder, subfolders, _files in os.walk(root):
        current = Path(folder)
        found.append(current)
        if len(current.parts) - base >= MAX_DEPTH:
            subfolders.clear()
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d not in SKIPPED_DIRS)
    return found


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate


def discover(paths: list[Path]) -> Catalog:
    """Everything viewable under `paths` (folders, or an eval.json / report.json file)."""
    catalog = Catalog()
    run_ids: set[str] = set()
    other_ids: set[str] = set()
    seen: set[Path] = set()
    for root in paths:
        root = Path(root).resolve()
        if root.is_file():
            folders, files = [], [root]
        else:
            folders = _walk(root) if root.is_dir() else []
            files = [folder / name for folder in folders for name in (REPORT_FILE, EVAL_FILE)]
        for folder in folders:
            if folder in seen:
                continue
            seen.add(folder)
            if (folder / CONVERSATIONS_FILE).is_file() or (folder / DEAD_FILE).is_file():
                catalog.runs.append(RunFolder(id=_unique(folder.name, run_ids), path=folder))
        for path in files:
            if not path.is_file() or path in seen:
                continue
            seen.add(path)
            data = _read_json(path)
            if data is None:
                continue
            if path.name == EVAL_FILE or "variants" in data:
                name = path.parent.name if path.parent.name != "eval" else path.parent.parent.name
                catalog.evals.append(EvalOutput(id=_unique(name, other_ids), path=path, report=data))
            elif "drops" in data and "splits" in data:
                catalog.converts.append(ConvertOutput(id=_unique(path.parent.name, other_ids), path=path.parent, report=data))
    _attach(catalog)
    return catalog


def _attach(catalog: Catalog) -> None:
    """A convert output belongs to the run it read; an eval to the run folder that holds it."""
    for convert in catalog.converts:
        for run in catalog.runs:
            if convert.source in (run.conversations_path.resolve(), run.path.resolve()):
                run.converts.append(convert)
                break
    for evaluation in catalog.evals:
        holder = next((run for run in catalog.runs if run.path in evaluation.path.parents), None)
        holder = holder or _run_that_trained(evaluation, catalog)
        if holder is not None:
            holder.evals.append(evaluation)


def _run_that_trained(evaluation: EvalOutput, catalog: Catalog) -> RunFolder | None:
    """The run whose convert output trained the evaluated adapter (the demo keeps eval/ beside runs/).

    Followed through the adapter's distill_train.json, which names the training data folder.
    """
    adapter = evaluation.report.get("adapter_path")
    if not adapter:
        return None
    from distill.trainer.train_config import INFO_FILE

    info = _read_json(Path(adapter) / INFO_FILE) if (Path(adapter) / INFO_FILE).is_file() else None
    data_dir = (info or {}).get("data_dir")
    if not data_dir:
        return None
    data = Path(data_dir).resolve()
    return next((run for run in catalog.runs if any(c.path.resolve() == data for c in run.converts)), None)


def has_splits(convert: ConvertOutput) -> bool:
    return any(convert.split_path(split).is_file() for split in SPLITS)
