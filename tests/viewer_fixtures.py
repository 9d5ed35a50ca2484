"""Data for the viewer's tests, made by the real pipeline where it is cheap.

Conversations come from the real agent loop (`run_conversation`) against the simulated teacher,
with the real tools on a small workspace whose one file holds a `<script>` tag: the escaping test
sees it in a genuine tool result. Training data comes from the real `convert` with the tiny
model's tokenizer. A dead letter carries a real partial history; eval.json is built from the
real report models.

Import the fixture into a test module with the one it uses (`from trainer_fixtures import tiny_model`,
`from viewer_fixtures import viewer_data`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from trainer_fixtures import write_jsonl

from distill.shared.records import DeadLetter, PromptTask
from distill.shared.settings import DEFAULT_SYSTEM_PROMPT, GenerationLimits, TeacherConfig
from distill.shared.verdicts import VERDICTS_FILE, Verdict, VerdictRecord
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.trainer.convert import convert
from distill.trainer.convert_report import ConvertReport
from distill.trainer.evaluate import EvalReport, PromptEval, VariantEval, totals_of

SCRIPT = '<script>document.title = "pwned"; window.pwned = 1;</script>'
MARKER = "injectedscript"


@dataclass
class ViewerData:
    root: Path
    run_dir: Path
    data_dir: Path
    eval_file: Path
    model: Path
    records: list[dict[str, Any]]
    report: ConvertReport

    def line_of(self, task_id: str) -> int:
        return next(i for i, r in enumerate(self.records, start=1) if r["task_id"] == task_id)


def _workspace(root: Path) -> Path:
    workspace = root / "workspace"
    (workspace / "notes").mkdir(parents=True)
    lines = [f"{SCRIPT} <!-- {MARKER} -->"] + [f"line {n}: filler text for a long file" for n in range(2, 60)]
    (workspace / "notes" / "page.html").write_text("\n".join(lines) + "\n")
    (workspace / "config.py").write_text("def parse_settings():\n    return {'retries': 3}\n")
    return workspace


async def _conversations(base_url: str, workspace: Path) -> list[dict[str, Any]]:
    from distill.worker.agent import run_conversation
    from distill.worker.toolcore import ToolCore

    plans = [
        # (task id, prompt, teacher name, max tool calls, expected answer): two teachers, a
        # loop-guard stop, one answer the worker checks against its reference (a passed verdict).
        ("t-script", f"Where is {MARKER} used?", "alpha", 8, None),
        ("t-settings", "Where is parse_settings defined?", "alpha", 8, None),
        ("t-retries", "How many retries does parse_settings allow?", "beta", 8, "parse_settings"),
        ("t-limit", "Explain parse_settings completely.", "beta", 1, None),
    ]
    records = []
    for task_id, prompt, name, max_calls, expected in plans:
        teacher = TeacherConfig(name=name, base_url=base_url, model="sim-teacher")
        task = PromptTask(task_id=task_id, run="viewer-run", prompt=prompt, expected=expected)
        limits = GenerationLimits(max_tool_calls=max_calls)
        conversation = await run_conversation(
            task, teacher, ToolCore(workspace, limits=limits), system_prompt=DEFAULT_SYSTEM_PROMPT
        )
        records.append(conversation.model_dump(mode="json"))
    return records


def _dead_letter(record: dict[str, Any]) -> dict[str, Any]:
    """A real partial history: the first request and the response asking for a tool, never answered."""
    dead = DeadLetter(
        task_id="t-dead",
        run="viewer-run",
        prompt="Where is the retry policy?",
        reason="gave up after 3 attempts: teacher timed out after 60 s",
        error_type="TeacherTimeout",
        attempts=3,
        partial_messages=record["raw_messages"][:2],
        teacher=record["teacher"],
    )
    return dead.model_dump(mode="json")


def _eval_report(root: Path) -> Path:
    def prompt(id_: str, status: str, calls: list[str], answer: str | None) -> PromptEval:
        return PromptEval(
            id=id_, prompt=f"Question {id_}: where is parse_settings?", status=status,  # type: ignore[arg-type]
            tool_calls=len(calls), distinct_calls=len(set(calls)), repeated_calls=len(calls) - len(set(calls)),
            final_answer=status == "final_answer", hit_tool_limit=status == "tool_limit", calls=calls,
            answer=answer, seconds=1.5, correct=None if answer is None else "config.py" in answer,
        )

    base = [prompt("e1", "final_answer", [], "I think it is <b>somewhere</b>."),
            prompt("e2", "tool_limit", ['grep({"pattern":"x"})'] * 5, None)]
    adapter = [prompt("e1", "final_answer", ['grep({"pattern":"parse_settings"})'], "In config.py."),
               prompt("e2", "final_answer", ['grep({"pattern":"x"})'], "Found it in config.py.")]
    teacher = [prompt("e1", "final_answer", ['grep({"pattern":"parse_settings"})'], "config.py, line 1."),
               prompt("e2", "final_answer", ['read_file({"path":"config.py"})'], "In config.py.")]
    report = EvalReport(
        model="tiny", adapter_path="adapter", prompts_file="held-out.jsonl", workspace="workspace",
        max_tool_calls=5, max_tokens=128,
        variants=[
            VariantEval(name="base", server_log="base.log", prompts=base, totals=totals_of(base)),
            VariantEval(name="adapter", adapter_path="adapter", server_log="adapter.log", prompts=adapter,
                        totals=totals_of(adapter)),
            VariantEval(name="teacher", server_log="", prompts=teacher, totals=totals_of(teacher)),
        ],
    )
    path = root / "runs" / "viewer-run" / "adapter" / "eval" / "eval.json"
    path.parent.mkdir(parents=True)
    path.write_text(report.model_dump_json(indent=2))
    return path


def verdict_line(task_id: str, passed: bool | None, method: str, detail: str) -> dict[str, Any]:
    """One line of RUN/verdicts.jsonl, as `distill verify` writes it."""
    record = VerdictRecord(
        task_id=task_id, run="viewer-run", created_at=datetime.now(UTC),
        verdict=Verdict(passed=passed, method=method, detail=detail),  # type: ignore[arg-type]
    )
    return record.model_dump(mode="json")


def build_viewer_data(root: Path, model: Path) -> ViewerData:
    teacher = SimTeacher(SimTeacherConfig(latency_s=0.02))
    base_url = teacher.start()
    try:
        records = asyncio.run(_conversations(base_url, _workspace(root)))
    finally:
        teacher.stop()
    # One more shape the agent does not make on demand: a record that ended in an error.
    errored = json.loads(json.dumps(records[1]))
    errored.update(task_id="t-error", status="error", error="teacher answered nonsense")
    errored["messages"] = errored["messages"][:2]
    records.append(errored)
    run_dir = root / "runs" / "viewer-run"
    write_jsonl(run_dir / "conversations.jsonl", records)
    write_jsonl(run_dir / "dead.jsonl", [_dead_letter(records[0])])
    write_jsonl(
        run_dir / VERDICTS_FILE,
        [
            verdict_line("t-script", True, "reference", "names page.html"),
            verdict_line("t-settings", False, "judge", "wrong file"),
        ],
    )
    data_dir = run_dir / "train-data"
    report = convert(run_dir, model, data_dir, max_seq_length=100_000, split=(1.0, 0.0, 0.0))
    return ViewerData(root=root, run_dir=run_dir, data_dir=data_dir, eval_file=_eval_report(root), model=model,
                      records=records, report=report)


@pytest.fixture(scope="session")
def viewer_data(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> ViewerData:
    return build_viewer_data(tmp_path_factory.mktemp("viewer"), tiny_model)
