"""Tools from MCP servers: a real server (mcp-server-git) and a fault-injecting one (mcp_fault_server.py)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trainer_fixtures import tiny_model  # noqa: F401 - a fixture

from distill.shared.mcp_config import McpServerConfig, McpSetupError, parse_mcp_flag
from distill.shared.records import Conversation, PromptTask
from distill.shared.settings import (
    DEFAULT_SYSTEM_PROMPT,
    ConfigError,
    GenerationLimits,
    TeacherConfig,
    load_settings,
)
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig, read_plans
from distill.worker.agent import ConversationFailed, Conversations
from distill.worker.mcp_servers import McpServerSet, probe_server, result_text
from distill.worker.toolcore import ToolCore

FAULT_SERVER = Path(__file__).resolve().parent / "mcp_fault_server.py"
# Tests that start MCP servers (child processes, a second or more each) or `distill` itself.
SLOW = pytest.mark.slow


def fault_server(name: str = "faults", **fields: Any) -> McpServerConfig:
    # Its tools carry no read-only annotation: offered only with read_only = false.
    return McpServerConfig(name=name, command=sys.executable, args=[str(FAULT_SERVER)], read_only=False, **fields)


def planned(prompt: str, *calls: tuple[str, dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    return {prompt: list(calls)}


def converse(tmp_path: Path, servers: list[McpServerConfig], plans: dict[str, list[tuple[str, dict[str, Any]]]],
             prompt: str, **limits: Any) -> tuple[Conversation | ConversationFailed, McpServerSet, SimTeacher]:
    """One conversation through the worker's own Conversations, with the servers started for it."""
    teacher = SimTeacher(SimTeacherConfig(calls=plans))
    teacher.start()
    (tmp_path / "ws").mkdir(exist_ok=True)

    async def scenario() -> tuple[Conversation | ConversationFailed, McpServerSet]:
        core = ToolCore(tmp_path / "ws", (), GenerationLimits(tool_processes=1, **limits))
        conversations = Conversations(core, system_prompt=DEFAULT_SYSTEM_PROMPT)
        await conversations.start_mcp(servers, log_dir=tmp_path / "logs")
        servers_set = conversations.mcp
        assert servers_set is not None
        try:
            task = PromptTask(task_id="t1", run="mcp", prompt=prompt)
            config = TeacherConfig(name="sim", base_url=teacher.base_url, model="sim", timeout_s=30)
            try:
                return await conversations.run(task, config), servers_set
            except ConversationFailed as failure:
                return failure, servers_set
        finally:
            await conversations.aclose()

    try:
        outcome, servers_set = asyncio.run(scenario())
    finally:
        teacher.stop()
    return outcome, servers_set, teacher


def tool_messages(record: Conversation) -> list[Any]:
    return [m for m in record.messages if m.role == "tool"]


# --- declaring servers ------------------------------------------------------------------------


def test_the_mcp_flag_declares_stdio_and_http_servers() -> None:
    git = parse_mcp_flag("git=mcp-server-git --repository '/tmp/a repo'")
    assert (git.name, git.command, git.args, git.tool_prefix) == ("git", "mcp-server-git", ["--repository", "/tmp/a repo"], "git_")
    # A relative path means where distill was started, wherever a worker runs.
    assert git.cwd == os.getcwd()
    assert McpServerConfig(name="x", command="srv", cwd="sub").cwd == os.path.join(os.getcwd(), "sub")
    docs = parse_mcp_flag("docs=https://example.invalid/mcp")
    assert (docs.url, docs.command, docs.transport) == ("https://example.invalid/mcp", None, "http")


@pytest.mark.parametrize("flag", ["git", "=mcp-server-git", "git=", "9git=cmd", "git=cmd 'unclosed"])
def test_a_bad_mcp_flag_is_one_clear_error(flag: str) -> None:
    with pytest.raises(McpSetupError, match="--mcp"):
        parse_mcp_flag(flag)


