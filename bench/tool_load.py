"""Issue 13's scenario: tools under load, distill against a bare asyncio + openai client.

    python -m bench.tool_load '{"prompts": 480, "files": 1000, "latency_s": 1.0, "concurrency": 32}'

A teacher that answers in `latency_s`, one grep per prompt over a generated tree of `files` small
files (bench/workspace.py's make_tree: the name asked about is defined once, so a grep reads them all), `concurrency` conversations in flight (and as many teacher slots). Prints one JSON object:
records holding real grep lines, records whose grep result is a time-out, tool infrastructure
errors, dead letters, and the teacher's utilization (busy slot share over the saturated window,
bench/generation.py's `saturation`) for distill and for a bare client that sends the same two
requests per prompt with the grep answer it computed once: the most any client gets out of it.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import tempfile
from pathlib import Path

from bench.generation import saturation, trace, write_prompts
from bench.simproc import sim_teacher_process
from bench.workspace import make_tree
from distill.coordinator.collector import CONVERSATIONS_FILE
from distill.coordinator.redis_server import EmbeddedRedis
from distill.shared.records import Conversation
from distill.shared.settings import GenerationLimits, Settings, TeacherConfig
from distill.worker.toolcore import ToolCore

GREP_LINE = re.compile(r"^[^\s:]+:\d+: ", re.MULTILINE)


def distill_run(root: Path, workspace: Path, prompts: Path, url: str, concurrency: int, in_flight: int) -> dict:
    import ray

    from distill.coordinator.run import generate

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    server = EmbeddedRedis(root / "redis")
    try:
        settings = Settings(
            run="tool-load", out_dir=root / "runs", workspace=workspace, redis_url=server.start(),
            teachers=[TeacherConfig(name="sim", base_url=url, model="sim", max_concurrency=concurrency, timeout_s=120)],
            concurrency=in_flight, limits=GenerationLimits(max_tool_calls=8),
        )
        result = generate(settings, prompts)
    finally:
        server.stop()
        ray.shutdown()
    records = [Conversation.model_validate_json(line)
               for line in (settings.run_dir() / CONVERSATIONS_FILE).read_text().splitlines() if line.strip()]
    greps = [m for r in records for m in r.messages if m.role == "tool" and m.name == "grep"]
    return {
        "records": len(records),
        "final_answer": sum(r.status == "final_answer" for r in records),
        "records_with_real_grep_lines": sum(
            any(m.role == "tool" and m.name == "grep" and GREP_LINE.search(m.content or "") for m in r.messages)
            for r in records),
        "grep_results_timed_out": sum("time limit" in (m.content or "") or "Timed out" in (m.content or "")
                                      for m in greps),
        "dead": result.dead,
        # getattr: the same script measures the code before issue 13 (no tool numbers there).
        "tool_infra_errors": sum(n["infra_error"] for n in getattr(result, "tools", {}).values()),
        "tools": getattr(result, "tools", None),
        "tool_processes": getattr(result, "tool_processes", None),
        "wall_s": round(result.elapsed_s, 2),
    }


async def bare_run(prompts: list[str], url: str, concurrency: int, tools: list[dict], answer: str) -> None:
    """Two requests per prompt, `concurrency` at once: the call, then the answer after the result."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=120)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for prompt in prompts:
        queue.put_nowait(prompt)

    async def worker() -> None:
        while not queue.empty():
            prompt = queue.get_nowait()
            messages: list[dict] = [{"role": "user", "content": prompt}]
            first = await client.chat.completions.create(model="sim", messages=messages, tools=tools, max_tokens=1024)
            call = first.choices[0].message.tool_calls[0]
            messages += [first.choices[0].message.model_dump(exclude_none=True),
                         {"role": "tool", "tool_call_id": call.id, "content": answer}]
            await client.chat.completions.create(model="sim", messages=messages, tools=tools, max_tokens=1024)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()


def utilization(url: str, slots: int) -> float:
    fraction, _window = saturation(trace(url), slots)
    return round(fraction, 4)


def measure(prompts: int = 480, files: int = 1000, latency_s: float = 1.0, concurrency: int = 32,
            in_flight: int | None = None) -> dict:
    """`concurrency`: the teacher's slots and the bare client's tasks; `in_flight`: distill's
    conversations in flight (`--concurrency`), the same unless given."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        # Each topic is defined once, in the last file: every grep walks the whole tree.
        workspace = make_tree(root / "workspace", files)
        prompts_file = write_prompts(root / "p.jsonl", prompts)
        with sim_teacher_process(latency_s, tool_rounds=1) as url:
            ours = distill_run(root, workspace, prompts_file, url, concurrency, in_flight or concurrency)
            ours["teacher_utilization"] = utilization(url, concurrency)
        texts = [json.loads(line)["prompt"] for line in prompts_file.read_text().splitlines()]
        grep = ToolCore(workspace).answer("grep", {"pattern": "Collector", "max_results": 20}).text
        tools = [{"type": "function", "function": {"name": "grep", "description": "search",
                                                   "parameters": {"type": "object", "properties": {
                                                       "pattern": {"type": "string"}}, "required": ["pattern"]}}}]
        with sim_teacher_process(latency_s, tool_rounds=1) as url:
            asyncio.run(bare_run(texts, url, concurrency, tools, grep))
            bare = utilization(url, concurrency)
    return {"prompts": prompts, "files": files, "latency_s": latency_s, "concurrency": concurrency,
            "in_flight": in_flight or concurrency, "distill": ours,
            "bare_client_teacher_utilization": bare,
            "utilization_ratio": round(ours["teacher_utilization"] / bare, 4) if bare else None}


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1] if len(sys.argv) > 1 else "{}"))))
