"""The worker's hot path, in one process: CPU per request, and where it goes.

    python -m bench.profile                 # CPU ms per request: distill's worker path vs pydantic-ai's floor
    python -m bench.profile --top 25        # plus cProfile's top functions of the worker path

"worker path" runs real conversations (agent, tools, HTTP, capture, record) against a simulated
teacher with no latency, through the same `Conversations` object a Ray worker uses; its tools run
in the worker's tool processes, whose CPU is reported apart (`tool_cpu_ms_per_request`) and in
the total. "floor" runs
the same agent and tools with pydantic-ai's in-process FunctionModel: no HTTP, no capture, no
record, so it is what any pydantic-ai based worker pays at least. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import inspect
import io
import json
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.simproc import sim_teacher_process
from bench.workspace import make_workspace
from distill.shared.records import PromptTask
from distill.shared.settings import GenerationLimits, TeacherConfig
from distill.worker.agent import Conversations
from distill.worker.toolcore import ToolCore


def _task(index: int) -> PromptTask:
    topics = ["Collector", "EmbeddedRedis", "requeue_orphans", "WorkerSpec", "RunKeys", "check_prompts"]
    return PromptTask(task_id=f"t{index}", run="profile", prompt=f"Where is {topics[index % 6]} defined? #{index}")


async def _bounded(count: int, concurrency: int, one: Any) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def run(index: int) -> Any:
        async with gate:
            return await one(index)

    return await asyncio.gather(*(run(index) for index in range(count)))


async def worker_path(url: str, workspace: Path, count: int, concurrency: int,
                      profiler: cProfile.Profile | None) -> dict[str, float]:
    teacher = TeacherConfig(name="sim", base_url=url, model="sim", max_concurrency=concurrency, timeout_s=60)
    conversations = Conversations(ToolCore(workspace, limits=GenerationLimits(max_tool_calls=8)), system_prompt="You help.")
    try:
        await _bounded(8, concurrency, lambda i: conversations.run(_task(i), teacher))  # warm-up
        if profiler:
            profiler.enable()
        cpu, tool_cpu = time.process_time(), conversations.tool_pool.cpu_seconds()
        records = await _bounded(count, concurrency, lambda i: conversations.run(_task(i), teacher))
        cpu, tool_cpu = time.process_time() - cpu, conversations.tool_pool.cpu_seconds() - tool_cpu
        if profiler:
            profiler.disable()
        processes = conversations.tool_pool.processes
    finally:
        await conversations.aclose()
    bad = [r.status for r in records if r.status != "final_answer"]
    if bad:
        raise RuntimeError(f"{len(bad)} conversations did not end with an answer: {sorted(set(bad))}")
    requests = sum(r.usage.requests for r in records)
    return {"requests": requests, "cpu_ms_per_request": round(1000 * cpu / requests, 3),
            "tool_cpu_ms_per_request": round(1000 * tool_cpu / requests, 3),
            "total_cpu_ms_per_request": round(1000 * (cpu + tool_cpu) / requests, 3), "tool_processes": processes}


def _in_process(core: ToolCore, name: str) -> Callable[..., str]:
    """The core's tool as a plain function of its schema's parameters, run in this process."""
    schema = core.offered[name]
    signature = inspect.signature(schema)

    @functools.wraps(schema)
    def run(*args: Any, **kwargs: Any) -> str:
        return core.answer(name, dict(signature.bind(*args, **kwargs).arguments)).text

    return run


async def floor(workspace: Path, count: int, concurrency: int) -> dict[str, float]:
    from pydantic_ai import Agent, Tool, UsageLimits
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    def script(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        # The simulated teacher's plan: grep, read what it found, answer.
        turn = sum(1 for m in messages if isinstance(m, ModelResponse))
        if turn == 0:
            return ModelResponse(parts=[ToolCallPart("grep", {"pattern": "Collector", "max_results": 20}, tool_call_id="a")])
        if turn == 1:
            return ModelResponse(parts=[ToolCallPart("read_file", {"path": "project/module_00.py", "start_line": 1,
                                                                   "end_line": 40}, tool_call_id="b")])
        return ModelResponse(parts=[TextPart("It is defined in project/module_00.py.")])

    # The tools run in pydantic-ai's thread pool: what any pydantic-ai worker pays at least.
    core = ToolCore(workspace)
    agent = Agent(FunctionModel(script), system_prompt="You help.",
                  tools=[Tool(_in_process(core, name), max_retries=2) for name in core.offered], retries=2)
    limits = UsageLimits(request_limit=10, tool_calls_limit=8)
    await _bounded(8, concurrency, lambda i: agent.run(f"q{i}", usage_limits=limits))
    cpu = time.process_time()
    await _bounded(count, concurrency, lambda i: agent.run(_task(i).prompt, usage_limits=limits))
    cpu = time.process_time() - cpu
    return {"requests": 3 * count, "cpu_ms_per_request": round(1000 * cpu / (3 * count), 3)}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--conversations", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--top", type=int, default=0, help="print cProfile's top N functions of the worker path")
    args = parser.parse_args()
    profiler = cProfile.Profile() if args.top else None
    with tempfile.TemporaryDirectory() as scratch, sim_teacher_process(0.0) as url:
        workspace = make_workspace(Path(scratch))
        result = {
            "worker_path": asyncio.run(worker_path(url, workspace, args.conversations, args.concurrency, profiler)),
            "pydantic_ai_floor": asyncio.run(floor(workspace, args.conversations, args.concurrency)),
        }
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(args.top)
        print(text.getvalue())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