def test_config_refuses_servers_that_are_neither_or_both_or_repeated(tmp_path: Path) -> None:
    config = tmp_path / "distill.toml"
    cases = {
        '[[mcp_servers]]\nname = "a"\n': "give either `command`",
        '[[mcp_servers]]\nname = "a"\ncommand = "x"\nurl = "http://127.0.0.1:1/mcp"\n': "give either `command`",
        '[[mcp_servers]]\nname = "a"\ncommand = "x"\nheaders = {A = "b"}\n': "headers are for a `url`",
        '[[mcp_servers]]\nname = "a"\ncommand = "x"\n[[mcp_servers]]\nname = "a"\ncommand = "y"\n': "repeated: a",
        '[[mcp_servers]]\nname = "a"\nurl = "ftp://host/mcp"\n': "http:// or https://",
    }
    for text, reason in cases.items():
        config.write_text(text)
        with pytest.raises(ConfigError, match=reason) as caught:
            load_settings(config)
        assert str(config) in str(caught.value)


def test_env_references_are_read_only_where_the_server_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    server = McpServerConfig(name="docs", url="http://127.0.0.1:1/mcp",
                             headers={"Authorization": "Bearer ${DOCS_TOKEN}", "X-Plain": "$NOT_A_REFERENCE"})
    monkeypatch.delenv("DOCS_TOKEN", raising=False)
    with pytest.raises(McpSetupError, match="environment variable DOCS_TOKEN is not set"):
        server.resolved_headers()
    monkeypatch.setenv("DOCS_TOKEN", "s3cret-value")
    assert server.resolved_headers() == {"Authorization": "Bearer s3cret-value", "X-Plain": "$NOT_A_REFERENCE"}
    assert "s3cret-value" not in server.model_dump_json()
    assert server.referenced_env() == {"DOCS_TOKEN": "s3cret-value"}


# --- outcomes ---------------------------------------------------------------------------------


@SLOW
def test_a_tool_error_is_the_servers_answer_and_the_teacher_sees_it(tmp_path: Path) -> None:
    prompt = "Look up gamma, then alpha."
    record, servers, teacher = converse(tmp_path, [fault_server()], planned(
        prompt, ("faults_lookup", {"key": "gamma"}), ("faults_lookup", {"key": "alpha"})), prompt)

    assert isinstance(record, Conversation) and record.status == "final_answer"
    first, second = tool_messages(record)
    assert first.outcome == "tool_error" and "no such key: gamma" in first.content
    assert (second.outcome, second.content) == ("ok", "1")
    # The teacher's second request carried the error as the tool's answer.
    assert teacher.snapshot()["requests"] == 3
    offered = {t["function"]["name"]: t["function"] for t in record.tools}
    assert {"faults_echo", "faults_lookup", "faults_hang", "faults_die_once", "faults_picture", "grep"} <= set(offered)
    assert offered["faults_lookup"]["parameters"]["required"] == ["key"]
    assert "unknown key is refused" in offered["faults_lookup"]["description"]
    assert servers.starts() == {"faults": 1}


@SLOW
def test_arguments_the_server_refuses_are_a_tool_error_not_an_infra_error(tmp_path: Path) -> None:
    prompt = "Echo with the wrong argument."
    record, servers, _ = converse(tmp_path, [fault_server()], planned(prompt, ("faults_echo", {"words": 3})), prompt)

    assert isinstance(record, Conversation)
    (message,) = tool_messages(record)
    assert message.outcome == "tool_error" and "text" in message.content
    assert servers.starts() == {"faults": 1}


