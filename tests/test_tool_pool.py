"""Tools under load: a pool of processes apart from the agent loop, and an outcome for every call.

Real pool processes, real files, a real (simulated) teacher over HTTP. Nothing here waits on a
wall-clock window: the tests wait for files a tool writes, for results, or for counters.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO, write_prompts
from distill.coordinator.collector import CONVERSATIONS_FILE, DEAD_FILE
from distill.coordinator.progress import read_progress_snapshot
from distill.coordinator.run import generate
from distill.shared.records import ChatMessage, Conversation, DeadLetter, PromptTask
from distill.shared.settings import GenerationLimits, Settings, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.worker.agent import ConversationFailed, Conversations
from distill.worker.tool_pool import ToolInfraError, ToolPool
from distill.worker.sandbox import ToolLimits
from distill.worker.toolcore import ToolCore

TOOLS_MODULE = '''
import os, pathlib, time

def hang() -> str:
    """Never answers."""
    time.sleep(3600)
    return "never"

def where() -> str:
    """Says which process ran it."""
    return f"ran in pid {os.getpid()}"

def flood() -> str:
    """More text than an answer may hold."""
    return "word " * 10_000

def crash_once(marker: str) -> str:
    """The first call writes its pid to `marker` and waits to be killed; later calls answer."""
    path = pathlib.Path(marker)
    if path.exists():
        return "answered after a replaced process"
    path.write_text(str(os.getpid()))
    time.sleep(3600)
    return "never"
'''


@pytest.fixture
def tools_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A custom tools module importable here and in the pool processes (spawned with our sys.path)."""
    package = tmp_path / "pkgs"
    package.mkdir()
    name = f"pool_test_tools_{os.getpid()}"
    (package / f"{name}.py").write_text(TOOLS_MODULE)
    monkeypatch.syspath_prepend(str(package))
    return name


def big_workspace(root: Path, files: int = 4000) -> Path:
    """Enough small files that one grep over them costs tens of milliseconds (50-100 ms here)."""
    for index in range(files):
        folder = root / f"pkg{index // 200:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = "".join(f"def helper_{index}_{n}(value):\n    return value + {n}\n\n" for n in range(12))
        if index == 1234:
            body += "class Collector:\n    pass\n"
        (folder / f"mod_{index:04d}.py").write_text(body)
    return root


def task(index: int, prompt: str = "Where is Collector defined?") -> PromptTask:
    return PromptTask(task_id=f"t{index}", run="r", prompt=f"{prompt} #{index}")


def teacher_for(sim: SimTeacher) -> TeacherConfig:
    return TeacherConfig(name="sim", base_url=sim.base_url, model="sim", timeout_s=60)


async def run_all(conversations: Conversations, teacher: TeacherConfig, count: int) -> list[Any]:
    try:
        return await asyncio.gather(*(conversations.run(task(i), teacher) for i in range(count)),
                                    return_exceptions=True)
    finally:
        await conversations.aclose()


def tool_messages(record: Conversation) -> list[ChatMessage]:
    return [m for m in record.messages if m.role == "tool"]


def test_many_conversations_with_slow_greps_never_time_out(tmp_path: Path) -> None:
    """48 conversations at once, each grepping 4,000 files: queueing for a tool process is not
    execution, so no call hits the limit (the thread-pool tools timed out most of these)."""
    core = ToolCore(big_workspace(tmp_path / "ws"), limits=GenerationLimits(tool_timeout_s=2.0, tool_attempts=1))
    sim = SimTeacher(SimTeacherConfig(latency_s=0.01, tool_rounds=1))
    sim.start()
    conversations = Conversations(core, system_prompt="You help.", tool_processes=2)
    try:
        records = asyncio.run(run_all(conversations, teacher_for(sim), 48))
    finally:
        sim.stop()
    failures = [r for r in records if not isinstance(r, Conversation)]
    assert not failures, failures[:3]
    assert [r.status for r in records] == ["final_answer"] * 48
    for record in records:
        [result] = tool_messages(record)
        assert result.name == "grep" and result.outcome == "ok"
        assert result.content.startswith("pkg06/mod_1234.py:"), result.content[:200]
        assert "time limit" not in result.content and "Timed out" not in result.content


def test_a_hung_tool_is_killed_and_its_conversation_fails_retryably(tmp_path: Path, tools_module: str) -> None:
    core = ToolCore(tmp_path, [f"{tools_module}:hang", f"{tools_module}:where"],
                    GenerationLimits(tool_timeout_s=0.3, tool_attempts=2))
    sim = SimTeacher(SimTeacherConfig(latency_s=0.01, first_tool="hang"))
    sim.start()
    conversations = Conversations(core, system_prompt="You help.", tool_processes=1)
    pool = conversations.tool_pool
    try:
        [failure] = asyncio.run(run_all(conversations, teacher_for(sim), 1))
    finally:
        sim.stop()
    # Never a record built on the time-out: the conversation starts over (the actor's retry path).
    assert isinstance(failure, ConversationFailed), failure
    assert failure.retryable and not failure.teacher_fault and failure.error_type == "ToolInfraError"
    assert "time limit" in failure.reason and "hang" in failure.reason
    runs = pool.drain()
    assert [(r.tool, r.outcome) for r in runs] == [("hang", "infra_error")] * 2
    # The teacher never saw a result for the hung call: its only request was the first one.
    assert sim.stats.completed == 1


