"""The benchmark command runs end to end on tiny sizes (no timing is asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO


def test_bench_quick_writes_results_and_plots(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (results,) = tmp_path.glob("*-quick.json")
    figures = json.loads(results.read_text())["figures"]
    fixed, tokens = figures["efficiency"]
    assert fixed["conversations"] == 12 and 0 < fixed["efficiency"] <= 1.05
    assert tokens["conversations"] == 8 and tokens["mean_service_s"] > tokens["latency_s"]
    assert fixed["redis_commands_per_conversation"] > 0
    assert set(fixed["cpu_ms_per_request"]) == {"workers", "coordinator", "redis", "sim_teacher", "tools", "other"}
    assert fixed["cpu_ms_per_request"]["workers"] > 0
    (tools,) = figures["tools"]
    assert tools["conversations"] == 8 and tools["tool_infra_errors"] == 0 and tools["tool_processes"] >= 1
    assert tools["tool_calls"]["grep"]["ok"] == 8
    (profile,) = figures["profile"]
    assert profile["worker_path"]["cpu_ms_per_request"] > 0 and profile["pydantic_ai_floor"]["requests"] == 48
    assert figures["enqueue"][0]["prompts"] == 1000 and figures["convert"][0]["kept"] == 100
    (viewer,) = figures["viewer"]
    assert viewer["records"] == 2000 and viewer["index_s"] > 0 and len(viewer["latency_ms"]) == 15
    assert {p.name.split("-quick-")[1] for p in tmp_path.glob("*.png")} == {"efficiency.png", "cpu-per-request.png",
                                                                          "enqueue-memory.png"}
