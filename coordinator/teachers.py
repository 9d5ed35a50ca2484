"""Before a run: which teachers can be used, and which policy that leaves.

A cloud teacher without its key, or that doesn't answer, is left out with a warning, and with no
cloud teacher left the run falls back to `local-only`. A local teacher that doesn't answer stays
in (its server may still be loading a model; the breaker handles it if it never comes up).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib.error
import urllib.request

from rich.console import Console

from distill.shared.settings import ConfigError, Policy, Settings, TeacherConfig

PROBE_TIMEOUT_S = 5.0
console = Console(stderr=True)


@dataclass
class TeacherPlan:
    teachers: list[TeacherConfig]
    policy: Policy
    warnings: list[str] = field(default_factory=list)
    reachable: dict[str, bool] = field(default_factory=dict)


def probe(teacher: TeacherConfig, api_key: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when `GET /v1/models` answers; otherwise why not (never echoing the key)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(f"{teacher.base_url}/models", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return f"{type(reason).__name__ if not isinstance(reason, str) else reason}"
    if status in (401, 403):
        return f"HTTP {status} (check the key in {teacher.api_key_env})"
    if status >= 500 and status != 503:
        # mlx_lm.server can answer /v1/models with a 500 while chat works (facts.md).
        return None if teacher.kind == "local" else f"HTTP {status}"
    return None if status < 500 else f"HTTP {status}"


def plan_teachers(settings: Settings, *, probe_endpoints: bool = True) -> TeacherPlan:
    if not settings.teachers:
        raise ConfigError("no teacher: give --teacher URL --teacher-model MODEL, or [[teachers]] in distill.toml")
    usable: list[TeacherConfig] = []
    warnings: list[str] = []
    reachable: dict[str, bool] = {}
    for teacher in settings.teachers:
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
    policy = settings.policy
    has_cloud = any(t.kind == "cloud" for t in usable)
    has_local = any(t.kind == "local" for t in usable)
    if policy in ("local-first", "spread") and not has_cloud and any(t.kind == "cloud" for t in settings.teachers):
        warnings.append("no cloud teacher is usable: running local-only")
        policy = "local-only"
    if policy == "local-only" and not has_local:
        raise ConfigError("policy local-only, but no local teacher is configured")
    if policy == "cloud-only" and not has_cloud:
        raise ConfigError("policy cloud-only, but no cloud teacher is usable")
    return TeacherPlan(usable, policy, warnings, reachable)


@contextlib.contextmanager
def launched_teachers(teachers: list[TeacherConfig], log_dir: Path) -> Iterator[list[Any]]:
    """Serve every `launch = true` teacher under a supervisor for the length of the run."""
    from distill.teachers.supervisor import ServeOptions, TeacherSupervisor

    supervisors = []
    try:
        for teacher in teachers:
            if teacher.launch:
                console.print(f"starting local teacher {teacher.name!r} ({teacher.model}) ...", highlight=False)
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