@SLOW
def test_a_hung_call_is_killed_at_the_limit_and_its_conversation_fails_retryably(tmp_path: Path) -> None:
    prompt = "Wait for it."
    failure, servers, teacher = converse(tmp_path, [fault_server()], planned(prompt, ("faults_hang", {})), prompt,
                                         tool_timeout_s=1.0, tool_attempts=2)

    assert isinstance(failure, ConversationFailed)
    assert failure.retryable and failure.error_type == "ToolInfraError" and not failure.teacher_fault
    assert "time limit of 1s hit" in failure.reason
    # Each attempt past the limit restarted the server: that is what stops a call a server runs.
    assert servers.starts() == {"faults": 3}
    # No fake result was ever shown to the teacher: it got the prompt, nothing after.
    assert teacher.snapshot()["requests"] == 1


@SLOW
def test_a_server_that_dies_mid_call_is_restarted_and_the_call_answered_once(tmp_path: Path) -> None:
    marker = tmp_path / "died"
    prompt = "Survive this."
    record, servers, teacher = converse(tmp_path, [fault_server()],
                                        planned(prompt, ("faults_die_once", {"marker": str(marker)})), prompt)

    assert marker.exists(), "the server never died"
    assert isinstance(record, Conversation) and record.status == "final_answer"
    (message,) = tool_messages(record)
    assert message.outcome == "ok" and message.content.startswith("survived; first server pid")
    assert servers.starts() == {"faults": 2}
    assert teacher.snapshot()["requests"] == 2


@SLOW
def test_a_secret_env_value_reaches_a_stdio_server_but_not_its_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAULTS_TOKEN", "stdio-secret-5e1d")
    prompt = "Echo once."
    record, _, _ = converse(tmp_path, [fault_server(env={"FAULT_SERVER_TOKEN": "${FAULTS_TOKEN}"})],
                            planned(prompt, ("faults_echo", {"text": "hi"})), prompt)

    assert isinstance(record, Conversation) and tool_messages(record)[0].content == "echo: hi"
    logged = (tmp_path / "logs" / "mcp-faults-worker.log").read_text()
    assert "starting with token ***" in logged and "stdio-secret-5e1d" not in logged


@SLOW
def test_images_become_a_note_and_the_cap_applies(tmp_path: Path) -> None:
    prompt = "Show the picture, then echo a lot."
    record, _, _ = converse(tmp_path, [fault_server(prefix="")], planned(
        prompt, ("picture", {}), ("echo", {"text": "x" * 5000})), prompt, tool_max_output_chars=1000)

    assert isinstance(record, Conversation)
    picture, echo = tool_messages(record)
    assert picture.outcome == "ok"
    assert picture.content.startswith("a one-pixel picture\n[image content (image/png")
    assert "iVBOR" not in picture.content  # no base64 reaches the teacher
    assert echo.outcome == "ok" and len(echo.content) <= 1000 and "[truncated]" in echo.content


def test_structured_content_is_kept_once() -> None:
    from mcp import types

    text = types.TextContent(type="text", text='{"a": 1}')
    assert result_text(types.CallToolResult(content=[text], structured_content={"a": 1})) == '{"a": 1}'
    plain = types.TextContent(type="text", text="hello")
    assert result_text(types.CallToolResult(content=[plain], structured_content={"result": "hello"})) == "hello"
    only = types.CallToolResult(content=[], structured_content={"rows": [1, 2]})
    assert result_text(only) == '{"rows": [1, 2]}'
    # Looks the same but is not: the structured content says more than the text.
    differs = types.CallToolResult(content=[plain], structured_content={"result": "hello", "more": 1})
    assert result_text(differs) == 'hello\n{"result": "hello", "more": 1}'


@SLOW
def test_a_server_that_cannot_start_or_clashes_is_one_clear_error(tmp_path: Path) -> None:
    async def start(configs: list[McpServerConfig], taken: list[str]) -> None:
        servers = McpServerSet(configs)
        await servers.start(taken)
        await servers.close()

    with pytest.raises(McpSetupError, match="'nope'.*cannot start"):
        asyncio.run(start([McpServerConfig(name="nope", command=str(tmp_path / "no-such-server"))], []))
    with pytest.raises(McpSetupError, match="tool name 'echo' is taken"):
        asyncio.run(start([fault_server(prefix="")], ["echo"]))
    with pytest.raises(McpSetupError, match="has no tool 'git_log'"):
        asyncio.run(start([fault_server(tools=["echo", "git_log"])], []))


