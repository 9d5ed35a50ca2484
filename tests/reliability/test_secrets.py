"""Secrets never land in data, logs, status output or error messages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, write_prompts

from distill.coordinator.redis_server import EmbeddedRedis
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig

API_KEY = "sk-canary-7f3e9a1c5b"
REDIS_PASSWORD = "canary-redis-pw-42d8e1"


def every_file_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_api_key_and_redis_password_appear_nowhere(tmp_path, code_workspace):
    server = EmbeddedRedis(tmp_path / "redis-data")
    server.password = REDIS_PASSWORD
    url = server.start()
    teacher = SimTeacher(SimTeacherConfig(latency_s=0.02, fail_rate=0.5, seed=3))
    teacher.start()
    config = tmp_path / "distill.toml"
    config.write_text(
        f'max_attempts = 2\nretry_backoff_s = 0.01\n[[teachers]]\nname = "cloud"\nkind = "cloud"\n'
        f'base_url = "{teacher.base_url}"\nmodel = "sim"\napi_key_env = "CANARY_KEY"\n'
    )
    prompts = write_prompts(tmp_path / "p.jsonl", 12)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CANARY_KEY": API_KEY, "COLUMNS": "200"}
    base = [sys.executable, "-m", "distill"]
    ray_sessions = Path("/tmp/ray")
    sessions_before = set(ray_sessions.glob("session_2*")) if ray_sessions.exists() else set()
    try:
        run = subprocess.run(
            [*base, "generate", str(prompts), "--config", str(config), "--run", "secrets", "--redis-url", url,
             "--workspace", str(code_workspace), "--out-dir", str(tmp_path / "runs"), "--no-progress"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
        )
        status = subprocess.run([*base, "status", "--run", "secrets", "--out-dir", str(tmp_path / "runs")],
                                capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        # A wrong key is refused with a message that names the variable, never the value.
        refused = subprocess.run(
            [*base, "generate", str(prompts), "--config", str(config), "--run", "secrets2",
             "--redis-url", url.replace(REDIS_PASSWORD, REDIS_PASSWORD + "x"),
             "--out-dir", str(tmp_path / "runs"), "--no-progress"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
        )
    finally:
        teacher.stop()
        server.stop()
    assert run.returncode == 0, run.stderr[-2000:]
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    written = every_file_under(tmp_path / "runs")
    assert any(p.name == "dead.jsonl" for p in written) or any(p.name == "conversations.jsonl" for p in written)
    texts = {"generate output": run.stdout + run.stderr, "status output": status.stdout + status.stderr,
             "refused run output": refused.stdout + refused.stderr}
    texts.update({str(p): p.read_bytes().decode("utf-8", "replace") for p in written})
    # The run's own Ray session (workers got the key as an actor argument): its logs too.
    new_sessions = set(ray_sessions.glob("session_2*")) - sessions_before if ray_sessions.exists() else set()
    for session in new_sessions:
        for path in every_file_under(session / "logs"):
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for where, text in texts.items():
        assert API_KEY not in text, f"API key leaked into {where}"
        assert REDIS_PASSWORD not in text, f"Redis password leaked into {where}"
