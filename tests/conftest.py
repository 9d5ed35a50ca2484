"""Real parts for every test: an embedded Redis server, one local Ray, a simulated teacher."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401 - imported up front: its late import at session end trips CPython 3.11.7's AST check
import pytest

from distill.coordinator.redis_server import EmbeddedRedis
from distill.shared.connection import connect
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig

REPO = Path(__file__).resolve().parent.parent
_run_names = itertools.count()

# The `slow` marker (README, Test): `python -m pytest -m "not slow"` is the fast subset. Slow means
# local Ray, MLX training or serving, a real model, the browser, the demo or fault injection: a test
# is slow when it lives in one of these files, asks for one of these fixtures, or is named here
# (child `distill` processes, hypothesis fuzzing, many conversations at once).
SLOW_FILES = {
    "test_bench_smoke.py", "test_bundle.py", "test_demo.py", "test_mlx_teacher.py", "test_multinode.py",
    "test_pipeline.py", "test_teachers.py", "test_trainer_eval.py", "test_trainer_train.py",
    "test_viewer_browser.py",
}
SLOW_FOLDERS = {"reliability"}
SLOW_FIXTURES = {"ray_session"}
SLOW_TESTS = {
    "test_continue_with_a_teacher_exactly_once_across_a_kill", "test_bad_input_is_one_line_naming_file_and_line",
    "test_verify_judges_open_records_into_verdicts_file_and_convert_reads_them",
    "test_many_conversations_with_slow_greps_never_time_out", "test_fuzz_tools_are_safe",
    "test_too_long_uses_student_tokens_and_huge_outputs_survive_when_they_fit",
    "test_eval_counts_loops_of_a_looping_student_and_scores_answers", "test_view_command_errors_are_one_line",
    "test_retries_give_up_with_an_infra_error_never_an_answer",
    "test_a_hung_tool_is_killed_and_its_conversation_fails_retryably",
    "test_a_bad_custom_tool_fails_repair_in_one_line_before_any_line",
    "test_a_bad_custom_tool_fails_generate_in_one_line_before_anything_starts",
    "test_distill_train_trains_the_qwen3_student_on_converted_reasoning",
    "test_a_qwen_text_line_with_a_placeholder_is_repaired_and_converts_with_the_same_rendering",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path
        if (path.name in SLOW_FILES or SLOW_FOLDERS & set(path.parent.parts[-1:])
                or SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
                or getattr(item, "originalname", item.name) in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture()
def redis_client(redis_url: str):  # type: ignore[no-untyped-def]
    client = connect(redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False, namespace="distill-tests")
    yield
    ray.shutdown()


@pytest.fixture()
def sim_teacher() -> Iterator[SimTeacher]:
    teacher = SimTeacher(SimTeacherConfig(latency_s=0.02))
    teacher.start()
    yield teacher
    teacher.stop()


@pytest.fixture()
def run_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40].replace('[', '-').replace(']', '')}-{next(_run_names)}-{os.getpid()}"


@pytest.fixture(scope="session")
def code_workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real, small code tree: a copy of distill's own packages (stable while tests run)."""
    root = tmp_path_factory.mktemp("workspace")
    for package in ("coordinator", "worker", "shared"):  # folders of the checkout, not imports
        shutil.copytree(REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "README.txt").write_text("A copy of distill's own code, used as the tools' workspace in tests.\n")
    return root


def write_prompts(path: Path, count: int, *, start: int = 0) -> Path:
    import json

    topics = ["Collector", "EmbeddedRedis", "requeue_orphans", "WorkerSpec", "RunKeys", "check_prompts",
              "SimTeacher", "GenerationLoop", "to_chat_messages", "PromptTask"]
    with path.open("w") as handle:
        for index in range(start, start + count):
            topic = topics[index % len(topics)]
            handle.write(json.dumps({"id": f"q{index:05d}", "prompt": f"Where is {topic} defined and what does it do? (#{index})"}) + "\n")
    return path


def wait_for_lines(path: Path, count: int, timeout_s: float = 90.0) -> None:
    """Until `path` holds `count` lines (a run's output growing), or fail after a generous bound."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {count} lines")