@SLOW
def test_only_tools_marked_read_only_are_offered_unless_named(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git_repo(repo, 1)

    async def offered(**fields: Any) -> tuple[list[str], list[str]]:
        server = await probe_server(McpServerConfig(name="git", command="mcp-server-git",
                                                    args=["--repository", str(repo)], **fields))
        return [tool.name for tool in server.tools], server.left_out

    names, left_out = asyncio.run(offered())
    assert sorted(names) == ["git_git_branch", "git_git_diff", "git_git_diff_staged", "git_git_diff_unstaged",
                             "git_git_log", "git_git_show", "git_git_status"]
    assert {"git_commit", "git_checkout", "git_reset", "git_add", "git_create_branch"} == set(left_out)
    assert asyncio.run(offered(tools=["git_commit", "git_log"], prefix="")) == (["git_commit", "git_log"], [])
    assert len(asyncio.run(offered(read_only=False))[0]) == 12


# --- the sim teacher's plans ------------------------------------------------------------------


def test_plans_come_from_the_prompt_lines_metadata(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "a", "metadata": {"sim_calls": [{"tool": "x", "arguments": {"k": 1}}, {"tool": "y"}]}},
             {"prompt": "b", "metadata": {"other": 1}}, {"prompt": "c"}]
    prompts.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert read_plans(prompts) == {"a": [("x", {"k": 1}), ("y", {})]}


def git_repo(root: Path, commits: int) -> list[tuple[str, str, str]]:
    """A repository with `commits` commits, each touching one file: (sha, file, message) oldest first."""
    root.mkdir(parents=True)

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("config", "user.email", "dev@example.invalid")
    git("config", "user.name", "Dev")
    history = []
    for index in range(commits):
        name = f"module_{index % 7}.py"
        with (root / name).open("a") as handle:
            handle.write(f"VALUE_{index} = {index}\n")
        message = f"Set VALUE_{index} in {name}"
        git("add", name)
        git("commit", "-q", "-m", message)
        history.append((git("rev-parse", "HEAD"), name, message))
    return history


# --- whole runs -------------------------------------------------------------------------------


def history_prompts(path: Path, repo: Path, history: list[tuple[str, str, str]]) -> dict[str, str]:
    """Two questions per commit, each with the calls a competent agent would make; file name expected."""
    expected = {}
    with path.open("w") as handle:
        for index, (sha, name, message) in enumerate(history):
            show = {"tool": "git_git_show", "arguments": {"repo_path": str(repo), "revision": sha}}
            log = {"tool": "git_git_log", "arguments": {"repo_path": str(repo), "max_count": len(history)}}
            for kind, prompt, calls in (
                ("show", f"Which file did commit {sha[:12]} change?", [show]),
                ("log", f"Find the commit '{message}' in the history; what file did it touch?", [log, show]),
            ):
                task_id = f"{kind}-{index:03d}"
                # The scripted answer quotes the tool's output (a diff names b/FILE too), so the
                # reference is the file's name anywhere in it, not "exactly this file".
                reference = {"regex": re.escape(name)}
                handle.write(json.dumps({"id": task_id, "prompt": prompt, "expected": reference,
                                         "metadata": {"sim_calls": calls}}) + "\n")
                expected[task_id] = name
    return expected


def git_server_processes(repo: Path) -> list[Any]:
    """The mcp-server-git processes serving this test's repository (this test started them)."""
    import psutil

    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info.get("cmdline") or []
        if any("mcp-server-git" in part for part in cmdline) and str(repo) in cmdline:
            found.append(process)
    return found


