"""`distill doctor`: real Redis, real (simulated) teachers, and the failures a user meets first."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from distill.coordinator.checks import Check
from distill.coordinator.doctor import failed_required, run_doctor
from distill.coordinator.doctor_cluster import check_redis_url, redis_supports_streams
from distill.coordinator.redis_server import EmbeddedRedis
from distill.shared.settings import Settings, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.views import doctor_table

CLOUD_KEY = "sk-doctor-secret-value-1234"


@pytest.fixture(autouse=True)
def no_ambient_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare ray.init() joins RAY_ADDRESS or the cluster `ray start` recorded under Ray's temp
    folder; keep other processes' clusters on this machine out of these tests."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_tmp = tmp_path / "ray-tmp"
    (ray_tmp / "ray").mkdir(parents=True)
    monkeypatch.setenv("RAY_TMPDIR", str(ray_tmp))
    return ray_tmp / "ray"


@pytest.fixture()
def teachers() -> Iterator[tuple[SimTeacher, SimTeacher]]:
    local, cloud = SimTeacher(SimTeacherConfig()), SimTeacher(SimTeacherConfig(model="cloud-model"))
    local.start()
    cloud.start()
    yield local, cloud
    local.stop()
    cloud.stop()


def settings_for(tmp_path: Path, workspace: Path, teachers: list[TeacherConfig], **extra: Any) -> Settings:
    return Settings(out_dir=tmp_path / "runs", workspace=workspace, teachers=teachers, **extra)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def all_text(checks: list[Check]) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=300).print(doctor_table(checks))
    return json.dumps([check.model_dump() for check in checks]) + buffer.getvalue()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_healthy_setup_passes_every_required_check(tmp_path, redis_url, code_workspace, teachers, monkeypatch):
    monkeypatch.setenv("DOCTOR_CLOUD_KEY", CLOUD_KEY)
    local, cloud = teachers
    settings = settings_for(tmp_path, code_workspace, [
        TeacherConfig(name="local", base_url=local.base_url, model="sim-teacher"),
        TeacherConfig(name="cloud", kind="cloud", base_url=cloud.base_url, model="cloud-model",
                      api_key_env="DOCTOR_CLOUD_KEY"),
    ], redis_url=redis_url)
    checks = run_doctor(settings)
    assert failed_required(checks) == [], all_text(checks)
    found = by_name(checks)
    assert {"redis", "ray", "teacher local", "key DOCTOR_CLOUD_KEY", "teacher cloud", "workspace", "tools", "mlx",
            "disk"} <= set(found)
    assert "tool process(es) per worker" in found["tools"].detail and "execution only" in found["tools"].detail
    assert "Valkey" in found["redis"].detail and "streams supported" in found["redis"].detail
    assert "local Ray will be started" in found["ray"].detail
    for name in ("teacher local", "teacher cloud"):
        assert "model listed" in found[name].detail and "chat with tools accepted" in found[name].detail
    assert "backend" in found["mlx"].detail
    assert "GiB free" in found["disk"].detail
    # The probes really happened: one tool-carrying chat request each.
    assert local.snapshot()["requests"] == 1 and cloud.snapshot()["requests"] == 1
    # One table row per check.
    assert doctor_table(checks).row_count == len(checks)


def test_embedded_redis_is_started_and_stopped(tmp_path, code_workspace, teachers):
    local, _ = teachers
    checks = run_doctor(settings_for(tmp_path, code_workspace,
                                     [TeacherConfig(name="local", base_url=local.base_url, model="sim-teacher")]))
    redis_check = by_name(checks)["redis"]
    assert redis_check.ok and redis_check.detail.startswith("embedded Valkey")


def test_a_teacher_that_does_not_answer_fails_with_a_hint(tmp_path, redis_url, code_workspace, monkeypatch):
    monkeypatch.setenv("DOCTOR_CLOUD_KEY", CLOUD_KEY)
    port = closed_port()
    settings = settings_for(tmp_path, code_workspace, [
        TeacherConfig(name="mac", base_url=f"http://127.0.0.1:{port}/v1", model="m"),
        TeacherConfig(name="gpu", kind="cloud", base_url=f"http://127.0.0.1:{port}/v1", model="m",
                      api_key_env="DOCTOR_CLOUD_KEY"),
    ], redis_url=redis_url)
    checks = by_name(run_doctor(settings))
    for name in ("teacher mac", "teacher gpu"):
        assert not checks[name].ok and checks[name].required
        assert "no answer" in checks[name].detail and checks[name].hint
    assert "distill teacher serve" in checks["teacher mac"].hint
    assert "firewall" in checks["teacher gpu"].hint


def test_a_missing_key_variable_fails_and_the_teacher_is_not_probed(tmp_path, redis_url, code_workspace, teachers,
                                                                      monkeypatch):
    monkeypatch.delenv("DOCTOR_MISSING_KEY", raising=False)
    _, cloud = teachers
    settings = settings_for(tmp_path, code_workspace, [
        TeacherConfig(name="cloud", kind="cloud", base_url=cloud.base_url, model="cloud-model",
                      api_key_env="DOCTOR_MISSING_KEY"),
    ], redis_url=redis_url)
    checks = run_doctor(settings)
    found = by_name(checks)
    assert not found["key DOCTOR_MISSING_KEY"].ok and found["key DOCTOR_MISSING_KEY"].required
    assert "export DOCTOR_MISSING_KEY" in found["key DOCTOR_MISSING_KEY"].hint
    assert not found["teacher cloud"].ok
    assert cloud.snapshot()["requests"] == 0
    assert failed_required(checks)


def test_secrets_never_appear_in_any_check(tmp_path, redis_server: EmbeddedRedis, code_workspace, teachers,
                                           monkeypatch):
    monkeypatch.setenv("DOCTOR_CLOUD_KEY", CLOUD_KEY)
    _, cloud = teachers
    teacher = TeacherConfig(name="cloud", kind="cloud", base_url=cloud.base_url, model="cloud-model",
                            api_key_env="DOCTOR_CLOUD_KEY")
    good = run_doctor(settings_for(tmp_path, code_workspace, [teacher], redis_url=redis_server.url))
    wrong_url = redis_server.url.replace(redis_server.password, "wrong-password-do-not-show")
    wrong = run_doctor(settings_for(tmp_path, code_workspace, [teacher], redis_url=wrong_url))
    assert by_name(good)["redis"].ok
    assert not by_name(wrong)["redis"].ok and "authentication" in by_name(wrong)["redis"].detail
    text = all_text(good) + all_text(wrong)
    for secret in (redis_server.password, "wrong-password-do-not-show", CLOUD_KEY):
        assert secret not in text
    assert "***@127.0.0.1" in text


def test_redis_that_does_not_answer_fails_with_a_hint():
    check = check_redis_url(f"redis://:hunter2-secret@127.0.0.1:{closed_port()}/0")
    assert not check.ok and check.required and "cannot connect" in check.detail and "bind" in check.hint
    assert "hunter2-secret" not in check.detail + check.hint


def test_streams_need_redis_6_2_or_any_valkey():
    assert not redis_supports_streams({"redis_version": "6.0.16"})
    assert not redis_supports_streams({"redis_version": "5.0.7"})
    assert redis_supports_streams({"redis_version": "6.2.0"})
    assert redis_supports_streams({"redis_version": "7.0.15"})
    assert redis_supports_streams({"redis_version": "7.2.4", "valkey_version": "8.1.8", "server_name": "valkey"})


def test_ray_address_that_does_not_answer_fails_fast(tmp_path, redis_url, code_workspace):
    settings = settings_for(tmp_path, code_workspace, [], redis_url=redis_url,
                            ray_address=f"127.0.0.1:{closed_port()}")
    found = by_name(run_doctor(settings))
    assert not found["ray"].ok and "does not accept connections" in found["ray"].detail
    assert "ray start --head" in found["ray"].hint
    # No teacher configured is a failure of its own.
    assert not found["teachers"].ok


def test_ray_address_of_something_else_fails_fast(tmp_path, code_workspace, teachers):
    # ray.init() against a port that isn't a Ray GCS retries for many minutes; doctor must not.
    local, _ = teachers
    ray_check = by_name(run_doctor(settings_for(tmp_path, code_workspace, [],
                                                ray_address=f"127.0.0.1:{local.port}")))["ray"]
    assert not ray_check.ok and "not a Ray head" in ray_check.detail


def test_a_stale_cluster_address_on_this_machine_is_caught(tmp_path, code_workspace, no_ambient_ray):
    # `ray start` leaves its address behind; a bare ray.init() would try to join it.
    (no_ambient_ray / "ray_current_cluster").write_text(f"127.0.0.1:{closed_port()}")
    ray_check = by_name(run_doctor(settings_for(tmp_path, code_workspace, [])))["ray"]
    assert not ray_check.ok and "would join" in ray_check.detail and "ray stop" in ray_check.hint


def test_ray_address_pointing_at_redis_is_caught(tmp_path, redis_server: EmbeddedRedis, code_workspace):
    settings = settings_for(tmp_path, code_workspace, [], redis_url=redis_server.url,
                            ray_address=f"127.0.0.1:{redis_server.port}")
    ray_check = by_name(run_doctor(settings))["ray"]
    assert not ray_check.ok and "Redis" in ray_check.detail and "6380" in ray_check.hint


class StubServer:
    """An OpenAI-compatible endpoint with canned answers (what vLLM or mlx_lm.server might say)."""

    def __init__(self, models: tuple[int, Any], chat: tuple[int, Any]) -> None:
        self.answers = {"GET": models, "POST": chat}
        self.headers: list[dict[str, str]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stub.headers.append(dict(self.headers))
                status, body = stub.answers[self.command]
                raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


CHAT_OK = (200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": "OK"}, "finish_reason": "length"}]})


def probe_one(tmp_path: Path, workspace: Path, teacher: TeacherConfig) -> Check:
    return by_name(run_doctor(settings_for(tmp_path, workspace, [teacher])))[f"teacher {teacher.name}"]


def test_a_server_that_refuses_tools_gets_the_vllm_flags_as_hint(tmp_path, code_workspace, monkeypatch):
    monkeypatch.setenv("DOCTOR_CLOUD_KEY", CLOUD_KEY)
    refusal = (400, {"object": "error", "message": '"auto" tool choice requires --enable-auto-tool-choice and '
                                                   "--tool-call-parser to be set", "code": 400})
    with StubServer((200, {"data": [{"id": "qwen"}]}), refusal) as url:
        check = probe_one(tmp_path, code_workspace, TeacherConfig(name="vllm", kind="cloud", base_url=url,
                                                                  model="qwen", api_key_env="DOCTOR_CLOUD_KEY"))
    assert not check.ok and "HTTP 400" in check.detail
    assert "--enable-auto-tool-choice --tool-call-parser hermes" in check.hint


def test_the_key_is_sent_as_a_bearer_token(tmp_path, code_workspace, monkeypatch):
    monkeypatch.setenv("DOCTOR_CLOUD_KEY", CLOUD_KEY)
    stub = StubServer((200, {"data": [{"id": "qwen"}]}), CHAT_OK)
    with stub as url:
        check = probe_one(tmp_path, code_workspace, TeacherConfig(name="vllm", kind="cloud", base_url=url,
                                                                  model="qwen", api_key_env="DOCTOR_CLOUD_KEY"))
    assert check.ok, check
    assert {headers.get("Authorization") for headers in stub.headers} == {f"Bearer {CLOUD_KEY}"}


def test_a_cloud_model_that_is_not_served_fails(tmp_path, code_workspace):
    with StubServer((200, {"data": [{"id": "other-model"}]}), CHAT_OK) as url:
        check = probe_one(tmp_path, code_workspace, TeacherConfig(name="vllm", kind="cloud", base_url=url, model="qwen"))
    assert not check.ok and "other-model" in check.detail and "--served-model-name" in check.hint


def test_mlx_server_models_500_falls_back_to_the_chat_probe(tmp_path, code_workspace):
    # mlx_lm.server 0.32 answers GET /v1/models with a traceback when the HF cache is missing.
    with StubServer((500, "Traceback (most recent call last): CacheNotFound"), CHAT_OK) as url:
        check = probe_one(tmp_path, code_workspace, TeacherConfig(name="mac", base_url=url, model="/models/qwen"))
    assert check.ok and "HTTP 500" in check.detail and "chat with tools accepted" in check.detail


def test_a_local_model_path_that_is_not_listed_is_fine_when_chat_works(tmp_path, code_workspace):
    with StubServer((200, {"data": [{"id": "mlx-community/other"}]}), CHAT_OK) as url:
        check = probe_one(tmp_path, code_workspace, TeacherConfig(name="mac", base_url=url, model="default_model"))
    assert check.ok and "not listed" in check.detail


def test_launched_teachers_are_checked_on_disk_not_on_the_network(tmp_path, code_workspace):
    model = tmp_path / "model"
    port = closed_port()
    missing = TeacherConfig(name="mac", base_url=f"http://127.0.0.1:{port}/v1", model=str(model), launch=True)
    check = probe_one(tmp_path, code_workspace, missing)
    assert not check.ok and "not found" in check.detail
    model.mkdir()
    (model / "config.json").write_text("{}")
    check = probe_one(tmp_path, code_workspace, missing)
    assert check.ok and "mlx_lm importable" in check.detail and f"port {port} free" in check.detail


def test_teachers_the_policy_leaves_out_are_not_required(tmp_path, code_workspace, teachers, monkeypatch):
    monkeypatch.delenv("DOCTOR_MISSING_KEY", raising=False)
    local, _ = teachers
    settings = settings_for(tmp_path, code_workspace, [
        TeacherConfig(name="local", base_url=local.base_url, model="sim-teacher"),
        TeacherConfig(name="cloud", kind="cloud", base_url="http://127.0.0.1:9/v1", model="m",
                      api_key_env="DOCTOR_MISSING_KEY"),
    ], policy="local-only")
    checks = run_doctor(settings)
    assert failed_required(checks) == [], all_text(checks)
    assert "not used under policy local-only" in by_name(checks)["teacher cloud"].detail


def test_workspace_and_disk(tmp_path, teachers):
    local, _ = teachers
    teacher = TeacherConfig(name="local", base_url=local.base_url, model="sim-teacher")
    checks = by_name(run_doctor(settings_for(tmp_path, tmp_path / "nowhere", [teacher]),
                                run_dir=tmp_path / "not" / "yet" / "there"))
    assert not checks["workspace"].ok and checks["workspace"].required and "--workspace" in checks["workspace"].hint
    assert checks["disk"].ok and f"under {tmp_path}" in checks["disk"].detail


def test_tool_capacity_and_custom_tools_that_do_not_import(tmp_path, code_workspace):
    from distill.coordinator.doctor import check_tools

    settings = settings_for(tmp_path, code_workspace, [])
    settings.limits.tool_processes = 3
    check = check_tools(settings)
    assert check.ok and check.detail.startswith("3 tool process(es) per worker (tool_processes)")
    settings.custom_tools = ["no_such_module_for_doctor:f"]
    check = check_tools(settings)
    assert not check.ok and check.required and "cannot import" in check.detail and check.hint