def test_a_killed_tool_process_is_replaced_and_the_call_retried(tmp_path: Path, tools_module: str) -> None:
    marker = tmp_path / "first-call.pid"
    core = ToolCore(tmp_path, [f"{tools_module}:crash_once"], GenerationLimits(tool_timeout_s=60, tool_attempts=3))
    pool = ToolPool(core, processes=1, backoff_s=0.01)

    async def scenario() -> Any:
        call = asyncio.ensure_future(pool.call("crash_once", {"marker": str(marker)}))
        while not marker.exists() or not marker.read_text():
            await asyncio.sleep(0.02)  # the tool's own signal that it is running
        victim = int(marker.read_text())
        os.kill(victim, signal.SIGKILL)
        return victim, await call

    try:
        victim, run = asyncio.run(scenario())
        assert run.outcome == "ok" and run.text == "answered after a replaced process"
        assert [r.outcome for r in pool.drain()] == ["infra_error", "ok"]
        assert victim not in pool.pids() and len(pool.pids()) == 1
    finally:
        pool.close()


def test_retries_give_up_with_an_infra_error_never_an_answer(tmp_path: Path, tools_module: str) -> None:
    core = ToolCore(tmp_path, [f"{tools_module}:hang"], GenerationLimits(tool_timeout_s=0.2, tool_attempts=2))
    pool = ToolPool(core, processes=1, backoff_s=0.01)
    try:
        with pytest.raises(ToolInfraError, match="time limit") as failure:
            asyncio.run(pool.call("hang", {}))
        assert failure.value.attempts == 2
        # The replaced process answers the next call; finding nothing is a real answer.
        answer = asyncio.run(pool.call("grep", {"pattern": "nothing-here"}))
        assert (answer.outcome, answer.text) == ("ok", "no matches")
    finally:
        pool.close()


def test_a_custom_tool_runs_in_a_pool_process(tmp_path: Path, tools_module: str) -> None:
    sim = SimTeacher(SimTeacherConfig(latency_s=0.01, first_tool="where", tool_rounds=1))
    sim.start()
    conversations = Conversations(ToolCore(tmp_path, [f"{tools_module}:where"]), system_prompt="You help.",
                                  tool_processes=1)
    try:
        [record] = asyncio.run(run_all(conversations, teacher_for(sim), 1))
    finally:
        sim.stop()
    assert isinstance(record, Conversation) and record.status == "final_answer"
    [result] = tool_messages(record)
    assert result.name == "where" and result.outcome == "ok"
    assert result.content.startswith("ran in pid ") and result.content != f"ran in pid {os.getpid()}"
    assert "where" in [tool["function"]["name"] for tool in record.tools]


def test_outcomes_in_a_pool_process_are_the_cores(tmp_path: Path, tools_module: str) -> None:
    """The pool answers exactly as the core does in-process, for built-in and custom tools alike,
    and carries its limits: the output cap applies to a custom tool's answer too."""
    (tmp_path / "a.py").write_text("x = 1\n")
    core = ToolCore(tmp_path, [f"{tools_module}:where", f"{tools_module}:flood"], GenerationLimits(tool_max_output_chars=300))
    calls = [("grep", {"pattern": "x ="}), ("grep", {"pattern": "zzz"}), ("grep", {"pattern": "("}),
             ("read_file", {"path": "missing.py"}), ("find_files", {"pattern": "*.rs"}), ("flood", {})]
    pool = ToolPool(core, processes=1)
    try:
        runs = [asyncio.run(pool.call(name, arguments)) for name, arguments in calls]
    finally:
        pool.close()
    assert [(run.outcome, run.text) for run in runs] == [tuple(core.answer(name, arguments)) for name, arguments in calls]
    assert [run.outcome for run in runs] == ["ok", "ok", "tool_error", "tool_error", "ok", "ok"]
    assert len(runs[-1].text) <= 300
    slow = ToolPool(ToolCore(tmp_path, sandbox=ToolLimits(timeout_s=0.0)), processes=1, backoff_s=0.01)
    try:
        with pytest.raises(ToolInfraError, match="time limit"):
            asyncio.run(slow.call("grep", {"pattern": "x"}))
    finally:
        slow.close()


