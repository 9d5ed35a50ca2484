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

from shared.mlx_server import mlx_child_env
from shared.records import Conversation
from shared.tiny_model import build_tiny_model

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
    from rich.console import Console

    from trainer.convert import convert

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = build_tiny_model(root / "model")
        source = root / "conversations.jsonl"
        with source.open("w") as handle:
            for index in range(count):
                handle.write(json.dumps(conversation(index)) + "\n")
        started = time.perf_counter()
        report = convert(source, model, root / "data", console=Console(quiet=True))
        seconds = time.perf_counter() - started
    return {"conversations": count, "kept": report.kept, "seconds": round(seconds, 2),
            "conversations_per_s": round(count / seconds, 1)}


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
        bare = subprocess.run(
            [sys.executable, "-m", "mlx_lm", "lora", "--model", str(model), "--train", "--data", str(data),
             "--adapter-path", str(root / "bare"), "--steps-per-report", "10", "--steps-per-eval", str(iters * 10),
             "--val-batches", "1", *common],
            capture_output=True, text=True, env=env, timeout=1200,
        )
        # mlx-lm's console UI prints "  ITER    LOSS ▼    TOKENS/S    TRAINEDk" per report.
        bare_rates = [float(x.replace(",", "")) for x in
                      re.findall(r"^\s*\d+\s+[0-9.]+ [▼▲]\s+([0-9,.]+)\s",
                                 re.sub(r"\x1b\[[0-9;]*m", "", bare.stdout + bare.stderr), re.MULTILINE)]
        # Loss on every token, as bare mlx_lm lora does here: both count the same tokens per second.
        config = root / "train.yaml"
        config.write_text("train_on: all\n")
        ours = subprocess.run(
            [sys.executable, "-m", "distill", "train", "--config", str(config), "--data", str(data), "--model", str(model),
             "--adapter-path", str(root / "ours"), "--iters", str(iters), "--batch-size", "4", "--num-layers", "4",
             "--learning-rate", "1e-4"],
            capture_output=True, text=True, env=env, timeout=1200,
        )
        metrics = [json.loads(line) for line in (root / "ours" / "metrics.jsonl").read_text().splitlines()] \
            if (root / "ours" / "metrics.jsonl").exists() else []
    our_rates = [m["tokens_per_second"] for m in metrics if m["kind"] == "train" and m.get("tokens_per_second")]
    # The first report includes compilation warm-up in both: compare the steady state.
    bare_steady = sum(bare_rates[1:]) / max(1, len(bare_rates[1:])) if len(bare_rates) > 1 else None
    ours_steady = sum(our_rates[1:]) / max(1, len(our_rates[1:])) if len(our_rates) > 1 else None
    return {
        "iters": iters,
        "bare_tokens_per_s": round(bare_steady, 1) if bare_steady else None,
        "distill_tokens_per_s": round(ours_steady, 1) if ours_steady else None,
        "ratio": round(ours_steady / bare_steady, 4) if bare_steady and ours_steady else None,
        "bare_ok": bare.returncode == 0,
        "distill_ok": ours.returncode == 0,
        "errors": (bare.stderr[-500:] if bare.returncode else "") + (ours.stderr[-500:] if ours.returncode else ""),
    }


if __name__ == "__main__":
    what, size = sys.argv[1], int(sys.argv[2])
    print(json.dumps(measure_convert(size) if what == "convert" else measure_train(size)))
