"""Child processes distill starts and owns: one way to start them, wait until they answer, read
their log and stop them (the embedded Redis, `mlx_lm.server`, simulated teachers in a process).

Each child gets its own process group (stopping it also ends whatever it started) and, on Linux,
dies with distill even when distill is killed with SIGKILL, instead of lingering as an orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from distill.shared.errors import DistillError

PR_SET_PDEATHSIG = 1


class ChildRefused(Exception):
    """Raised by a readiness probe when the child answers but will never serve (stop waiting)."""


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """In a child (a `preexec_fn` or a pool initializer): receive `sig` when the parent dies.

    SIGTERM by default, so a server can flush (Valkey's append-only file) before it goes.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, sig)


class Child:
    """A running child process, named for messages, with the file its output goes to."""

    def __init__(self, process: subprocess.Popen[bytes], *, name: str, log_path: Path | None) -> None:
        self.process = process
        self.name = name
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None:
            return ""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _see_log(self) -> str:
        return f"; see {self.log_path}" if self.log_path is not None else ""

    def wait_ready(
        self,
        probe: Callable[[], None],
        timeout_s: float,
        error: type[DistillError],
        *,
        interval_s: float = 0.1,
    ) -> None:
        """Call `probe` until it returns; raise `error` if the child exits, refuses or stays silent.

        The probe raises OSError, ValueError or a library's connection error while the child is not
        answering yet, and ChildRefused when it answers but cannot serve (then waiting is pointless).
        """
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            if not self.alive():
                tail = self.log_tail()
                raise error(
                    f"{self.name} exited with code {self.returncode} before it was ready{self._see_log()}"
                    + (f":\n{tail}" if tail else "")
                )
            try:
                probe()
                return
            except ChildRefused as refused:
                self.stop()
                raise error(f"{self.name} cannot serve ({refused}){self._see_log()}") from None
            except Exception as failure:  # noqa: BLE001 - any probe failure means "not yet"
                last = str(failure) or type(failure).__name__
            time.sleep(interval_s)
        self.stop()
        raise error(f"{self.name} did not answer within {timeout_s:.0f}s ({last}){self._see_log()}")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM to the child's process group, SIGKILL if it lingers past `timeout_s`."""
        if self.process.poll() is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use it to prove that work survives the loss)."""
        if self.process.poll() is None:
            self._signal(signal.SIGKILL)
            self.process.wait()

    def _signal(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)


def spawn(
    command: Sequence[str],
    *,
    name: str,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdin_data: bytes | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start `command` in a process group of its own; stdout and stderr appended to `log_path`.

    `stdin_data` is written to the child's stdin and closed (a secret handed over that way is in no
    file and no process listing). Without `log_path` the output is discarded.
    """
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        output = stack.enter_context(log_path.open("ab")) if log_path is not None else subprocess.DEVNULL
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    if stdin_data is not None:
        assert process.stdin is not None
        process.stdin.write(stdin_data)
        process.stdin.close()
    return Child(process, name=name, log_path=log_path)
