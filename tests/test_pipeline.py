"""The generation pipeline end to end: real Redis, real local Ray, real tools on real files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, write_prompts

from distill.coordinator.collector import CONVERSATIONS_FILE, DEAD_FILE
from distill.coordinator.run import generate
from distill.shared.records import Conversation, DeadLetter
from distill.shared.settings import Settings, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher
from distill.worker.toolcore import ToolCore


def settings_for(run: str, tmp_path: Path, teacher: SimTeacher, workspace: Path, redis_url: str, **extra) -> Settings:
    return Settings(
        run=run,
        out_dir=tmp_path / "runs",
        workspace=workspace,
        redis_url=redis_url,
        teachers=[TeacherConfig(name="sim", base_url=teacher.base_url, model="sim", timeout_s=10)],
        **extra,
    )


def read_records(run_dir: Path) -> tuple[list[Conversation], list[DeadLetter]]:
    def load(name: str, model):  # type: ignore[no-untyped-def]
        path = run_dir / name
        if not path.exists():
            return []
        return [model.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]

    return load(CONVERSATIONS_FILE, Conversation), load(DEAD_FILE, DeadLetter)


def rerun_tool(tools: ToolCore, name: str, arguments: dict) -> str:
    return tools.answer(name, arguments).text


def assert_exactly_once(run_dir: Path, expected_ids: set[str]) -> tuple[list[Conversation], list[DeadLetter]]:
    conversations, dead = read_records(run_dir)
    ids = [c.task_id for c in conversations] + [d.task_id for d in dead]
    assert len(ids) == len(set(ids)), "a prompt was written twice"
    assert set(ids) == expected_ids, f"lost: {sorted(expected_ids - set(ids))[:5]}"
    return conversations, dead


def test_thirty_prompts_give_thirty_records_with_real_tool_results(
    tmp_path, ray_session, redis_url, sim_teacher, code_workspace, run_name
):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 30)
    settings = settings_for(run_name, tmp_path, sim_teacher, code_workspace, redis_url, concurrency=8, workers=2)

    result = generate(settings, prompts)

    assert (result.total, result.conversations, result.dead) == (30, 30, 0)
    conversations, _ = assert_exactly_once(settings.run_dir(), {f"q{i:05d}" for i in range(30)})
    workspace = ToolCore(code_workspace)
    checked = 0
    for record in conversations:
        assert record.status == "final_answer"
        assert {t["function"]["name"] for t in record.tools} >= {"grep", "read_file", "list_dir", "find_files"}
        calls = {c.id: c for m in record.messages for c in (m.tool_calls or [])}
        assert record.usage.tool_calls == len(calls) == 2
        for message in record.messages:
            if message.role == "tool":
                call = calls[message.tool_call_id]
                assert message.content == rerun_tool(workspace, call.function.name, call.function.arguments)
                checked += 1
        assert record.messages[-1].role == "assistant" and record.messages[-1].content
    assert checked == 60
    # The topic words are real names in the workspace: grep found them, so the results are real.
    assert sum("no matches" not in m.content for c in conversations for m in c.messages if m.role == "tool") >= 50


def test_rerun_resumes_without_redoing_finished_prompts(tmp_path, ray_session, redis_url, sim_teacher, code_workspace, run_name):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 10)
    settings = settings_for(run_name, tmp_path, sim_teacher, code_workspace, redis_url)
    generate(settings, prompts)
    requests_after_first = sim_teacher.snapshot()["requests"]

    write_prompts(tmp_path / "prompts.jsonl", 14)  # the file grew by four prompts
    second = generate(settings, prompts)

    assert second.queued_now == 4
    assert sim_teacher.snapshot()["requests"] - requests_after_first == 4 * 3
    assert_exactly_once(settings.run_dir(), {f"q{i:05d}" for i in range(14)})


def test_bad_prompts_refuse_to_start_and_name_file_line_field(tmp_path, sim_teacher, code_workspace):
    prompts = tmp_path / "bad.jsonl"
    prompts.write_bytes(
        b'{"prompt": "fine", "id": "a"}\n'
        b"not json\n"
        b'{"prompt": ""}\n'
        b'{"prompt": 3}\n'
        b'{"prompt": "x", "promt": "typo"}\n'
        b'{"prompt": "other", "id": "a"}\n'
        b'{"prompt": "\xff\xfe"}\n'
        b'["a list"]\n'
        b'{"prompt": "y", "expected": {"regex": "("}}\n'
    )
    command = [
        sys.executable, "-m", "distill", "generate", str(prompts), "--run", "bad",
        "--workspace", str(code_workspace), "--teacher", sim_teacher.base_url, "--teacher-model", "sim",
        "--out-dir", str(tmp_path / "runs"), "--no-progress",
    ]
    refused = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"})
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    for expected in [
        f"{prompts}:2: not JSON",
        f"{prompts}:3: field prompt: is empty",
        f"{prompts}:4: field prompt: Input should be a valid string",
        f"{prompts}:5: field promt: unknown key",
        f"{prompts}:6: field id: duplicate id 'a' with different content (first on line 1)",
        f"{prompts}:7: not UTF-8",
        f"{prompts}:8: expected a JSON object",
        f'{prompts}:9: field expected: "regex" not a valid regular expression',
    ]:
        assert expected in refused.stderr, refused.stderr
    assert sim_teacher.snapshot()["requests"] == 0
    assert not (tmp_path / "runs" / "bad" / CONVERSATIONS_FILE).exists()


def test_skip_invalid_runs_the_good_prompts_only(tmp_path, ray_session, redis_url, sim_teacher, code_workspace, run_name):
    prompts = tmp_path / "mixed.jsonl"
    prompts.write_text('{"prompt": "Where is Collector defined?", "id": "good"}\n{"prompt": ""}\n\n')
    settings = settings_for(run_name, tmp_path, sim_teacher, code_workspace, redis_url, skip_invalid=True)
    result = generate(settings, prompts)
    assert (result.total, result.conversations, result.check.bad_count) == (1, 1, 1)


def test_unreachable_teacher_ends_as_dead_letters_with_the_reason(tmp_path, ray_session, redis_url, code_workspace, run_name):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 3)
    settings = Settings(
        run=run_name, out_dir=tmp_path / "runs", workspace=code_workspace, redis_url=redis_url,
        teachers=[TeacherConfig(name="gone", base_url="http://127.0.0.1:9/v1", model="m", timeout_s=2)],
        max_attempts=2, retry_backoff_s=0.05,
    )
    result = generate(settings, prompts)
    conversations, dead = assert_exactly_once(settings.run_dir(), {f"q{i:05d}" for i in range(3)})
    assert result.complete and not conversations
    assert all(d.attempts == 2 and "gave up after 2 attempts" in d.reason and "Connection" in d.reason for d in dead)


def test_a_worker_failure_reaches_the_run_log(tmp_path, ray_session, redis_url, code_workspace, run_name):
    """Workers run in Ray processes whose output the user never sees: their failures go to RUN_DIR/logs."""
    from distill.teachers.sim_teacher import SimTeacherConfig
    from distill.views import summary_paths

    teacher = SimTeacher(SimTeacherConfig(fail_rate=1.0))  # every chat request: HTTP 500
    teacher.start()
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, redis_url, concurrency=2, workers=1,
                            max_attempts=2, retry_backoff_s=0.01, breaker_failures=100)
    try:
        result = generate(settings, prompts)
    finally:
        teacher.stop()
    _, dead = assert_exactly_once(settings.run_dir(), {"q00000", "q00001"})
    assert result.worker_logs == settings.run_dir().resolve() / "logs"
    log_text = (result.worker_logs / "worker-0.log").read_text()
    assert "worker worker-0 started" in log_text
    for letter in dead:
        # The retry and the final failure, each with the teacher's own error.
        assert f"task {letter.task_id}: attempt 1 on sim failed" in log_text, log_text
        assert f"task {letter.task_id}: dead letter after attempt 2 on sim: {letter.reason}" in log_text, log_text
    assert "worker logs" in dict(summary_paths(result))


def test_one_publish_transaction_serves_the_sync_and_the_asyncio_client(redis_url, redis_client, run_name):
    """shared/queue.py only queues commands: the coordinator's sync and the workers' asyncio pipelines run them."""
    import asyncio

    import redis.asyncio as aioredis

    from distill.shared.keys import TASKS_GROUP, RunKeys
    from distill.shared.queue import add_publish, add_requeue, ensure_groups, parse_result
    from distill.shared.records import DeadLetter

    keys = RunKeys(run_name)
    ensure_groups(redis_client, keys)

    def take() -> str:
        redis_client.xadd(keys.tasks, {"data": "{}"})
        (_, entries), = redis_client.xreadgroup(TASKS_GROUP, "test", {keys.tasks: ">"}, count=1)
        return entries[0][0]

    def letter(task_id: str) -> DeadLetter:
        return DeadLetter(task_id=task_id, run=run_name, prompt="p", reason="r", error_type="E", attempts=1)

    pipe = redis_client.pipeline(transaction=True)
    add_publish(pipe, keys, take(), letter("sync"))
    pipe.execute()

    async def publish_async() -> None:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        pipe = client.pipeline(transaction=True)
        add_publish(pipe, keys, take(), letter("async"))
        add_requeue(pipe, keys, take(), '{"again": 1}')
        await pipe.execute()
        await client.aclose()

    asyncio.run(publish_async())
    published = [parse_result(fields).task_id for _, fields in redis_client.xrange(keys.results)]
    assert published == ["sync", "async"]
    # Every task entry taken was acknowledged and deleted; only the requeued copy is left, unread.
    assert redis_client.xpending(keys.tasks, TASKS_GROUP)["pending"] == 0
    assert [fields["data"] for _, fields in redis_client.xrange(keys.tasks)] == ['{"again": 1}']
