"""Before a run: which teachers can be used, and which policy that leaves.

A cloud teacher without its key, or that doesn't answer, is left out with a warning, and with no
cloud teacher left the run falls back to `local-only`. A local teacher that doesn't answer stays
in (its server may still be loading a model; the breaker handles it if it never comes up).

`ask` is the one way distill's coordinator side talks HTTP to a teacher: the run's probe here and
`distill doctor`'s checks (coordinator/doctor.py) both use it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2

from distill.shared.settings import ConfigError, Policy, Settings, TeacherConfig, eligible_teachers

PROBE_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)


@dataclass
class Answer:
    """A teacher's answer to one request: status 0 and `error` when nothing came back."""

    status: int
    payload: Any = None
    error: str | None = None


def ask(teacher: TeacherConfig, path: str, api_key: str | None, *, body: dict[str, Any] | None = None,
        timeout_s: float = PROBE_TIMEOUT_S) -> Answer:
    """GET (or, with a body, POST as JSON) `base_url + path`; JSON answers parsed, others kept as text."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx2.request("POST" if body is not None else "GET", f"{teacher.base_url}{path}",
                                  headers=headers, json=body, timeout=timeout_s)
    except (httpx2.HTTPError, OSError, ValueError) as error:
        text = str(error).strip()
        return Answer(0, error=text.splitlines()[0] if text else type(error).__name__)
    try:
        payload = json.loads(response.content)
    except ValueError:
        payload = response.content.decode("utf-8", errors="replace")[:300]
    return Answer(response.status_code, payload)


@dataclass
class TeacherPlan:
    teachers: list[TeacherConfig]
    policy: Policy
    warnings: list[str] = field(default_factory=list)
    reachable: dict[str, bool] = field(default_factory=dict)


def probe(teacher: TeacherConfig, api_key: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when `GET /v1/models` answers; otherwise why not (never echoing the key)."""
    answer = ask(teacher, "/models", api_key, timeout_s=timeout_s)
    if answer.error is not None:
        return answer.error
    status = answer.status
    if status in (401, 403):
        return f"HTTP {status} (check the key in {teacher.api_key_env})"
    if status >= 500 and status != 503:
        # mlx_lm.server can answer /v1/models with a 500 while chat works (facts.md).
        return None if teacher.kind == "local" else f"HTTP {status}"
    return None if status < 500 else f"HTTP {status}"


def plan_teachers(settings: Settings, *, probe_endpoints: bool = True) -> TeacherPlan:
    if not settings.teachers:
        raise ConfigError("no teacher: give --teacher URL --teacher-model MODEL, or [[teachers]] in distill.toml")
    policy = settings.policy
    # A teacher the policy never uses is not asked for its key nor probed.
    candidates = eligible_teachers(settings.teachers, policy)
    if not candidates:  # only local-only and cloud-only leave teachers out
        raise ConfigError(f"policy {policy}, but no {policy.removesuffix('-only')} teacher is configured")
    usable: list[TeacherConfig] = []
    warnings: list[str] = []
    reachable: dict[str, bool] = {}
    for teacher in candidates:
        try:
            key = teacher.api_key()
        except ConfigError as missing:
            if teacher.kind == "local":
                raise
            warnings.append(f"{missing}; leaving cloud teacher {teacher.name!r} out")
            continue
        problem = probe(teacher, key if teacher.api_key_env else None) if probe_endpoints else None
        reachable[teacher.name] = problem is None
        if problem is not None:
            if teacher.kind == "cloud":
                warnings.append(f"cloud teacher {teacher.name!r} does not answer ({problem}); leaving it out")
                continue
            warnings.append(f"local teacher {teacher.name!r} does not answer yet ({problem})")
        usable.append(teacher)
    if not usable:
        raise ConfigError("no teacher is usable: " + "; ".join(warnings))
    # Local teachers are never left out, so only the cloud can go missing from a mixed plan.
    if policy in ("local-first", "spread") and not any(t.kind == "cloud" for t in usable) \
            and any(t.kind == "cloud" for t in settings.teachers):
        warnings.append("no cloud teacher is usable: running local-only")
        policy = "local-only"
    return TeacherPlan(usable, policy, warnings, reachable)


@contextlib.contextmanager
def launched_teachers(teachers: list[TeacherConfig], log_dir: Path) -> Iterator[list[Any]]:
    """Serve every `launch = true` teacher under a supervisor for the length of the run."""
    from distill.teachers.supervisor import ServeOptions, TeacherSupervisor

    supervisors = []
    try:
        for teacher in teachers:
            if teacher.launch:
                log.info("starting local teacher %r (%s) ...", teacher.name, teacher.model)
                options = ServeOptions(model=teacher.model, port=urlsplit(teacher.base_url).port,
                                       adapter_path=teacher.launch_adapter_path, extra_args=teacher.launch_args,
                                       log_dir=log_dir)
                supervisor = TeacherSupervisor(options)
                supervisor.start()
                supervisors.append(supervisor)
        yield supervisors
    finally:
        for supervisor in supervisors:
            supervisor.stop()
