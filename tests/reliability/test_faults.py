"""Faults a long run meets, each ending with N prompts in and N records + dead letters out."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, wait_for_lines, write_prompts
from distill.coordinator.collector import CONVERSATIONS_FILE, OutputError
from distill.coordinator.run import RedisLost, generate
from reliability.scenario import account
from distill.shared.keys import RunKeys
from distill.shared.records import Conversation, DeadLetter
from distill.coordinator.redis_server import EmbeddedRedis
from distill.shared.connection import connect
from distill.shared.settings import Settings, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig


def ids(count: int) -> set[str]:
    return {f"q{i:05d}" for i in range(count)}


def sim(**config) -> SimTeacher:  # type: ignore[no-untyped-def]
    teacher = SimTeacher(SimTeacherConfig(**config))
    teacher.start()
    return teacher


def settings_for(run: str, tmp_path: Path, teacher: SimTeacher, workspace: Path, redis_url: str, **extra) -> Settings:
    timeout = extra.pop("timeout_s", 10.0)
    return Settings(run=run, out_dir=tmp_path / "runs", workspace=workspace, redis_url=redis_url,
                    teachers=[TeacherConfig(name="sim", base_url=teacher.base_url, model="sim", timeout_s=timeout)],
                    **extra)


def in_background(settings: Settings, prompts: Path) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = generate(settings, prompts)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def test_worker_actors_killed_mid_conversation(tmp_path, ray_session, redis_url, code_workspace, run_name):
    import ray

    teacher = sim(latency_s=0.4)
    prompts = write_prompts(tmp_path / "p.jsonl", 16)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, redis_url, concurrency=4, workers=2,
                            visibility_timeout_s=2.0)
    runner, outcome = in_background(settings, prompts)
    try:
        for kill in range(3):
            # Kill only once work is flowing, so the victim holds conversations in flight.
            wait_for_lines(settings.run_dir() / CONVERSATIONS_FILE, 2 + 3 * kill)
            ray.kill(ray.get_actor(f"{run_name}-worker-{kill % 2}", namespace="distill-tests"), no_restart=False)
        runner.join(120)
    finally:
        teacher.stop()
    assert "result" in outcome, outcome
    account("worker actor killed (3 times)", "ray.kill mid-conversation; Ray restarts the actor", settings.run_dir(), ids(16))
    conversations = [Conversation.model_validate_json(line) for line in (settings.run_dir() / CONVERSATIONS_FILE).read_text().splitlines()]
    assert max(c.attempt for c in conversations) >= 2, "no task was redone after the kills"


def kill_then_rerun(tmp_path: Path, teacher, run: str, extra: list[str], code_workspace: Path, *, prompts: int, total: int):
    """`distill generate` as a user runs it: SIGKILL once 8 records are on disk, then the same command again."""
    prompts_file = write_prompts(tmp_path / "prompts.jsonl", prompts)
    command = [
        sys.executable, "-m", "distill", "generate", str(prompts_file), "--run", run, *extra,
        "--workspace", str(code_workspace), "--teacher", teacher.base_url, "--teacher-model", "sim",
        "--out-dir", str(tmp_path / "runs"), "--concurrency", "4", "--no-progress",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_dir = tmp_path / "runs" / run
    first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_lines(run_dir / CONVERSATIONS_FILE, 8)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    written_before = (run_dir / CONVERSATIONS_FILE).read_bytes().count(b"\n")
    assert written_before < total, "the kill came too late to prove anything"
    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, timeout=180)
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    return run_dir, written_before


def test_coordinator_sigkill_then_rerun(tmp_path, code_workspace):
    teacher = sim(latency_s=0.15)
    try:
        run_dir, written_before = kill_then_rerun(tmp_path, teacher, "killed", [], code_workspace, prompts=40, total=40)
    finally:
        teacher.stop()
    account("coordinator SIGKILL, same command rerun", f"SIGKILL after {written_before} records", run_dir, ids(40))


def test_coordinator_sigkill_with_samples_writes_each_sample_exactly_once(tmp_path, code_workspace):
    teacher = sim(latency_s=0.15)
    try:
        run_dir, _ = kill_then_rerun(tmp_path, teacher, "sampled", ["--samples", "3", "--temperature", "0.7"],
                                     code_workspace, prompts=12, total=36)
        seen = teacher.snapshot()
    finally:
        teacher.stop()
    records = [json.loads(line) for name in (CONVERSATIONS_FILE, "dead.jsonl") if (run_dir / name).exists()
               for line in (run_dir / name).read_text().splitlines() if line.strip()]
    written = Counter((record["task_id"], record.get("sample", 0)) for record in records)
    assert set(written.values()) == {1}, [key for key, count in written.items() if count > 1]
    assert set(written) == {(task_id, sample) for task_id in ids(12) for sample in range(3)}
    assert seen["temperatures"] == {"0.7": seen["requests"]}  # every sample sampled at the teacher's temperature


def test_redis_killed_and_restarted_mid_run(tmp_path, ray_session, code_workspace, run_name):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    teacher = sim(latency_s=0.1)
    prompts = write_prompts(tmp_path / "p.jsonl", 30)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, url, concurrency=4, visibility_timeout_s=3.0)
    runner, outcome = in_background(settings, prompts)
    try:
        wait_for_lines(settings.run_dir() / CONVERSATIONS_FILE, 5)
        server.kill()
        time.sleep(1.5)
        server.start()  # same port, password and append-only file
        runner.join(180)
    finally:
        teacher.stop()
        server.stop()
    assert "result" in outcome, outcome
    account("Redis SIGKILL, restarted 1.5 s later", "kill -9 of the server; AOF fsync always", settings.run_dir(), ids(30))


def test_redis_gone_for_good_is_a_clear_error_and_resumable(tmp_path, ray_session, code_workspace, run_name):
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    teacher = sim(latency_s=0.1)
    prompts = write_prompts(tmp_path / "p.jsonl", 20)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, url, concurrency=2, redis_outage_s=3.0,
                            visibility_timeout_s=3.0)
    runner, outcome = in_background(settings, prompts)
    try:
        wait_for_lines(settings.run_dir() / CONVERSATIONS_FILE, 3)
        server.kill()
        runner.join(60)
        assert not runner.is_alive(), "the coordinator hangs without Redis"
        assert isinstance(outcome.get("error"), RedisLost), outcome
        assert "run the same command again" in str(outcome["error"]) and server.password not in str(outcome["error"])
        server.start()
        generate(settings, prompts)
    finally:
        teacher.stop()
        server.stop()
    account("Redis gone for good, then back", "kill -9, no restart within redis_outage_s; rerun", settings.run_dir(), ids(20))


def test_chaotic_teacher_ends_as_records_and_real_dead_letters(tmp_path, ray_session, redis_url, code_workspace, run_name):
    teacher = sim(latency_s=0.02, fail_rate=0.3, hang_rate=0.05, drop_rate=0.05, malformed_rate=0.1, hang_s=30, seed=7)
    prompts = write_prompts(tmp_path / "p.jsonl", 40)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, redis_url, concurrency=8, timeout_s=1.5,
                            max_attempts=3, retry_backoff_s=0.05, breaker_failures=50)
    try:
        result = generate(settings, prompts)
    finally:
        teacher.stop()
    row = account("chaotic teacher", "HTTP 500 30%, hang 5%, dropped connection 5%, malformed tool calls 10%",
                  settings.run_dir(), ids(40))
    assert result.complete and row["records"] > 0
    dead_file = settings.run_dir() / "dead.jsonl"
    for line in dead_file.read_text().splitlines() if dead_file.exists() else []:
        dead = DeadLetter.model_validate_json(line)
        assert dead.attempts == 3 and any(word in dead.reason for word in ("500", "Timeout", "Connection", "timed out")), dead.reason
    conversations = [Conversation.model_validate_json(line) for line in (settings.run_dir() / CONVERSATIONS_FILE).read_text().splitlines()]
    # Malformed calls were refused before running and shown to the teacher as the tool's answer.
    assert sum(c.usage.invalid_tool_calls for c in conversations) > 0


def test_rate_limited_endpoint_is_not_stormed(tmp_path, ray_session, redis_url, code_workspace, run_name):
    teacher = sim(latency_s=0.02, rate_limit_rate=1.0, retry_after_s=2.0)
    prompts = write_prompts(tmp_path / "p.jsonl", 12)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, redis_url, concurrency=4,
                            max_attempts=10, retry_backoff_s=0.01)
    # The limit is lifted after the first wave and two trials, counted by the teacher, not by a clock:
    # at most 4 requests in flight hit it at once, then one trial per Retry-After window.
    limited_answers = 6
    lifted = threading.Event()

    def lift() -> None:
        deadline = time.monotonic() + 240
        while teacher.snapshot()["failures"].get("http_429", 0) < limited_answers and time.monotonic() < deadline:
            time.sleep(0.05)
        teacher.config.rate_limit_rate = 0.0
        lifted.set()

    lifter = threading.Thread(target=lift)
    lifter.start()
    try:
        result = generate(settings, prompts)
        lifter.join()
        snapshot = teacher.snapshot()
    finally:
        teacher.stop()
    account("429 with Retry-After", f"every request answered 429, Retry-After 2 s, until {limited_answers} were sent",
            settings.run_dir(), ids(12))
    assert lifted.is_set() and result.dead == 0
    assert snapshot["failures"]["http_429"] >= limited_answers
    # A handful, not a storm: without the breaker's Retry-After, 4 conversations retrying every
    # 10 ms would send hundreds in the same time.
    assert snapshot["failures"]["http_429"] <= 12, snapshot


def test_disk_full_stops_cleanly_and_acknowledges_nothing_unwritten(
    tmp_path, ray_session, redis_url, code_workspace, run_name, monkeypatch
):
    import distill.shared.jsonl as jsonl_module

    teacher = sim(latency_s=0.05)
    prompts = write_prompts(tmp_path / "p.jsonl", 20)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, redis_url, concurrency=4)
    real_fsync = os.fsync
    calls = {"n": 0}

    def full_after_three(fd: int) -> None:
        # Only the conversations file's batches count (the manifest and progress.json fsync too).
        if os.readlink(f"/proc/self/fd/{fd}").endswith(CONVERSATIONS_FILE):
            calls["n"] += 1
        if calls["n"] > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(jsonl_module.os, "fsync", full_after_three)
    try:
        with pytest.raises(OutputError, match="No space left on device"):
            generate(settings, prompts)
        written = (settings.run_dir() / CONVERSATIONS_FILE).read_text()
        assert written.endswith("\n") and all(Conversation.model_validate_json(l) for l in written.splitlines())
        # Whatever reached the coordinator but not the disk is still un-acknowledged in Redis.
        client = connect(redis_url)
        results_left = client.xlen(RunKeys(run_name).results)
        assert results_left + written.count("\n") >= 4 and results_left > 0
        monkeypatch.setattr(jsonl_module.os, "fsync", real_fsync)
        generate(settings, prompts)
    finally:
        teacher.stop()
    account("output disk full", "fsync fails with ENOSPC after 3 batches; rerun", settings.run_dir(), ids(20))


def test_output_path_not_writable_refuses_before_any_work(tmp_path, ray_session, redis_url, code_workspace, run_name):
    teacher = sim()
    prompts = write_prompts(tmp_path / "p.jsonl", 5)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, redis_url)
    blocker = settings.run_dir() / CONVERSATIONS_FILE
    blocker.mkdir(parents=True)
    try:
        with pytest.raises(OutputError, match="not a regular file"):
            generate(settings, prompts)
        assert teacher.snapshot()["requests"] == 0
        blocker.rmdir()
        generate(settings, prompts)
    finally:
        teacher.stop()
    account("output file not writable", "conversations.jsonl is a directory; fixed; rerun", settings.run_dir(), ids(5))


def test_a_whole_ray_node_removed_mid_run(tmp_path, code_workspace):
    script = Path(__file__).with_name("node_loss_run.py")
    result_file = tmp_path / "result.json"
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(code_workspace), str(result_file)],
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    outcome = json.loads(result_file.read_text())
    assert outcome["finished"] and outcome.get("complete"), outcome
    assert 4 <= outcome["records_before_loss"] < 24, outcome
    account("a Ray worker node removed", "cluster.remove_node mid-run (3 nodes, 3 worker actors)",
            Path(outcome["run_dir"]), ids(24))
