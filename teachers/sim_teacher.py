"""A simulated OpenAI-compatible teacher: scripted tool calls, configurable latency and failures.

Used by the tests, the fault suite and the benchmark, and by users who want to try distill
without a GPU (`distill sim-teacher`). It plays a competent agent: it looks at the offered tools,
calls a few of them with arguments derived from the prompt and the previous results, then answers
citing what the tools returned. With `script="tasks"` it answers the questions `distill prompts
synth` writes the way a competent agent would, from the real tools' results (teachers/sim_solver.py).
It records what it saw (requests, peak concurrency) at `/stats`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import random
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from distill.shared.records import PromptTask
from distill.teachers.sim_solver import next_message


@dataclass
class SimTeacherConfig:
    latency_s: float = 0.0
    # Extra latency per generated token, so long answers cost more (bench's tokens/s model).
    seconds_per_token: float = 0.0
    # Generated lengths vary by up to this share either way (seeded), as a real model's answers do;
    # without it every conversation moves in lockstep and arrives in bursts no real teacher makes.
    length_jitter: float = 0.0
    tool_rounds: int = 2
    # Call this tool (with no arguments) first when it is offered: how tests reach a custom tool.
    first_tool: str | None = None
    fail_rate: float = 0.0  # HTTP 500
    hang_rate: float = 0.0  # never answers within any sane timeout
    drop_rate: float = 0.0  # closes the connection mid-request
    malformed_rate: float = 0.0  # invalid JSON arguments or an unknown tool name
    rate_limit_rate: float = 0.0  # HTTP 429 with Retry-After
    retry_after_s: float = 1.0
    hang_s: float = 3600.0
    seed: int = 0
    model: str = "sim-teacher"
    # Scripted final answers: a prompt containing KEY is answered with the next text of its list,
    # in turn (so samples of one prompt can be right on some and wrong on others).
    answers: dict[str, list[str]] = field(default_factory=dict)
    # As a judge (a request offering pydantic-ai's output tool): fail a transcript containing any of these.
    judge_fail_markers: list[str] = field(default_factory=list)
    # "tasks": questions of `distill prompts synth`'s kinds are answered by teachers/sim_solver.py
    # (real tool calls, answers read from their results); any other prompt gets the generic script.
    script: Literal["generic", "tasks"] = "generic"
    # How it shows its thinking, as reasoning servers do: "field" sends `reasoning_content` (vLLM,
    # SGLang, DeepSeek), "tags" opens the content with a `<think>` block (mlx_lm.server, vLLM
    # without a reasoning parser). "none": it does not think.
    reasoning: Literal["none", "field", "tags"] = "none"
    # Scripted tool calls: a prompt containing KEY makes these calls (tool name, arguments) in turn,
    # then answers (tests drive the tools at chosen files with it).
    calls: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    # Every request's body is appended here as one JSON line: what a teacher was sent.
    request_log: str | None = None


# The key of a prompt line's metadata holding its plan: [{"tool": NAME, "arguments": {...}}, ...].
PLAN_KEY = "sim_calls"


def read_plans(prompts_file: Path) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The call plans of a prompts file (each line's `metadata.sim_calls`), by prompt text, for `calls`:
    how tests and demos drive any tool, an MCP server's too, offline (`distill sim-teacher --plans`)."""
    from distill.shared.prompts import read_prompts

    plans: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for task in read_prompts(prompts_file, run="sim"):
        if isinstance(task, PromptTask):
            calls = (task.metadata or {}).get(PLAN_KEY)
            if isinstance(calls, list) and calls:
                plans[task.prompt] = [(str(c["tool"]), dict(c.get("arguments") or {})) for c in calls]
    return plans


@dataclass
class SimTeacherStats:
    requests: int = 0
    completed: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    tool_calls: int = 0
    # Wall-clock span of the traffic, so a benchmark can leave out start-up time.
    first_request_at: float | None = None
    last_response_at: float | None = None
    # Seconds the answered requests were made to take (latency + tokens model): the ideal's input.
    service_s: float = 0.0
    # Requests by the sampling temperature they asked for ("none" when they sent none).
    temperatures: dict[str, int] = field(default_factory=dict)


TRACE_MAX = 200_000
# pydantic-ai asks for structured output through a tool of this name (pydantic_ai._output).
OUTPUT_TOOL = "final_result"
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{3,}")
RESULT_PATH = re.compile(r"^([^\s:]+\.[A-Za-z0-9]+):\d+:", re.MULTILINE)
STOPWORDS = {"what", "where", "which", "does", "this", "that", "with", "from", "file", "code", "when",
             "used", "have", "there", "repository", "function", "defined", "how", "the", "and"}


