"""What a new user meets first: checks before services, whole paths at 80 columns, one-line errors.

Real parts throughout: the `distill` command in a subprocess (COLUMNS=80, as in a CI log), a
listening teacher that counts every connection, the embedded Redis and local Ray of a real run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import REPO, write_prompts
from rich.console import Console

from distill.coordinator.run import generate
from distill.shared.settings import Settings, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher
from distill.views import endpoints_table, print_with_paths, summary_paths, summary_table, tools_table


class Counting(BaseHTTPRequestHandler):
    """A teacher that answers nothing useful and counts everyone who knocks."""

    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def counting_teacher() -> Iterator[str]:
    Counting.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def distill(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO / "tests")}
    return subprocess.run([sys.executable, "-m", "distill", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_generate_with_a_missing_prompts_file_fails_before_any_teacher_or_run_folder(tmp_path, counting_teacher):
    done = distill("generate", str(tmp_path / "nope.jsonl"), "--teacher", counting_teacher, "--teacher-model", "m",
                   "--run", "r1", "--out-dir", str(tmp_path / "runs"), "--workspace", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"error: {tmp_path / 'nope.jsonl'}: prompts file not found"
    assert "Traceback" not in done.stderr
    assert Counting.hits == 0
    assert not (tmp_path / "runs" / "r1").exists()


def test_a_failed_start_removes_the_run_folder_it_made_and_only_that(tmp_path, counting_teacher):
    """A bad prompt line is found once Redis and the teacher are up: the run is refused there."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "fine"}\n{"promt": "a typo"}\n')
    args = ("generate", str(prompts), "--teacher", counting_teacher, "--teacher-model", "m", "--out-dir",
            str(tmp_path / "runs"), "--workspace", str(tmp_path))
    done = distill(*args, "--run", "fresh", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "prompts.jsonl:2: field" in done.stderr
    assert Counting.hits >= 1  # it got as far as the teacher: services had started
    assert not (tmp_path / "runs" / "fresh").exists()
    # A folder the user already had (here with a record in it) is never removed.
    kept = tmp_path / "runs" / "kept"
    kept.mkdir(parents=True)
    (kept / "conversations.jsonl").write_text("")
    done = distill(*args, "--run", "kept", cwd=tmp_path)
    assert done.returncode == 2
    assert (kept / "conversations.jsonl").is_file()


def test_demo_with_a_missing_student_fails_at_once(tmp_path):
    done = distill("demo", "--student", str(tmp_path / "nonexistent"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: --student: {tmp_path / 'nonexistent'}: model directory not found"
    assert list(tmp_path.iterdir()) == []  # no distill-demo folder, nothing started


def test_convert_names_a_prompts_file_for_what_it_is(tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    done = distill("convert", str(prompts), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 2
    assert "this is a prompts file, not conversations: run distill generate first" in done.stderr
    assert "schema_version" not in done.stderr and not (tmp_path / "data").exists()


def test_version():
    done = distill("--version", cwd=REPO)
    assert done.returncode == 0 and done.stdout.strip().startswith("distill 0.")


def test_generate_output_at_80_columns_keeps_every_path_whole(tmp_path, ray_session, redis_url, code_workspace, run_name):
    teacher = SimTeacher()
    teacher.start()
    try:
        deep = tmp_path / "a-rather-long-folder-name-for-runs" / "and-another-level-below-it"
        settings = Settings(run=run_name, out_dir=deep, workspace=code_workspace, redis_url=redis_url,
                            teachers=[TeacherConfig(name="sim-teacher-with-a-long-name", base_url=teacher.base_url,
                                                    model="sim", timeout_s=10)])
        result = generate(settings, write_prompts(tmp_path / "prompts.jsonl", 3))
    finally:
        teacher.stop()
    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    console.print(endpoints_table(result.endpoints, result.policy))
    console.print(tools_table(result.tools, result.tool_processes))
    print_with_paths(console, summary_table(result), summary_paths(result))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines() if "/" not in line) <= 80
    assert "…" not in text, text  # no header or cell cut to fit
    for _, path in summary_paths(result):
        assert str(path) in text, f"{path} is not whole in:\n{text}"
    assert len(str(result.run_dir)) > 80  # the test means something: the path is wider than the screen
    for word in ("conversations", "requests", "tokens in", "sim-teacher-with-a-long-name"):
        assert word in text
    assert json.loads((result.run_dir / "progress.json").read_text())


def test_the_blas_named_is_the_one_loaded(tmp_path):
    """What /proc/self/maps holds decides, not what the environment asks for: a preload of a file
    that is not OpenBLAS (here a copy of libc under another name) must not read as OpenBLAS."""
    from distill.teachers.mlx_server import OPENBLAS_PATH

    probe = "import mlx.core; from distill.teachers.mlx_server import blas_in_use; print(blas_in_use())"

    def blas(preload: str) -> str:
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | ({"LD_PRELOAD": preload} if preload else {})
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                              check=True)
        return done.stdout.strip()

    assert blas("").startswith("MLX's reference BLAS")
    assert OPENBLAS_PATH.exists(), "Debian's libopenblas0-pthread is part of this project's test machine"
    assert blas(str(OPENBLAS_PATH)) == "OpenBLAS (preloaded)"
    decoy = tmp_path / "libblas-decoy.so"
    decoy.write_bytes(Path("/lib/x86_64-linux-gnu/libm.so.6").read_bytes())
    assert blas(str(decoy)).startswith("MLX's reference BLAS")


def test_ctrl_c_says_in_one_line_how_to_resume(tmp_path):
    import signal
    import time

    from distill.teachers.sim_teacher import SimTeacherConfig

    teacher = SimTeacher(SimTeacherConfig(latency_s=60))  # slow enough that the run is mid-flight
    teacher.start()
    try:
        prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
        process = subprocess.Popen(
            [sys.executable, "-m", "distill", "generate", str(prompts), "--run", "r", "--out-dir", str(tmp_path / "runs"),
             "--workspace", str(tmp_path), "--teacher", teacher.base_url, "--teacher-model", "sim", "--no-progress"],
            cwd=tmp_path, env={**os.environ, "COLUMNS": "80"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        snapshot = tmp_path / "runs" / "r" / "progress.json"
        deadline = time.monotonic() + 240  # a guard against a hung start, not a timing expectation
        while not snapshot.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert snapshot.exists(), process.communicate(timeout=60)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        teacher.stop()
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == (
        "interrupted: run the same command again to resume; the conversations written so far are kept")
    assert "Traceback" not in stderr
