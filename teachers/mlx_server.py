"""Start and stop a real `mlx_lm.server` child process, and the environment every MLX child needs.

A plain primitive: start, wait until it answers, stop. Restarting on a crash is the caller's job.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from distill.shared.children import Child, ChildRefused, spawn
from distill.shared.connection import free_port  # re-exported: one helper for every child server
from distill.shared.errors import DistillError

# Debian's libopenblas0-pthread. The Linux mlx-cpu wheel bundles the reference BLAS; preloading
# OpenBLAS makes CPU matmuls 10-25x faster with identical results (facts.md). It can only be
# applied when a process starts, hence a child environment rather than a runtime switch.
OPENBLAS_PATH = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0")

# The server only answers the model it was started with under this name; any other name makes it
# try to load (download) that model.
SERVED_MODEL_NAME = "default_model"


class MlxServerError(DistillError):
    """The server could not be started or did not become ready; the message names the log."""


def openblas_missing(env: Mapping[str, str] | None = None) -> bool:
    """True on Linux when Debian's OpenBLAS is installed but `env` (default: this process's) does not preload it."""
    if sys.platform != "linux" or not OPENBLAS_PATH.exists():
        return False
    env = os.environ if env is None else env
    return str(OPENBLAS_PATH) not in env.get("LD_PRELOAD", "").split(":")


def blas_in_use() -> str:
    """Which BLAS this process's MLX runs its CPU matmuls on, read from what is actually loaded."""
    if sys.platform == "darwin":
        return "Apple's Accelerate"
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "unknown"
    if "libopenblas" in maps:
        return "OpenBLAS (preloaded)"
    hint = "" if OPENBLAS_PATH.exists() else "; apt-get install libopenblas0-pthread: 10-25x faster"
    return f"MLX's reference BLAS (slow{hint})"


def mlx_child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that runs MLX (server, training).

    Preloads OpenBLAS where Debian's package is installed, keeps Hugging Face offline (local
    models only, never a download), and points HF_HUB_CACHE at a directory that exists, since
    mlx_lm.server's GET /v1/models tracebacks when the cache directory is missing.
    """
    env = dict(os.environ if base is None else base)
    if openblas_missing(env):
        env["LD_PRELOAD"] = ":".join([str(OPENBLAS_PATH), *(p for p in env.get("LD_PRELOAD", "").split(":") if p)])
    env["HF_HUB_OFFLINE"] = "1"
    cache = Path(env.get("HF_HUB_CACHE") or Path.home() / ".cache" / "huggingface" / "hub")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError:
        cache = Path(tempfile.gettempdir()) / "distill-hf-hub"
        cache.mkdir(parents=True, exist_ok=True)
    env["HF_HUB_CACHE"] = str(cache)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class MlxServer(Child):
    """A running `mlx_lm.server` child. Use as a context manager, or call `stop()`."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        *,
        host: str,
        port: int,
        model: str,
        adapter_path: str | None,
        log_path: Path,
    ) -> None:
        super().__init__(process, name=f"mlx_lm.server for {model}", log_path=log_path)
        self.host = host
        self.port = port
        self.model = model
        self.adapter_path = adapter_path

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://{self.host}:{self.port}/v1"

    def wait_ready(self, timeout_s: float) -> None:  # type: ignore[override]
        """Block until a one-token chat completion answers; raise MlxServerError otherwise."""
        super().wait_ready(self._probe, timeout_s, MlxServerError, interval_s=0.2)

    def _probe(self) -> None:
        try:
            probe_chat(self.base_url, timeout_s=30.0)
        except urllib.error.HTTPError as error:
            # Up but refusing: mlx_lm.server loads the model on the first request and answers
            # 404 when it can't (a missing path, or an unknown repo id offline).
            if 400 <= error.code < 500:
                detail = error.read().decode("utf-8", "replace")[:300]
                raise ChildRefused(f"HTTP {error.code} {detail}") from None
            raise

    def __enter__(self) -> MlxServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def probe_chat(base_url: str, *, timeout_s: float = 30.0) -> None:
    """POST a one-token chat completion; raise OSError/ValueError unless it answers 200 with JSON.

    GET /v1/models is not used: on mlx-lm 0.32 it can traceback on a missing HF cache.
    """
    body = json.dumps(
        {
            "model": SERVED_MODEL_NAME,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
        }
    ).encode()
    request = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        payload = json.loads(response.read())
    if "choices" not in payload:
        raise ValueError(f"unexpected answer from {base_url}: {str(payload)[:200]}")


def start_mlx_server(
    model: str | Path,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    adapter_path: str | Path | None = None,
    extra_args: Sequence[str] = (),
    log_path: Path | None = None,
    ready_timeout_s: float = 180.0,
    env: dict[str, str] | None = None,
) -> MlxServer:
    """Start `python -m mlx_lm server` on `host` (a free port unless given) and wait until ready.

    stdout and stderr go to `log_path` (a temporary file unless given). Raises MlxServerError
    with the log's tail when the server exits or stays silent past `ready_timeout_s`.
    """
    attempts = 3 if port is None else 1
    for attempt in range(1, attempts + 1):
        chosen = port if port is not None else free_port(host)
        server = _spawn(model, host, chosen, adapter_path, extra_args, log_path, env)
        try:
            server.wait_ready(ready_timeout_s)
            return server
        except MlxServerError:
            # Another process may have taken the free port between our probe and the bind.
            if attempt < attempts and "Address already in use" in server.log_tail(50):
                continue
            server.stop()
            raise
    raise AssertionError("unreachable")


def _spawn(
    model: str | Path,
    host: str,
    port: int,
    adapter_path: str | Path | None,
    extra_args: Sequence[str],
    log_path: Path | None,
    env: dict[str, str] | None,
) -> MlxServer:
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="mlx-server-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    command = [
        sys.executable, "-m", "mlx_lm", "server",
        "--model", str(model),
        "--host", host,
        "--port", str(port),
    ]
    if adapter_path is not None:
        command += ["--adapter-path", str(adapter_path)]
    command += list(extra_args)
    child = spawn(command, name="mlx_lm.server", log_path=log_path,
                  env=env if env is not None else mlx_child_env())
    return MlxServer(
        child.process,
        host=host,
        port=port,
        model=str(model),
        adapter_path=str(adapter_path) if adapter_path is not None else None,
        log_path=log_path,
    )
