"""A supervised local teacher: `mlx_lm.server` as a child that is restarted whenever it dies.

The seed's run died with its server (Metal out of memory under long tool conversations). Here the
server is started with the memory-limiting flags (prompt-cache bytes and size, decode and prompt
concurrency), kept on one port so its URL never changes, and restarted with backoff when it
exits. Work in flight at the crash fails over or is retried by the workers; nothing is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import tenacity

from distill.shared.retry import backoff
from distill.teachers.mlx_server import MlxServer, MlxServerError, free_port, start_mlx_server

log = logging.getLogger("distill.teacher")


@dataclass
class ServeOptions:
    model: str
    port: int | None = None
    # 127.0.0.1 by default; 0.0.0.0 (or a LAN address) lets Ray workers on other machines reach it.
    host: str = "127.0.0.1"
    adapter_path: str | None = None
    # Memory guards from facts.md: a bounded prompt cache and bounded concurrency.
    prompt_cache_bytes: int | None = 2 * 1024**3
    prompt_cache_size: int | None = 4
    decode_concurrency: int | None = None
    prompt_concurrency: int | None = None
    max_tokens: int | None = None
    extra_args: list[str] = field(default_factory=list)
    log_dir: Path = Path("data/logs")
    ready_timeout_s: float = 300.0
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0

    def server_args(self) -> list[str]:
        args: list[str] = []
        for flag, value in (
            ("--prompt-cache-bytes", self.prompt_cache_bytes),
            ("--prompt-cache-size", self.prompt_cache_size),
            ("--decode-concurrency", self.decode_concurrency),
            ("--prompt-concurrency", self.prompt_concurrency),
            ("--max-tokens", self.max_tokens),
        ):
            if value is not None:
                args += [flag, str(value)]
        return args + list(self.extra_args)


class TeacherSupervisor:
    """Start with `start()` (returns the base URL once it answers); `stop()` ends it for good."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.port = options.port or free_port()
        self.server: MlxServer | None = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "::") else self.options.host
        return f"http://{host}:{self.port}/v1"

    def start(self) -> str:
        self.server = self._launch()
        self._watcher = threading.Thread(target=self._watch, name="teacher-supervisor", daemon=True)
        self._watcher.start()
        return self.base_url

    def _launch(self) -> MlxServer:
        options = self.options
        options.log_dir.mkdir(parents=True, exist_ok=True)
        return start_mlx_server(
            options.model,
            port=self.port,
            host=self.options.host,
            adapter_path=options.adapter_path,
            extra_args=options.server_args(),
            log_path=options.log_dir / f"mlx-server-{self.port}.log",
            ready_timeout_s=options.ready_timeout_s,
        )

    def _watch(self) -> None:
        while not self._stopping.is_set():
            server = self.server
            if server is not None and server.alive():
                self._stopping.wait(0.5)
                continue
            code = server.process.returncode if server is not None else None
            why = _describe_exit(code)
            tail = server.log_tail(3).replace("\n", " | ") if server is not None else ""
            log.warning("teacher server on port %s %s; restarting in %.1fs. Last log: %s", self.port, why,
                        self.options.backoff_s, tail)
            # A server that dies at once is not restarted at once: give its port and memory back first.
            if self._stopping.wait(self.options.backoff_s):
                return
            try:
                self.server = self._relaunch()
            except MlxServerError:
                return  # stopping while it failed to come back
            self.restarts += 1
            log.warning("teacher server on port %s is back (restart %d)", self.port, self.restarts)

    def _relaunch(self) -> MlxServer:
        """Start the server again until it answers, with growing pauses between failed starts."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(MlxServerError),
            wait=backoff(self.options.backoff_s, self.options.max_backoff_s),
            stop=tenacity.stop_when_event_set(self._stopping),
            sleep=self._stopping.wait,  # type: ignore[arg-type]  # tenacity ignores what sleep returns
            before_sleep=_log_failed_start,
            reraise=True,
        )
        return retrying(self._launch)

    def stop(self) -> None:
        self._stopping.set()
        if self._watcher is not None:
            self._watcher.join(10)
        if self.server is not None:
            self.server.stop()


def _log_failed_start(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    first_line = (str(error).splitlines() or [type(error).__name__])[0]
    log.warning("teacher server restart failed: %s; next try in %.1fs", first_line, wait)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "is gone"
    if code < 0:
        import signal

        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def wait_forever(supervisor: TeacherSupervisor) -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        supervisor.stop()
