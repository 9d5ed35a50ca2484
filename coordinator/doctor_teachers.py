"""`distill doctor`'s checks of the teachers: every endpoint the policy uses answers, serves the
model and accepts tools; a teacher distill launches can be launched."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distill.coordinator.checks import Check, first_line, tcp_problem
from distill.coordinator.teachers import PROBE_TIMEOUT_S, ask
from distill.shared.connection import redact_url
from distill.shared.settings import Settings, TeacherConfig, eligible_teachers

CHAT_TIMEOUT_S = 60.0


def check_teachers(settings: Settings) -> list[Check]:
    if not settings.teachers:
        return [Check(name="teachers", ok=False, detail="no teacher configured",
                      hint="add [[teachers]] to distill.toml (see deploy/config/), or pass --teacher/--teacher-model "
                           "to generate")]
    checks: list[Check] = []
    used = {teacher.name for teacher in eligible_teachers(settings.teachers, settings.policy)}
    for teacher in settings.teachers:
        label = f"teacher {teacher.name}"
        if teacher.name not in used:
            checks.append(Check(name=label, ok=True, required=False,
                                detail=f"not used under policy {settings.policy}; not checked"))
            continue
        key: str | None = None
        if teacher.api_key_env:
            key = os.environ.get(teacher.api_key_env) or None
            if key is None:
                hint = f"export {teacher.api_key_env}=... on the coordinator (it hands the key to the Ray workers)"
                if teacher.kind == "cloud":
                    hint += "; without it the run leaves this teacher out and falls back to local-only"
                checks.append(Check(name=f"key {teacher.api_key_env}", ok=False,
                                    detail=f"{teacher.api_key_env} is not set (teacher {teacher.name!r})", hint=hint))
                checks.append(Check(name=label, ok=False, detail="not probed: no API key", hint=hint))
                continue
            checks.append(Check(name=f"key {teacher.api_key_env}", ok=True,
                                detail=f"{teacher.api_key_env} is set (teacher {teacher.name!r})"))
        if teacher.launch:
            checks.append(_check_launchable(teacher))
        else:
            checks.append(check_teacher_endpoint(teacher, key))
    return checks


def _check_launchable(teacher: TeacherConfig) -> Check:
    label = f"teacher {teacher.name}"
    problems = []
    model = Path(teacher.model).expanduser()
    if not model.is_dir():
        problems.append(f"model folder {teacher.model} not found")
    elif not (model / "config.json").is_file():
        problems.append(f"{teacher.model} has no config.json (not an mlx-lm model folder)")
    if importlib.util.find_spec("mlx_lm") is None:
        problems.append("mlx_lm is not importable")
    port = urlsplit(teacher.base_url).port
    if port is not None and not tcp_problem(f"127.0.0.1:{port}"):
        problems.append(f"port {port} is already in use")
    if problems:
        return Check(name=label, ok=False, detail="launch = true: " + "; ".join(problems),
                     hint="point model at a local mlx-lm model folder (`distill teacher bundle` writes a small "
                          "one to data/models/smollm2-135m-instruct), pip install mlx-lm, pick a free port")
    return Check(name=label, ok=True,
                 detail=f"launch = true: model folder found, mlx_lm importable, port {port} free "
                        "(the run starts and supervises the server)")


def check_teacher_endpoint(teacher: TeacherConfig, api_key: str | None) -> Check:
    """GET /models (is the model there?), then a one-token chat with one tool (are tools accepted?)."""
    label = f"teacher {teacher.name}"
    where = f"{redact_url(teacher.base_url)} ({teacher.kind})"
    notes: list[str] = []
    models = ask(teacher, "/models", api_key, timeout_s=PROBE_TIMEOUT_S)
    status, payload, error = models.status, models.payload, models.error
    if error is not None:
        return Check(name=label, ok=False, detail=f"{where}: no answer ({error})", hint=_unreachable_hint(teacher))
    if status in (401, 403):
        return Check(name=label, ok=False, detail=f"{where}: GET /models answered HTTP {status}",
                     hint=f"check the key in {teacher.api_key_env}" if teacher.api_key_env
                     else "this server wants a key: set api_key_env")
    if status == 200:
        listed = _model_ids(payload)
        if teacher.model in listed:
            notes.append("model listed")
        elif teacher.kind == "local":
            notes.append("model not listed (mlx_lm.server lists cached repos and the served path)")
        else:
            shown = ", ".join(listed[:5]) or "nothing"
            return Check(name=label, ok=False, detail=f"{where}: model {teacher.model!r} not served (lists {shown})",
                         hint="set model to one of the listed ids (vLLM: --served-model-name)")
    else:
        # mlx_lm.server 0.32 can answer /v1/models with a traceback while chat works (facts.md).
        notes.append(f"GET /models answered HTTP {status}")
    chat = ask(teacher, "/chat/completions", api_key, body=_tool_probe_body(teacher),
               timeout_s=min(teacher.timeout_s, CHAT_TIMEOUT_S))
    status, payload, error = chat.status, chat.payload, chat.error
    if error is not None:
        return Check(name=label, ok=False, detail=f"{where}: chat with tools got no answer ({error})",
                     hint="the server answers /models but not chat: is the model still loading? raise timeout_s")
    if status != 200 or not isinstance(payload, dict) or "choices" not in payload:
        message = _error_message(payload)
        return Check(name=label, ok=False, detail=f"{where}: chat with tools answered HTTP {status}: {message}",
                     hint=_chat_hint(teacher, status, message))
    notes.append("chat with tools accepted")
    return Check(name=label, ok=True, detail=f"{where}: " + ", ".join(notes))


def _tool_probe_body(teacher: TeacherConfig) -> dict[str, Any]:
    body: dict[str, Any] = dict(teacher.extra_body)
    body.update(
        model=teacher.model,
        messages=[{"role": "user", "content": "Reply with OK."}],
        tools=[{
            "type": "function",
            "function": {
                "name": "ping",
                "description": "Check that the service is alive.",
                "parameters": {"type": "object", "properties": {}, "required": []},
            },
        }],
        tool_choice="auto",
        max_tokens=1,
    )
    return body


def _model_ids(payload: Any) -> list[str]:
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        return [str(item.get("id")) for item in payload["data"] if isinstance(item, dict)]
    return []


def _error_message(payload: Any) -> str:
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        return first_line(error)[:200]
    return first_line(payload)[:200]


def _chat_hint(teacher: TeacherConfig, status: int, message: str) -> str:
    lowered = message.lower()
    if status in (401, 403):
        return f"check the key in {teacher.api_key_env}" if teacher.api_key_env else "this server wants a key"
    if "tool" in lowered:
        return ("the server refuses tools: start vLLM with --enable-auto-tool-choice --tool-call-parser hermes "
                "(qwen3_coder for Qwen3-Coder); mlx_lm.server needs a model whose chat template has tools")
    if status == 404 or "model" in lowered:
        return "the model name is not served here: check model (vLLM --served-model-name; mlx_lm.server --model)"
    if status == 429:
        return "rate limited: lower max_concurrency, or wait"
    return "see the server's log"


def _unreachable_hint(teacher: TeacherConfig) -> str:
    if teacher.kind == "local":
        port = urlsplit(teacher.base_url).port or 8080
        return (f"start it: distill teacher serve --model MODEL_FOLDER --port {port} (or set launch = true to "
                "have the run start it); from another machine the server must listen on a reachable address")
    return "check base_url, that the server is up, and that this machine may reach it (firewall, security group)"
