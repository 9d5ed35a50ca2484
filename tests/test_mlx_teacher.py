"""Through a real mlx_lm.server: a tiny random model built here, tools offered, the whole pipeline."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import write_prompts
from test_pipeline import assert_exactly_once
from tiny_model import build_tiny_model

from distill.coordinator.collector import CONVERSATIONS_FILE
from distill.coordinator.run import generate
from distill.shared.settings import Settings, TeacherConfig
from distill.teachers.mlx_server import free_port
from distill.teachers.supervisor import ServeOptions, TeacherSupervisor


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_generate_launches_a_real_mlx_server_and_records_every_prompt(
    tmp_path, ray_session, redis_url, code_workspace, run_name, tiny_model
):
    teacher = TeacherConfig(name="mlx", base_url=f"http://127.0.0.1:{free_port()}/v1", model=str(tiny_model),
                            launch=True, max_tokens=24, timeout_s=60)
    settings = Settings(run=run_name, out_dir=tmp_path / "runs", workspace=code_workspace, redis_url=redis_url,
                        teachers=[teacher], concurrency=2)
    result = generate(settings, write_prompts(tmp_path / "p.jsonl", 3))

    conversations, dead = assert_exactly_once(settings.run_dir(), {"q00000", "q00001", "q00002"})
    assert result.complete and not dead
    for record in conversations:
        assert record.teacher.endpoint == "mlx" and record.usage.requests >= 1
        assert {t["function"]["name"] for t in record.tools} >= {"grep", "read_file"}
        assert record.usage.output_tokens > 0
    assert result.endpoints["mlx"]["requests"] >= 3
    assert (settings.run_dir() / "logs").is_dir()


def test_supervisor_restarts_a_killed_server_and_no_prompt_is_lost(
    tmp_path, ray_session, redis_url, code_workspace, run_name, tiny_model
):
    supervisor = TeacherSupervisor(ServeOptions(model=str(tiny_model), log_dir=tmp_path / "logs", backoff_s=0.2))
    url = supervisor.start()
    teacher = TeacherConfig(name="mlx", base_url=url, model=str(tiny_model), max_tokens=24, timeout_s=60)
    settings = Settings(run=run_name, out_dir=tmp_path / "runs", workspace=code_workspace, redis_url=redis_url,
                        teachers=[teacher], concurrency=2, max_attempts=6, retry_backoff_s=0.5,
                        breaker_cooldown_s=1.0)
    prompts = write_prompts(tmp_path / "p.jsonl", 8)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(result=generate(settings, prompts)))
    try:
        runner.start()
        written = settings.run_dir() / CONVERSATIONS_FILE
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (written.exists() and written.read_text().count("\n") >= 1):
            time.sleep(0.1)
        killed_pid = supervisor.server.pid
        os.kill(killed_pid, signal.SIGKILL)
        runner.join(240)
    finally:
        supervisor.stop()
    assert not runner.is_alive()
    assert supervisor.restarts >= 1 and supervisor.server.pid != killed_pid
    assert outcome["result"].complete
    conversations, dead = assert_exactly_once(settings.run_dir(), {f"q{i:05d}" for i in range(8)})
    assert len(conversations) == 8 and not dead