def test_generate_with_mcp_server_git_turns_50_history_questions_into_50_records_through_a_server_kill(
    tmp_path: Path, ray_session: None, redis_url: str, run_name: str, tiny_model: Path
) -> None:
    from conftest import wait_for_lines
    from test_pipeline import assert_exactly_once

    from distill.coordinator.collector import CONVERSATIONS_FILE
    from distill.coordinator.run import generate
    from distill.shared.settings import Settings
    from distill.trainer.convert import convert

    repo = tmp_path / "repo"
    history = git_repo(repo, 25)
    prompts = tmp_path / "history.jsonl"
    expected = history_prompts(prompts, repo, history)
    assert len(expected) == 50
    teacher = SimTeacher(SimTeacherConfig(latency_s=0.05, calls=read_plans(prompts)))
    teacher.start()
    git = McpServerConfig(name="git", command="mcp-server-git", args=["--repository", str(repo)],
                          tools=["git_log", "git_show"])
    settings = Settings(run=run_name, out_dir=tmp_path / "runs", workspace=tmp_path, redis_url=redis_url,
                        teachers=[TeacherConfig(name="sim", base_url=teacher.base_url, model="sim", timeout_s=30)],
                        mcp_servers=[git], concurrency=4, workers=1,
                        limits=GenerationLimits(builtin_tools=[], tool_processes=1, tool_timeout_s=20))
    outcome: dict[str, Any] = {}
    runner = __import__("threading").Thread(target=lambda: outcome.update(result=generate(settings, prompts)))
    try:
        runner.start()
        wait_for_lines(settings.run_dir() / CONVERSATIONS_FILE, 10, timeout_s=240)
        victims = git_server_processes(repo)
        assert victims, "no mcp-server-git process serves the run"
        for process in victims:
            process.kill()
        runner.join(timeout=400)
    finally:
        teacher.stop()
    assert not runner.is_alive() and "result" in outcome, outcome
    result = outcome["result"]

    assert (result.total, result.conversations, result.dead) == (50, 50, 0)
    records, _ = assert_exactly_once(settings.run_dir(), set(expected))
    worker_logs = "".join(path.read_text() for path in (settings.run_dir() / "logs").glob("worker-*.log"))
    assert "mcp server git" in worker_logs and "restarting it" in worker_logs, "the kill was never noticed"

    # Every result is the server's real output: asked again of a fresh server, it answers the same.
    calls = [(call.function.name, call.function.arguments, message.content)
             for record in records for call, message in zip(
                 [c for m in record.messages for c in (m.tool_calls or [])],
                 [m for m in record.messages if m.role == "tool"], strict=True)]
    assert len(calls) == 75 and all(m.outcome == "ok" for r in records for m in tool_messages(r))

    async def ask_again() -> list[str]:
        servers = McpServerSet([git])
        await servers.start()
        try:
            return [(await servers.call(name, arguments, 20)).text for name, arguments, _ in calls]
        finally:
            await servers.close()

    assert [content for _, _, content in calls] == asyncio.run(ask_again())
    for record in records:
        assert record.status == "final_answer" and record.verdict.passed, (record.task_id, record.messages[-1].content)
        assert [t["function"]["name"] for t in record.tools] == ["git_git_log", "git_git_show"]
    show = next(m for r in records for m in tool_messages(r) if r.task_id == "show-003")
    sha, name, message = history[3]
    assert sha in show.content and message in show.content and f"b/{name}" in show.content

    # convert's training data carries the git tools' schemas, as offered.
    out = tmp_path / "train"
    report = convert(settings.run_dir(), tiny_model, out, max_seq_length=16384)
    rows = [json.loads(line) for split in ("train", "valid", "test") if (out / f"{split}.jsonl").exists()
            for line in (out / f"{split}.jsonl").read_text().splitlines()]
    assert len(rows) == report.kept == 50
    schemas = {t["function"]["name"]: t["function"] for t in rows[0]["tools"]}
    assert set(schemas) == {"git_git_log", "git_git_show"}
    assert schemas["git_git_show"]["parameters"]["required"] == ["repo_path", "revision"]
    assert schemas["git_git_show"]["description"].startswith("Shows the contents of a commit")