class SimTeacher:
    def __init__(self, config: SimTeacherConfig | None = None) -> None:
        self.config = config or SimTeacherConfig()
        self.stats = SimTeacherStats()
        self._random = random.Random(self.config.seed)
        self._lock = threading.Lock()
        self._answer_turns: dict[str, int] = {}
        # (start, end, opens a conversation) per answered request: the benchmark's saturation window.
        # Bounded, so a long-lived `distill sim-teacher` keeps a flat footprint.
        self.trace: deque[tuple[float, float, bool]] = deque(maxlen=TRACE_MAX)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # -- serving -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/trace", self._trace)
        return app

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> str:
        """Serve on a background thread; returns the base URL."""
        ready = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(self.app(), access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", port)
            self._loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="sim-teacher", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.base_url

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        except (TimeoutError, concurrent.futures.TimeoutError):
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    async def _shutdown(self) -> None:
        # Requests told to hang would hold the cleanup forever: end them first.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        assert self._runner is not None
        await self._runner.cleanup()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            snapshot = json.loads(json.dumps(asdict(self.stats)))
        # The whole process's CPU: meaningful when the teacher has a process of its own (the benchmark).
        snapshot["process_cpu_s"] = time.process_time()
        return snapshot

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = SimTeacherStats()
            self.trace.clear()

    # -- handlers ------------------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.config.model, "object": "model"}]})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def _trace(self, request: web.Request) -> web.Response:
        with self._lock:
            trace = list(self.trace)
        return web.json_response(trace)

    def _log_request(self, body: dict[str, Any]) -> None:
        assert self.config.request_log is not None
        with open(self.config.request_log, "a", encoding="utf-8") as log:
            log.write(json.dumps(body) + "\n")

    def _count_failure(self, kind: str) -> None:
        with self._lock:
            self.stats.failures[kind] = self.stats.failures.get(kind, 0) + 1

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            if self.config.request_log:
                self._log_request(body)
            self.stats.requests += 1
            self.stats.in_flight += 1
            if self.stats.first_request_at is None:
                self.stats.first_request_at = time.time()
            self.stats.peak_in_flight = max(self.stats.peak_in_flight, self.stats.in_flight)
            temperature = str(body.get("temperature", "none"))
            self.stats.temperatures[temperature] = self.stats.temperatures.get(temperature, 0) + 1
            roll = self._random.random()
            length = 1.0 + self.config.length_jitter * (2 * self._random.random() - 1)
        try:
            return await self._answer(request, body, roll, length)
        finally:
            with self._lock:
                self.stats.in_flight -= 1

    async def _answer(
        self, request: web.Request, body: dict[str, Any], roll: float, length: float = 1.0
    ) -> web.StreamResponse:
        cfg = self.config
        edges = [cfg.fail_rate, cfg.hang_rate, cfg.drop_rate, cfg.rate_limit_rate]
        if roll < edges[0]:
            self._count_failure("http_500")
            return web.json_response({"error": {"message": "simulated server error"}}, status=500)
        roll -= edges[0]
        if roll < edges[1]:
            self._count_failure("hang")
            await asyncio.sleep(cfg.hang_s)
        roll -= edges[1]
        if roll < edges[2]:
            self._count_failure("drop")
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        roll -= edges[2]
        if roll < edges[3]:
            self._count_failure("http_429")
            return web.json_response(
                {"error": {"message": "simulated rate limit"}},
                status=429,
                headers={"Retry-After": f"{cfg.retry_after_s:g}"},
            )
        roll -= edges[3]
        malformed = roll < cfg.malformed_rate
        message, finish = self.script(body, malformed=malformed)
        if malformed:
            self._count_failure("malformed")
        thought = self._think(message) if not any(
            t["function"]["name"] == OUTPUT_TOOL for t in body.get("tools") or []) else None
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in body.get("messages", [])) // 4 + 1
        reasoning_tokens = len(thought) // 4 + 1 if thought else 0
        completion_tokens = len(json.dumps(message)) // 4 + 1 + reasoning_tokens
        service_s = cfg.latency_s + cfg.seconds_per_token * completion_tokens * length
        started = time.time()
        await asyncio.sleep(service_s)
        opens = not any(m.get("role") == "assistant" for m in body.get("messages", []))
        with self._lock:
            self.stats.completed += 1
            self.stats.tool_calls += len(message.get("tool_calls") or [])
            self.stats.last_response_at = time.time()
            self.stats.service_s += service_s
            self.trace.append((started, self.stats.last_response_at, opens))
        return web.json_response(
            {
                "id": f"chatcmpl-{self.stats.requests}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", cfg.model),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
                },
            }
        )

    def _think(self, message: dict[str, Any]) -> str | None:
        """Give `message` the thinking that led to it, in the configured shape; returns it."""
        if self.config.reasoning == "none":
            return None
        calls = message.get("tool_calls") or []
        plan = f"I should call {calls[0]['function']['name']} first." if calls else "I have what I need to answer."
        thought = f"The user wants an answer from the workspace. {plan}"
        if self.config.reasoning == "field":
            message["reasoning_content"] = thought
        else:
            message["content"] = f"<think>\n{thought}\n</think>\n\n{message.get('content') or ''}"
        return thought

    # -- the script ----------------------------------------------------------------------------

    def script(self, body: dict[str, Any], *, malformed: bool = False) -> tuple[dict[str, Any], str]:
        """The next assistant message for this conversation: a tool call, or the final answer."""
        messages = body.get("messages", [])
        offered = {t["function"]["name"] for t in body.get("tools") or []}
        if OUTPUT_TOOL in offered:
            return self._judge(messages), "tool_calls"
        if self.config.script == "tasks" and not malformed:
            solved = next_message(messages, offered)
            if solved is not None:
                return solved, "tool_calls" if solved.get("tool_calls") else "stop"
        rounds = sum(1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls"))
        results = [str(m.get("content") or "") for m in messages if m.get("role") == "tool"]
        prompt = next((str(m.get("content")) for m in messages if m.get("role") == "user"), "")
        planned = next((calls for key, calls in self.config.calls.items() if key in prompt), None)
        if planned is not None and offered and rounds < len(planned):
            planned_name, planned_arguments = planned[rounds]
            call = {"id": f"call_{rounds}_{len(messages)}", "type": "function",
                    "function": {"name": planned_name, "arguments": json.dumps(planned_arguments)}}
            return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        if planned is None and offered and rounds < self.config.tool_rounds:
            arguments: dict[str, Any]
            if rounds == 0 and self.config.first_tool in offered:
                name, arguments = self.config.first_tool, {}
            else:
                name, arguments = self._plan(rounds, prompt, results, offered)
            if malformed:
                name, raw = (name, "{not json") if rounds % 2 == 0 else ("rm_rf", json.dumps(arguments))
            else:
                raw = json.dumps(arguments)
            call = {"id": f"call_{rounds}_{len(messages)}", "type": "function",
                    "function": {"name": name, "arguments": raw}}
            return {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        scripted = self._scripted_answer(prompt)
        if scripted is not None:
            return {"role": "assistant", "content": scripted}, "stop"
        summary = results[-1][:200] if results else "I could answer without looking at files."
        answer = f"Answer to {prompt[:60]!r}. The tools showed:\n{summary}"
        return {"role": "assistant", "content": answer}, "stop"

    def _scripted_answer(self, prompt: str) -> str | None:
        for key, texts in self.config.answers.items():
            if key in prompt and texts:
                with self._lock:
                    turn = self._answer_turns.get(key, 0)
                    self._answer_turns[key] = turn + 1
                return texts[turn % len(texts)]
        return None

    def _judge(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        """A verdict through the output tool, as pydantic-ai asks a model for structured output."""
        seen = "\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "user")
        failed = [marker for marker in self.config.judge_fail_markers if marker in seen]
        verdict = {"passed": not failed, "score": 0.0 if failed else 1.0,
                   "reason": f"the answer says {failed[0]!r}" if failed else "the answer is supported by the tool results"}
        call = {"id": f"call_judge_{len(messages)}", "type": "function",
                "function": {"name": OUTPUT_TOOL, "arguments": json.dumps(verdict)}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    @staticmethod
    def _plan(rounds: int, prompt: str, results: list[str], offered: set[str]) -> tuple[str, dict[str, Any]]:
        words = [w for w in WORD.findall(prompt) if w.lower() not in STOPWORDS]
        keyword = max(words, key=len) if words else "def"
        if rounds == 0 and "grep" in offered:
            return "grep", {"pattern": re.escape(keyword), "max_results": 20}
        paths = RESULT_PATH.findall(results[-1]) if results else []
        if paths and "read_file" in offered:
            return "read_file", {"path": paths[0], "start_line": 1, "end_line": 40}
        if "list_dir" in offered:
            return "list_dir", {"path": "."}
        return sorted(offered)[0], {}