def test_tools_that_cannot_be_built_in_a_tool_process_are_an_infra_error(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Passed the preflight here, fails in the tool process (say, another node's environment): every
    call says why as an infra error (retried, never shown), and the pool is not broken for good."""
    name = f"parent_only_tools_{os.getpid()}"
    (tmp_path / f"{name}.py").write_text(
        "import multiprocessing\n"
        "if multiprocessing.parent_process() is not None:\n"
        "    raise ImportError('not installed on this node')\n\n"
        "def here() -> str:\n    return 'here'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = ToolPool(ToolCore(tmp_path, [f"{name}:here"], GenerationLimits(tool_attempts=2)), processes=1, backoff_s=0.01)
    try:
        with pytest.raises(ToolInfraError, match="could not build its tools.*not installed on this node"):
            asyncio.run(pool.call("here", {}))
        assert [run.outcome for run in pool.drain()] == ["infra_error", "infra_error"]
    finally:
        pool.close()


def test_a_record_never_holds_an_infra_error() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "grep", "arguments": {"pattern": "x"}}}
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "name": "grep", "content": "time limit hit", "outcome": "infra_error"},
        {"role": "assistant", "content": "done"},
    ]
    with pytest.raises(ValueError, match="infrastructure error"):
        Conversation.model_validate({
            "task_id": "t", "run": "r", "prompt": "q", "status": "final_answer", "messages": messages, "tools": [],
            "teacher": {"endpoint": "e", "base_url": "http://x", "model": "m"}, "usage": {},
            "timings": {"started_at": "2026-01-01T00:00:00Z", "finished_at": "2026-01-01T00:00:01Z", "duration_s": 1},
            "attempt": 1, "worker": {"node": "n", "actor": "a", "pid": 1},
        })


def test_a_run_whose_tools_keep_hitting_the_limit_ends_in_dead_letters(
    tmp_path, ray_session, redis_url, code_workspace, run_name
):
    """Through Ray and Redis: every grep stops at a (tiny) time limit, so no prompt may become a
    conversation; each is retried from the start and ends as a dead letter naming the cause."""
    sim = SimTeacher(SimTeacherConfig(latency_s=0.01))
    sim.start()
    prompts = write_prompts(tmp_path / "p.jsonl", 4)
    settings = Settings(
        run=run_name, out_dir=tmp_path / "runs", workspace=code_workspace, redis_url=redis_url,
        teachers=[TeacherConfig(name="sim", base_url=sim.base_url, model="sim", timeout_s=10)],
        limits=GenerationLimits(tool_timeout_s=0.000001, tool_attempts=2, tool_processes=1),
        concurrency=4, max_attempts=2, retry_backoff_s=0.01,
    )
    try:
        result = generate(settings, prompts)
    finally:
        sim.stop()
    run_dir = settings.run_dir()
    assert not (run_dir / CONVERSATIONS_FILE).exists() or not (run_dir / CONVERSATIONS_FILE).read_text().strip()
    dead = [DeadLetter.model_validate_json(line) for line in (run_dir / DEAD_FILE).read_text().splitlines()]
    assert len(dead) == 4 and result.dead == 4
    for letter in dead:
        assert letter.error_type == "ToolInfraError" and "time limit" in letter.reason
    # The numbers say so too: every grep execution was an infra error, and the run's tool capacity.
    snapshot = read_progress_snapshot(run_dir) or {}
    grep = snapshot["tools"]["grep"]
    assert grep["infra_error"] == 4 * 2 * 2 and grep["ok"] == 0 and grep["p50_ms"] is not None
    assert snapshot["tool_processes"] >= 1
    assert result.tools["grep"]["infra_error"] == grep["infra_error"]
    assert result.endpoints["sim"]["errors"] == 4 * 2  # one per failed conversation attempt


def distill_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The command in a fresh process, with `cwd` importable (a user's tools module lives there)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(cwd)]), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "distill", *args], capture_output=True, text=True, env=env,
                          timeout=120, cwd=cwd, check=False)


@pytest.mark.parametrize(("custom_tools", "needle"), [
    ('["nonexistent_mod_xyz:fn"]', "cannot import module 'nonexistent_mod_xyz' for tool 'nonexistent_mod_xyz:fn'"),
    ('["os.path:no_such_function"]', "module 'os.path' has no attribute 'no_such_function'"),
    ('["json:dumps", "pickle:dumps"]', "custom tools 'json:dumps' and 'pickle:dumps' are both named 'dumps'"),
    ('["cli_tools_mod:opaque"]', "tool 'opaque': no JSON schema can be made from its signature"),
    ('["cli_tools_mod:grep"]', "custom tool 'cli_tools_mod:grep' is named 'grep', like the built-in tool"),
])
def test_a_bad_custom_tool_fails_generate_in_one_line_before_anything_starts(
    tmp_path: Path, custom_tools: str, needle: str
) -> None:
    """Checked in the run's preflight: no Redis, no Ray, no worker (the run folder is never made)."""
    teacher = '[[teachers]]\nname = "t"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
    (tmp_path / "distill.toml").write_text(f"custom_tools = {custom_tools}\n" + teacher)
    (tmp_path / "cli_tools_mod.py").write_text(
        "import socket\n\ndef opaque(handle: socket.socket) -> str:\n    return ''\n\n"
        "def grep(pattern: str) -> str:\n    return pattern\n")
    prompts = write_prompts(tmp_path / "p.jsonl", 1)
    done = distill_cli(tmp_path, "generate", str(prompts), "--run", "bad-tool", "--out-dir", str(tmp_path / "runs"),
                       "--workspace", str(tmp_path), "--no-progress")
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and needle in line, done.stderr
    assert not (tmp_path / "runs").exists()
