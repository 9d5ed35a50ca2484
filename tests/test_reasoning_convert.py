"""A reasoning teacher's records convert for a Qwen3-family student with --reasoning keep and drop,
with exact masks, and train with `distill train` on a tiny model of that family."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from distill.trainer.convert import convert
from distill.trainer.errors import TrainerError
from distill.trainer.render import load_tokenizer, render_masked
from tiny_model import build_tiny_model
from trainer_fixtures import conversation, read_jsonl, write_jsonl

REASONS = ("I should read config.py first.", "config.py parses TOML, so that is the answer.")


def reasoning_record(task_id: str) -> dict[str, Any]:
    record = conversation(task_id, prompt=f"What does config.py do? ({task_id})")
    turns = [m for m in record["messages"] if m["role"] == "assistant"]
    for turn, reasoning in zip(turns, REASONS):
        turn["reasoning"] = reasoning
    return record


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("qwen3") / "model", arch="qwen3", family="qwen3")


@pytest.fixture(scope="module")
def run_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run")
    # A plain chat line from a dataset whose teacher wrote <think> blocks into the content.
    plain = {"messages": [{"role": "user", "content": "Hello?"},
                          {"role": "assistant", "content": "<think>\nGreet back.\n</think>\n\nHi there."}]}
    return write_jsonl(root / "conversations.jsonl", [reasoning_record(f"t-{i}") for i in range(4)] + [plain])


def converted(run_file: Path, qwen3: Path, out: Path, mode: str) -> tuple[Any, list[dict[str, Any]]]:
    report = convert(run_file, qwen3, out, split=(0.5, 0.5, 0.0), reasoning=mode)  # type: ignore[arg-type]
    lines = read_jsonl(out / "train.jsonl") + read_jsonl(out / "valid.jsonl")
    return report, lines


def test_keep_renders_qwen3_thinking_and_masks_it_exactly(run_file: Path, qwen3: Path, tmp_path: Path) -> None:
    report, lines = converted(run_file, qwen3, tmp_path / "keep", "keep")
    assert report.kept == 5
    stats = report.reasoning
    assert (stats.applied, stats.template_thinks, stats.turns_with_reasoning, stats.kept, stats.dropped) == (
        "keep", True, 9, 9, 0)
    tokenizer = load_tokenizer(qwen3)
    record = next(line for line in lines if len(line["messages"]) == 5)
    assert [m.get("reasoning_content") for m in record["messages"] if m["role"] == "assistant"] == list(REASONS)
    assert all("<think>" not in (m.get("content") or "") for line in lines for m in line["messages"])
    masked = render_masked(tokenizer, record["messages"], record["tools"])
    assert masked.trained_text(tokenizer) == [
        (f"<think>\n{REASONS[0]}\n</think>\n\n"
         '<tool_call>\n{"name": "read_file", "arguments": {"path": "config.py"}}\n</tool_call><|im_end|>'),
        f"<think>\n{REASONS[1]}\n</think>\n\nIt parses the TOML settings file.<|im_end|>",
    ]
    plain = next(line for line in lines if len(line["messages"]) == 2)
    assert plain["messages"][1] == {"role": "assistant", "content": "Hi there.", "reasoning_content": "Greet back."}


def test_drop_trains_on_answers_alone(run_file: Path, qwen3: Path, tmp_path: Path) -> None:
    report, lines = converted(run_file, qwen3, tmp_path / "drop", "drop")
    assert (report.reasoning.turns_with_reasoning, report.reasoning.kept, report.reasoning.dropped) == (9, 0, 9)
    assert all("reasoning_content" not in m and "<think>" not in (m.get("content") or "")
               for line in lines for m in line["messages"])
    tokenizer = load_tokenizer(qwen3)
    record = next(line for line in lines if len(line["messages"]) == 5)
    trained = render_masked(tokenizer, record["messages"], record["tools"]).trained_text(tokenizer)
    assert trained == ['<tool_call>\n{"name": "read_file", "arguments": {"path": "config.py"}}\n</tool_call><|im_end|>',
                       "<think>\n\n</think>\n\nIt parses the TOML settings file.<|im_end|>"]


def test_auto_keeps_for_a_thinking_template_and_drops_for_another(run_file: Path, qwen3: Path, tiny_model_dir: Path,
                                                                   tmp_path: Path) -> None:
    assert converted(run_file, qwen3, tmp_path / "a", "auto")[0].reasoning.applied == "keep"
    report, lines = converted(run_file, tiny_model_dir, tmp_path / "b", "auto")
    assert (report.reasoning.applied, report.reasoning.dropped) == ("drop", 9)
    # Keep for a template without thinking: a <think> block opens the content.
    report, lines = converted(run_file, tiny_model_dir, tmp_path / "c", "keep")
    answers = [m["content"] for line in lines for m in line["messages"] if m["role"] == "assistant" and m["content"]]
    assert f"<think>\n{REASONS[1]}\n</think>\n\nIt parses the TOML settings file." in answers
    with pytest.raises(TrainerError, match="reasoning must be one of auto, keep, drop"):
        convert(run_file, qwen3, tmp_path / "d", reasoning="maybe")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("qwen25") / "model", num_layers=1)


@pytest.mark.parametrize("mode", ["keep", "drop"])
def test_distill_train_trains_the_qwen3_student_on_converted_reasoning(run_file: Path, qwen3: Path, tmp_path: Path,
                                                                        mode: str) -> None:
    data = tmp_path / "data"
    run = subprocess.run([sys.executable, "-m", "distill", "convert", str(run_file), "--tokenizer", str(qwen3),
                          "--out", str(data), "--split", "0.5,0.5,0", "--reasoning", mode],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 0, run.stderr[-2000:]
    # The table's caption wraps at the table's width.
    assert f"reasoning ({mode}): 9 turns had it" in " ".join(run.stdout.split())
    report = json.loads((data / "report.json").read_text())
    assert report["reasoning"]["kept" if mode == "keep" else "dropped"] == 9
    out = tmp_path / "adapter"
    run = subprocess.run([sys.executable, "-m", "distill", "train", "--data", str(data), "--model", str(qwen3),
                          "--adapter-path", str(out), "--iters", "2", "--batch-size", "1", "--num-layers", "-1"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "adapters.safetensors").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(row.get("kind") == "train" for row in rows)
