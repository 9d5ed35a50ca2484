"""Conversations/s against a real mlx_lm.server serving the bundled small model, by concurrency.

    python -m bench.mlx_teacher '{"concurrency": 4, "prompts": 4}'
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.generation import write_prompts
from distill.shared.settings import GenerationLimits, Settings, TeacherConfig
from distill.teachers.bundle import ensure_bundle
from distill.teachers.supervisor import ServeOptions, TeacherSupervisor

REPO = Path(__file__).resolve().parents[1]


def measure(concurrency: int, prompts: int, max_tokens: int = 64) -> dict:
    import ray

    from distill.coordinator.run import generate

    model = ensure_bundle(REPO / "data" / "models" / "smollm2-135m-instruct")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        supervisor = TeacherSupervisor(ServeOptions(model=str(model), decode_concurrency=concurrency,
                                                    prompt_concurrency=concurrency, log_dir=root / "logs"))
        url = supervisor.start()
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            settings = Settings(
                run="bench-mlx", out_dir=root / "runs", workspace=REPO, concurrency=concurrency,
                teachers=[TeacherConfig(name="smollm2", base_url=url, model=str(model), max_tokens=max_tokens,
                                        max_concurrency=concurrency, timeout_s=900)],
                limits=GenerationLimits(max_tool_calls=2, max_requests=3),
            )
            started = time.monotonic()
            result = generate(settings, write_prompts(root / "p.jsonl", prompts))
            elapsed = time.monotonic() - started
        finally:
            ray.shutdown()
            supervisor.stop()
    teacher = result.endpoints["smollm2"]
    return {
        "concurrency": concurrency,
        "prompts": prompts,
        "conversations": result.conversations,
        "dead": result.dead,
        "wall_s": round(elapsed, 1),
        "conversations_per_min": round(60 * result.conversations / elapsed, 2),
        "requests": teacher["requests"],
        "output_tokens": teacher["output_tokens"],
        "mean_request_s": teacher["mean_latency_s"],
    }


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