def test_a_secret_header_reaches_the_server_and_nothing_in_the_run_folder(
    tmp_path: Path, ray_session: None, redis_url: str, run_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from test_pipeline import assert_exactly_once

    from distill.coordinator.run import generate
    from distill.shared.settings import Settings

    secret = "tok-" + "7f3a9c1e5b2d4086"
    monkeypatch.setenv("MCP_TEST_TOKEN", secret)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(FAULT_SERVER), "http", str(port)], stderr=subprocess.DEVNULL)
    prompts = tmp_path / "prompts.jsonl"
    with prompts.open("w") as handle:
        for index in range(4):
            handle.write(json.dumps({"id": f"p{index}", "prompt": f"Echo {index}.", "metadata": {"sim_calls": [
                {"tool": "svc_echo", "arguments": {"text": f"hello {index}"}}]}}) + "\n")
    teacher = SimTeacher(SimTeacherConfig(calls=read_plans(prompts)))
    teacher.start()
    svc = McpServerConfig(name="svc", url=f"http://127.0.0.1:{port}/mcp", read_only=False,
                          headers={"Authorization": "Bearer ${MCP_TEST_TOKEN}"}, startup_timeout_s=60)
    settings = Settings(run=run_name, out_dir=tmp_path / "runs", workspace=tmp_path, redis_url=redis_url,
                        teachers=[TeacherConfig(name="sim", base_url=teacher.base_url, model="sim", timeout_s=30)],
                        mcp_servers=[svc], concurrency=2, workers=1, limits=GenerationLimits(tool_processes=1))
    try:
        _wait_for_port(port)
        result = generate(settings, prompts)
    finally:
        teacher.stop()
        server.terminate()
        server.wait(10)

    assert (result.conversations, result.dead) == (4, 0)
    records, _ = assert_exactly_once(settings.run_dir(), {f"p{i}" for i in range(4)})
    # The server answers only with the token: real answers prove the header was sent.
    assert sorted(tool_messages(r)[0].content for r in records) == [f"echo: hello {i}" for i in range(4)]
    files = [path for path in settings.run_dir().rglob("*") if path.is_file()]
    assert any(path.name == "manifest.json" for path in files) and any(path.suffix == ".log" for path in files)
    leaked = [str(path) for path in files if secret.encode() in path.read_bytes()]
    assert leaked == []



def _wait_for_port(port: int) -> None:
    import socket
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"the test server never listened on {port}")


