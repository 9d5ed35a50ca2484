"""Conversion rate through `distill convert`, and `distill train` against bare `mlx_lm lora`.

    python -m bench.trainer convert 10000
    python -m bench.trainer train 60
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distill.shared.records import Conversation
from distill.teachers.mlx_server import mlx_child_env
from tests.tiny_model import build_tiny_model

TOOLS = [{"type": "function", "function": {"name": "grep", "description": "Search files.", "parameters": {
    "type": "object", "properties": {"pattern": {"type": "string"}, "path": {"type": "string", "default": "."}},
    "required": ["pattern"]}}}]


def conversation(index: int) -> dict:
    """A realistic two-turn trajectory; each one different so none is dropped as a duplicate."""
    call = {"id": f"call_{index}", "type": "function", "function": {"name": "grep", "arguments": {"pattern": f"Collector{index}"}}}
    return Conversation.model_validate({
        "task_id": f"t{index:07d}", "run": "bench", "prompt": f"Where is Collector{index} defined?", "status": "final_answer",
        "messages": [
            {"role": "system", "content": "You answer questions about the code in the workspace."},
            {"role": "user", "content": f"Where is Collector{index} defined?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"call_{index}", "name": "grep",
             "content": f"coordinator/collector.py:{index % 400}: class Collector{index}:"},
            {"role": "assistant", "content": f"Collector{index} is defined in coordinator/collector.py."},
        ],
        "tools": TOOLS, "teacher": {"endpoint": "sim", "base_url": "http://127.0.0.1:1/v1", "model": "sim"},
        "usage": {"requests": 2, "input_tokens": 200, "output_tokens": 40, "tool_calls": 1},
        "timings": {"started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z", "duration_s": 1.0},
        "attempt": 1, "worker": {"node": "bench", "actor": "w", "pid": 1},
    }).model_dump(mode="json")


def measure_convert(count: int) -> dict:

    from distill.trainer.convert import convert

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_tiny_model(root / "model")
        source = root / "conversations.jsonl"
        with source.open("w") as handle:
            for index in range(count):
                handle.write(json.dumps(conversation(index)) + "\n")
        started = time.perf_counter()
        report = convert(source, model, root / "data")
        seconds = time.perf_counter() - started
    return {"conversations": count, "kept": report.kept, "seconds": round(seconds, 2),
            "conversations_per_s": round(count / seconds, 1)}


ROUNDS = 5


def measure_train(iters: int) -> dict:
    """Same tiny model, same data, same knobs: tokens/s of each, as each reports it."""
    env = mlx_child_env()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_tiny_model(root / "model", num_layers=4, hidden_size=256, intermediate_size=512)
        data = root / "data"
        data.mkdir()
        lines = [json.dumps({"messages": [m for m in conversation(i)["messages"]], "tools": TOOLS}) for i in range(64)]
        for split in ("train", "valid"):
            (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
        common = ["--iters", str(iters), "--batch-size", "4", "--num-layers", "4", "--learning-rate", "1e-4"]
        # Loss on every token, as bare mlx_lm lora does here: both count the same tokens per second.
        config = root / "train.yaml"
        config.write_text("train_on: all\n")
        # Alternate the two, so a slow spell of a noisy machine lands on both; report the median ratio.
        rounds = []
        for index in range(ROUNDS):
            bare_steady, bare_error = _bare(model, data, root / f"bare{index}", iters, common, env)
            ours_steady, ours_error = _ours(model, data, root / f"ours{index}", iters, config, env)
            rounds.append({"bare": bare_steady, "distill": ours_steady, "errors": bare_error + ours_error})
    ratios = sorted(r["distill"] / r["bare"] for r in rounds if r["bare"] and r["distill"])
    median = ratios[len(ratios) // 2] if ratios else None
    return {
        "iters": iters,
        "rounds": len(rounds),
        "bare_tokens_per_s": _median([r["bare"] for r in rounds]),
        "distill_tokens_per_s": _median([r["distill"] for r in rounds]),
        "ratio": round(median, 4) if median else None,
        "ratios": [round(r, 4) for r in ratios],
        "bare_ok": all(r["bare"] for r in rounds),
        "distill_ok": all(r["distill"] for r in rounds),
        "errors": "".join(r["errors"] for r in rounds)[-1000:],
    }


def _bare(model: Path, data: Path, adapters: Path, iters: int, common: list[str], env: dict) -> tuple[float | None, str]:
    run = subprocess.run(
        [sys.executable, "-m", "mlx_lm", "lora", "--model", str(model), "--train", "--data", str(data),
         "--adapter-path", str(adapters), "--steps-per-report", "10", "--steps-per-eval", str(iters * 10),
         "--val-batches", "1", *common],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    # mlx-lm's console UI prints "  ITER    LOSS ▼    TOKENS/S    TRAINEDk" per report.
    rates = [float(x.replace(",", "")) for x in
             re.findall(r"^\s*\d+\s+[0-9.]+ [▼▲]\s+([0-9,.]+)\s",
                        re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr), re.MULTILINE)]
    return _steady(rates), (run.stderr[-300:] if run.returncode else "")


def _ours(model: Path, data: Path, adapters: Path, iters: int, config: Path, env: dict) -> tuple[float | None, str]:
    run = subprocess.run(
        [sys.executable, "-m", "distill", "train", "--config", str(config), "--data", str(data), "--model", str(model),
         "--adapter-path", str(adapters), "--iters", str(iters), "--batch-size", "4", "--num-layers", "4",
         "--learning-rate", "1e-4"],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    metrics_file = adapters / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.exists() else []
    rates = [m["tokens_per_second"] for m in metrics if m["kind"] == "train" and m.get("tokens_per_second")]
    return _steady(rates), (run.stderr[-300:] if run.returncode else "")


def _steady(rates: list[float]) -> float | None:
    # The first report includes compilation warm-up in both: compare the steady state.
    return round(sum(rates[1:]) / len(rates[1:]), 1) if len(rates) > 1 else None


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v)
    return known[len(known) // 2] if known else None


if __name__ == "__main__":
    what, size = sys.argv[1], int(sys.argv[2])
    print(json.dumps(measure_convert(size) if what == "convert" else measure_train(size)))
