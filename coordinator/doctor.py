"""`distill doctor`: is this machine (and its cluster) ready for a run? One line per check.

Every check says what it found and, when it fails, how to fix it. A check is `required` when a
run would fail (or silently do something else than configured) without it; the others are
information or warnings. Secrets never appear: URLs are redacted and key values are scrubbed
from anything a server answers.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from distill.coordinator.checks import Check, first_line
from distill.coordinator.doctor_cluster import check_ray, check_redis
from distill.coordinator.doctor_mcp import check_mcp_servers
from distill.coordinator.doctor_teachers import check_teachers
from distill.shared.settings import Settings

LOW_DISK_BYTES = 1024**3


def run_doctor(settings: Settings, *, run_dir: Path | None = None) -> list[Check]:
    """Every check, in the order a run needs them. Never raises for a failed check."""
    checks: list[Check] = []
    secrets = _secret_values(settings)
    checks.append(_guard(check_redis, "redis", settings))
    checks.extend(_guard_many(check_ray, "ray", settings))
    checks.extend(_guard_many(check_teachers, "teachers", settings))
    checks.append(_guard(check_workspace, "workspace", settings))
    checks.append(_guard(check_tools, "tools", settings))
    checks.extend(_guard_many(check_mcp_servers, "mcp", settings))
    checks.extend(_guard_many(check_mlx, "mlx", settings))
    checks.append(_guard(check_disk, "disk", settings, run_dir or settings.run_dir()))
    return [_scrub(check, secrets) for check in checks]


def failed_required(checks: Iterable[Check]) -> list[Check]:
    return [check for check in checks if check.failed_required]


def check_workspace(settings: Settings) -> Check:
    path = settings.workspace.expanduser()
    resolved = path.resolve()
    if not resolved.is_dir():
        return Check(name="workspace", ok=False, detail=f"{resolved} is not a folder",
                     hint="pass --workspace FOLDER (the code the tools may read)")
    try:
        entries = sum(1 for _ in resolved.iterdir())
    except OSError as error:
        return Check(name="workspace", ok=False, detail=f"{resolved}: cannot list ({first_line(error)})",
                     hint="give the user running distill (and the Ray workers) read access")
    detail = f"{resolved}: readable, {entries} entries"
    if settings.ray_address:
        detail += "; workers read it at this same path on every node"
    return Check(name="workspace", ok=True, detail=detail)


def check_tools(settings: Settings) -> Check:
    """The tool capacity (processes per worker) and whether every custom tool imports."""
    from distill.worker.custom_tools import ToolSetupError, load_custom_tools
    from distill.worker.tool_pool import default_processes

    limits = settings.limits
    processes = limits.tool_processes or default_processes()
    source = "tool_processes" if limits.tool_processes else "this node's cores"
    detail = (f"{processes} tool process(es) per worker ({source}) x {settings.workers} worker(s); "
              f"{limits.tool_timeout_s:g}s per call, execution only")
    try:
        load_custom_tools(settings.custom_tools, settings.limits.builtin_tools)
    except ToolSetupError as error:
        return Check(name="tools", ok=False, detail=f"{detail}; {error}",
                     hint="install the tool's package where the workers run, or fix custom_tools")
    if settings.custom_tools:
        detail += f"; custom tools import: {', '.join(settings.custom_tools)}"
    if settings.ray_address:
        detail += " (counted on this machine; each worker sizes its pool to its own node)"
    return Check(name="tools", ok=True, detail=detail)


def check_mlx(settings: Settings) -> list[Check]:
    required = any(teacher.launch for teacher in settings.teachers)
    why = "needed by launch = true teachers" if required else "needed for local teachers and training on this machine"
    try:
        import mlx.core as mx
    except Exception as error:  # noqa: BLE001 - a broken install raises anything
        return [Check(name="mlx", ok=False, required=required, detail=f"import mlx.core failed: {first_line(error)}",
                      hint=f"{why}: pip install 'mlx[cpu]' mlx-lm on Linux, 'mlx' mlx-lm on macOS, 'mlx[cuda]' for NVIDIA")]
    metal = _safe_call(lambda: mx.metal.is_available())
    cuda = _safe_call(lambda: mx.cuda.is_available()) if hasattr(mx, "cuda") else False
    backend = "Metal" if metal else "CUDA" if cuda else "CPU"
    version = getattr(mx, "__version__", "?")
    checks = [Check(name="mlx", ok=True, required=required,
                    detail=f"mlx {version}: default device {mx.default_device()}, backend {backend} "
                           f"(Metal {'yes' if metal else 'no'}, CUDA {'yes' if cuda else 'no'})")]
    if sys.platform.startswith("linux") and backend == "CPU":
        from distill.teachers.mlx_server import OPENBLAS_PATH

        if OPENBLAS_PATH.exists():
            checks.append(Check(name="openblas", ok=True, required=False,
                                detail=f"{OPENBLAS_PATH} found: preloaded for MLX servers and training"))
        else:
            checks.append(Check(name="openblas", ok=False, required=False,
                                detail=f"{OPENBLAS_PATH} not found: MLX's CPU backend uses its slow reference BLAS",
                                hint="apt-get install -y libopenblas0-pthread (10-25x faster CPU matmuls)"))
    return checks


def check_disk(settings: Settings, run_dir: Path) -> Check:
    target = Path(run_dir).expanduser().resolve()
    existing = target
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        return Check(name="disk", ok=False, detail=f"{existing} is not writable (runs go to {target})",
                     hint="pass --out-dir to a folder you can write")
    free = shutil.disk_usage(existing).free
    detail = f"{_gib(free)} free under {existing} (for {target})"
    if free < LOW_DISK_BYTES:
        return Check(name="disk", ok=False, required=False, detail=detail,
                     hint="under 1 GiB: a long run's records (and the AOF) may not fit; free space or use --out-dir")
    return Check(name="disk", ok=True, detail=detail)


def _gib(count: int) -> str:
    return f"{count / 1024**3:.1f} GiB"


def _safe_call(function: Any) -> bool:
    try:
        return bool(function())
    except Exception:  # noqa: BLE001
        return False


def _secret_values(settings: Settings) -> list[str]:
    """The Redis password (as written and decoded) and the teachers' keys: never to be shown."""
    values = []
    password = urlsplit(settings.redis_url).password if settings.redis_url else None
    if password:
        values += [password, unquote(password)]
    for teacher in settings.teachers:
        if teacher.api_key_env and os.environ.get(teacher.api_key_env):
            values.append(os.environ[teacher.api_key_env])
    for server in settings.mcp_servers:
        values += [os.environ[name] for name in server.referenced_env(missing_ok=True)]
    return [value for value in values if len(value) >= 4]


def _scrub(check: Check, secrets: list[str]) -> Check:
    if not secrets:
        return check
    fields = {}
    for name in ("name", "detail", "hint"):
        text = getattr(check, name)
        if text:
            for secret in secrets:
                text = text.replace(secret, "***")
            fields[name] = text
    return check.model_copy(update=fields)


def _guard(function: Any, name: str, *args: Any) -> Check:
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - doctor reports, it does not crash
        return Check(name=name, ok=False, detail=f"the check itself failed: {type(error).__name__}: {first_line(error)}",
                     hint="please report this")


def _guard_many(function: Any, name: str, *args: Any) -> list[Check]:
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001
        return [Check(name=name, ok=False,
                      detail=f"the check itself failed: {type(error).__name__}: {first_line(error)}",
                      hint="please report this")]