def distill_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    from conftest import REPO

    return subprocess.run([sys.executable, "-m", "distill", *args], check=False, capture_output=True, text=True, cwd=cwd,
                          timeout=180, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250", **(env or {})})


@SLOW
def test_generate_refuses_a_server_that_cannot_start_before_anything_runs(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What changed?"}\n')
    refused = distill_cli("generate", str(prompts), "--run", "r", "--workspace", str(tmp_path),
                          "--teacher", "http://127.0.0.1:9/v1", "--teacher-model", "m", "--no-progress",
                          "--out-dir", str(tmp_path / "runs"), "--mcp", f"git={tmp_path / 'no-such-server'} --repository .",
                          cwd=tmp_path)

    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "error: mcp server 'git'" in refused.stderr and "cannot start" in refused.stderr, refused.stderr
    assert not (tmp_path / "runs" / "r" / "conversations.jsonl").exists()


@SLOW
def test_doctor_starts_each_server_lists_its_tools_and_fails_clearly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git_repo(repo, 1)
    config = tmp_path / "distill.toml"
    config.write_text(f'[[mcp_servers]]\nname = "git"\ncommand = "mcp-server-git"\nargs = ["--repository", "{repo}"]\n'
                      '[[mcp_servers]]\nname = "docs"\nurl = "http://127.0.0.1:9/mcp"\n'
                      'headers = {Authorization = "Bearer ${DOCS_TOKEN}"}\nstartup_timeout_s = 10\n')
    checked = distill_cli("doctor", "--config", str(config), "--workspace", str(tmp_path), cwd=tmp_path,
                          env={"DOCS_TOKEN": "doctor-secret-1234"})

    shown = checked.stdout
    assert "mcp git" in shown and "stdio mcp-server-git" in shown
    # git_commit only appears among the tools left out (not marked read-only).
    assert "7 tool(s)" in shown and "git_git_log" in shown and "git_git_show" in shown and "git_commit" in shown
    assert "mcp docs" in shown and "'docs' (http://127.0.0.1:9/mcp) cannot start" in shown, shown
    assert checked.returncode == 1 and "mcp docs" in checked.stderr
    assert "doctor-secret-1234" not in checked.stdout + checked.stderr


@SLOW
def test_eval_offers_the_same_mcp_tools_and_scores_answers_from_their_results(tmp_path: Path) -> None:
    from distill.trainer.evaluate import evaluate

    repo = tmp_path / "repo"
    history = git_repo(repo, 3)
    prompts = tmp_path / "heldout.jsonl"
    expected = history_prompts(prompts, repo, history)
    teacher = SimTeacher(SimTeacherConfig(calls=read_plans(prompts)))
    teacher.start()
    git = McpServerConfig(name="git", command="mcp-server-git", args=["--repository", str(repo)],
                          tools=["git_log", "git_show"])
    try:
        report = evaluate(None, prompts, tmp_path, out=tmp_path / "eval",
                          teacher=TeacherConfig(name="teacher", base_url=teacher.base_url, model="sim"),
                          builtin_tools=[], mcp_servers=[git])
    finally:
        teacher.stop()

    (variant,) = report.variants
    assert variant.totals.prompts == len(expected) == 6
    assert variant.totals.correct == 6 and variant.totals.invalid_calls == 0
    assert sorted({call.split("(")[0] for p in variant.prompts for call in p.calls}) == ["git_git_log", "git_git_show"]


@SLOW
def test_repair_replays_an_mcp_call_with_the_servers_real_answer(tmp_path: Path) -> None:
    from distill.trainer.repair import repair

    repo = tmp_path / "repo"
    ((sha, name, message),) = git_repo(repo, 1)
    call = {"id": "c1", "type": "function",
            "function": {"name": "git_git_show", "arguments": json.dumps({"repo_path": str(repo), "revision": sha})}}
    bad = {"id": "c2", "type": "function", "function": {"name": "git_git_show", "arguments": json.dumps({"revision": sha})}}
    lines = [
        {"messages": [{"role": "user", "content": "What did the commit change?"},
                      {"role": "assistant", "content": None, "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": "c1", "content": "[Tool execution completed]"},
                      {"role": "assistant", "content": f"It changed {name}."}]},
        # Looks like a call to the same tool, but lacks the argument the server's schema requires.
        {"messages": [{"role": "user", "content": "And this one?"},
                      {"role": "assistant", "content": None, "tool_calls": [bad]},
                      {"role": "tool", "tool_call_id": "c2", "content": "None"},
                      {"role": "assistant", "content": "No idea."}]},
    ]
    source = tmp_path / "phase1.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    git = McpServerConfig(name="git", command="mcp-server-git", args=["--repository", str(repo)])

    report = repair(source, tmp_path, tmp_path / "repaired.jsonl", mcp_servers=[git])

    assert (report.written, report.dropped) == (1, 1)
    assert report.calls["replaced"] == 1 and report.calls["failed"] == 1
    (written,) = [json.loads(line) for line in (tmp_path / "repaired.jsonl").read_text().splitlines()]
    result = written["messages"][2]["content"]
    assert sha in result and message in result and f"b/{name}" in result
    assert "git_git_show" in {t["function"]["name"] for t in written["tools"]}
