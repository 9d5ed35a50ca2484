"""The one child-process helper: start, wait until ready, refuse, time out, stop a whole group."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
import pytest

from distill.shared.children import ChildRefused, spawn
from distill.shared.errors import DistillError


class StartError(DistillError):
    pass


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_ready_when_the_probe_answers(tmp_path: Path) -> None:
    flag = tmp_path / "up"
    child = spawn(python(f"import pathlib, time; pathlib.Path({str(flag)!r}).touch(); time.sleep(60)"),
                  name="sleeper", log_path=tmp_path / "sleeper.log")

    def probe() -> None:
        if not flag.exists():
            raise OSError("not up")

    try:
        child.wait_ready(probe, 60, StartError, interval_s=0.01)
        assert child.alive()
    finally:
        child.stop()
    assert not child.alive()


def test_a_child_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    child = spawn(python("import sys; print('bad config line 3'); sys.exit(3)"), name="server",
                  log_path=tmp_path / "server.log")

    def never() -> None:
        raise OSError("refused")

    with pytest.raises(StartError, match=r"(?s)server exited with code 3 before it was ready.*bad config line 3"):
        child.wait_ready(never, 60, StartError, interval_s=0.01)


def test_a_refusal_stops_waiting_and_the_child(tmp_path: Path) -> None:
    child = spawn(python("import time; time.sleep(60)"), name="server", log_path=tmp_path / "s.log")

    def refuse() -> None:
        raise ChildRefused("HTTP 404 no such model")

    with pytest.raises(StartError, match=r"server cannot serve \(HTTP 404 no such model\); see "):
        child.wait_ready(refuse, 60, StartError)
    assert not child.alive()


def test_silence_past_the_deadline_is_an_error_and_stops_the_child(tmp_path: Path) -> None:
    child = spawn(python("import time; time.sleep(60)"), name="mute", log_path=tmp_path / "m.log")

    def silent() -> None:
        raise ConnectionError("connection refused")

    with pytest.raises(StartError, match=r"mute did not answer within 0s \(connection refused\)"):
        child.wait_ready(silent, 0.2, StartError, interval_s=0.01)
    assert not child.alive()


def test_stop_ends_what_the_child_started_too(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, pathlib, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    child = spawn(python(code), name="parent", log_path=tmp_path / "p.log")

    def written() -> None:
        if not pid_file.exists() or not pid_file.read_text():
            raise OSError("not yet")

    child.wait_ready(written, 60, StartError, interval_s=0.01)
    grandchild = psutil.Process(int(pid_file.read_text()))
    child.stop()
    grandchild.wait(10)  # raises TimeoutExpired if the group was not signalled
    assert not grandchild.is_running()


def test_stdin_data_reaches_the_child_and_no_file(tmp_path: Path) -> None:
    out = tmp_path / "got"
    child = spawn(python(f"import sys, pathlib; pathlib.Path({str(out)!r}).write_text(sys.stdin.read())"),
                  name="reader", stdin_data=b"requirepass s3cret")
    assert child.process.wait(60) == 0
    assert out.read_text() == "requirepass s3cret"
