"""Verified trajectories: reference answers, verdicts, the LLM judge, samples, best-of and accuracy.

The teacher is the simulated one, scripted to be right on some prompts and wrong on others
(`answers`), and to act as a judge when pydantic-ai asks it for structured output. Every tool
result is real (the tools run on a copy of distill's own code).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from trainer_fixtures import conversation, read_jsonl, tiny_model, write_jsonl  # noqa: F401 - fixture

from distill.coordinator.enqueue import enqueue_prompts, tasks_total
from distill.coordinator.run import generate
from distill.coordinator.verify import verify_run
from distill.shared.errors import LineError
from distill.shared.keys import RunKeys, task_key
from distill.shared.prompts import read_prompts
from distill.shared.queue import ensure_groups
from distill.shared.records import CONVERSATIONS_FILE, Conversation
from distill.shared.settings import JudgeConfig, Settings, TeacherConfig
from distill.shared.verdicts import (
    EXPECTED_SHAPES,
    VERDICTS_FILE,
    AllOf,
    AnyOf,
    Pattern,
    Verdict,
    check_answer,
    latest_verdicts,
)
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.trainer.convert import convert
from distill.trainer.convert_report import DropReason
from distill.trainer.evaluate import EvalReport, evaluate

RIGHT = "coordinator/collector.py"


# --- the matching rule -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "answer", "passed"),
    [
        ("coordinator/collector.py", "It is in ./coordinator/collector.py, line 80.", True),
        ("coordinator/collector.py", "It is in Coordinator/Collector.py, line 80.", False),
        ("class  Collector", "see\nclass\tCollector:", True),
        ("collector.py", "It is in enqueue.py.", False),
        (AnyOf(any=["enqueue.py", "collector.py"]), "collector.py", True),
        (AnyOf(any=["enqueue.py", "run.py"]), "collector.py", False),
        (AllOf(all=["collector.py", "Collector"]), "class Collector in collector.py", True),
        (AllOf(all=["collector.py", "drain"]), "class Collector in collector.py", False),
        (Pattern(regex=r"collector\.py:\d+"), "at collector.py:84", True),
        (Pattern(regex=r"collector\.py:\d+"), "at COLLECTOR.py:84", False),
        (Pattern(regex=r"(?i)collector\.py"), "at COLLECTOR.py", True),
        ("collector.py", None, False),
        ("collector.py", "   ", False),
    ],
)
def test_one_rule_decides_right_and_wrong(expected: Any, answer: str | None, passed: bool) -> None:
    verdict = check_answer(expected, answer)
    assert verdict.passed is passed and verdict.method == "reference", verdict
    assert verdict.detail


def test_bad_expected_names_file_line_and_field(tmp_path: Path) -> None:
    lines = [
        {"prompt": "ok", "expected": {"any": ["a", "b"]}},
        {"prompt": "a", "expected": {"regex": "("}},
        {"prompt": "b", "expected": {"some": ["a"]}},
        {"prompt": "c", "expected": 7},
        {"prompt": "d", "expected": {"all": []}},
        {"prompt": "e", "expected": {"any": ["x", 1]}},
        {"prompt": "f", "expected": "  "},
        {"prompt": "g", "id": "a\u001fb"},
        {"prompt": "h", "expected": {"regex": "a{10000000}"}},
        {"prompt": "i", "expected": {"regex": "(a{1000}){1000}"}},
        {"prompt": "j", "expected": {"regex": "x" * 5000}},
    ]
    items = list(read_prompts(write_jsonl(tmp_path / "p.jsonl", lines), "run"))
    assert items[0].expected == AnyOf(any=["a", "b"])  # type: ignore[union-attr]
    errors = [str(item) for item in items[1:]]
    assert all(isinstance(item, LineError) for item in items[1:])
    path = tmp_path / "p.jsonl"
    assert errors == [
        f'{path}:2: field expected: "regex" not a valid regular expression (missing ) at position 1)',
        f"{path}:3: field expected: unknown key 'some'; use {EXPECTED_SHAPES}",
        f"{path}:4: field expected: must be {EXPECTED_SHAPES}",
        f'{path}:5: field expected: "all" needs at least one string',
        f'{path}:6: field expected: "any" takes a list of strings',
        f"{path}:7: field expected: is empty, which every answer would contain",
        f"{path}:8: field id: must not contain control characters",
        f'{path}:9: field expected: "regex" has repeat counts too large (at most 10000, 100000 nested)',
        f'{path}:10: field expected: "regex" has repeat counts too large (at most 10000, 100000 nested)',
        f'{path}:11: field expected: "regex" is longer than 2000 characters',
    ]


def test_judge_table_in_distill_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distill.shared.settings import ConfigError, load_settings

    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Name the file.\n")
    config = tmp_path / "distill.toml"
    config.write_text(f'samples = 3\n[judge]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "judge"\n'
                      f'max_concurrency = 2\nrubric_file = "{rubric}"\napi_key_env = "JUDGE_KEY_FOR_TEST"\n')
    settings = load_settings(config)
    assert settings.samples == 3 and settings.judge is not None
    assert (settings.judge.name, settings.judge.max_concurrency, settings.judge.temperature) == ("judge", 2, 0.0)
    assert settings.judge.rubric() == "Name the file."
    monkeypatch.delenv("JUDGE_KEY_FOR_TEST", raising=False)
    with pytest.raises(ConfigError, match="JUDGE_KEY_FOR_TEST is not set"):
        settings.judge.api_key()
    config.write_text('[judge]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "judge"\nlaunch = true\n')
    with pytest.raises(ConfigError, match="field judge"):
        load_settings(config)


def test_records_written_before_verdicts_still_load() -> None:
    old = conversation("old-1")
    assert "verdict" not in old and "sample" not in old
    record = Conversation.model_validate(old)
    assert record.verdict == Verdict() and record.verdict.outcome == "unverified"
    assert record.sample == 0 and record.key == "old-1" and record.expected is None


# --- samples: queued once per (prompt, sample) ---------------------------------------------------


def test_samples_are_queued_once_each_and_more_samples_add_only_the_new_ones(tmp_path, redis_client, run_name):
    keys = RunKeys(run_name)
    ensure_groups(redis_client, keys)
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"question {i}"} for i in range(4)])
    assert enqueue_prompts(redis_client, keys, prompts, samples=2) == 8
    assert enqueue_prompts(redis_client, keys, prompts, samples=2) == 0
    redis_client.sadd(keys.done, task_key("q0", 2))  # a sample already on disk is never queued again
    assert enqueue_prompts(redis_client, keys, prompts, samples=3) == 3
    assert tasks_total(redis_client, keys) == 12
    entries = redis_client.xrange(keys.tasks)
    queued = Counter((json.loads(f["data"])["task_id"], json.loads(f["data"])["sample"]) for _, f in entries)
    assert set(queued.values()) == {1}
    assert set(queued) == {(f"q{i}", s) for i in range(4) for s in range(3)} - {("q0", 2)}


# --- generation: references checked by the worker, several samples, best-of ------------------------


def scripted_teacher(**extra: Any) -> SimTeacher:
    """Right on alpha (three different right answers), right on one beta sample in three, never on gamma."""
    answers = {
        "alpha": [f"Collector is in {RIGHT}.", f"See {RIGHT}", f"The class Collector lives in {RIGHT}, near the top."],
        "beta": ["It is in enqueue.py.", f"It is in {RIGHT}.", "I think run.py."],
        "gamma": ["I do not know."],
        "delta": ["Probably somewhere, I did not look.", f"It is in {RIGHT}."],
        # Traps the old substring rule passed: a shotgun list, a substring of the right path, right plus wrong.
        "epsilon": [f"It could be in {RIGHT}, coordinator/run.py or worker/actor.py.", "Collector is in collector.py.",
                    f"Collector is defined in {RIGHT} and also in coordinator/run.py."],
    }
    teacher = SimTeacher(SimTeacherConfig(latency_s=0.01, tool_rounds=1, answers=answers, **extra))
    teacher.start()
    return teacher


PROMPTS = [
    {"id": "alpha", "prompt": "Where is Collector defined? (alpha)", "expected": RIGHT},
    {"id": "beta", "prompt": "Where is Collector defined? (beta)", "expected": {"any": [RIGHT, "collector.py:"]}},
    {"id": "gamma", "prompt": "Where is Collector defined? (gamma)", "expected": {"regex": r"collector\.py"}},
    # No reference: nothing can verify it without a judge.
    {"id": "delta", "prompt": "Where is Collector defined? (delta)"},
    {"id": "epsilon", "prompt": "Where is Collector defined? (epsilon)", "expected": RIGHT},
]
# What each epsilon trap named besides the reference, in the order the teacher gives them.
EPSILON_EXTRA = [["coordinator/run.py", "worker/actor.py"], ["collector.py"], ["coordinator/run.py"]]


def settings_for(run: str, tmp_path: Path, teacher: SimTeacher, workspace: Path, redis_url: str, **extra: Any) -> Settings:
    return Settings(run=run, out_dir=tmp_path / "runs", workspace=workspace, redis_url=redis_url,
                    teachers=[TeacherConfig(name="sim", base_url=teacher.base_url, model="sim", timeout_s=10,
                                            temperature=0.8)], **extra)


def read_conversations(run_dir: Path) -> list[Conversation]:
    return [Conversation.model_validate(record) for record in read_jsonl(run_dir / CONVERSATIONS_FILE)]


def test_three_samples_then_best_of_require_verified_keeps_one_right_trajectory_per_solved_prompt(
    tmp_path, ray_session, redis_url, code_workspace, run_name, tiny_model
):
    teacher = scripted_teacher()
    prompts = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, redis_url, samples=3, concurrency=4)
    try:
        result = generate(settings, prompts)
    finally:
        teacher.stop()
    assert result.complete and result.total == 15 and result.dead == 0
    assert (result.passed, result.failed, result.unverified) == (4, 8, 3)  # the summary table's row
    records = read_conversations(settings.run_dir())
    assert sorted((r.task_id, r.sample) for r in records) == sorted((p["id"], s) for p in PROMPTS for s in range(3))
    # The worker checked every reference when the conversation ended; the teacher's temperature went out.
    outcomes = Counter((r.task_id, r.verdict.outcome) for r in records)
    assert outcomes == {("alpha", "passed"): 3, ("beta", "passed"): 1, ("beta", "failed"): 2,
                        ("gamma", "failed"): 3, ("delta", "unverified"): 3, ("epsilon", "failed"): 3}
    # Every trap failed in the worker's verdict, which names the extra files (and the missing one).
    traps = [r.verdict for r in records if r.task_id == "epsilon"]
    assert sorted(v.extra for v in traps) == sorted(EPSILON_EXTRA)
    assert sorted(v.missing for v in traps) == [[], [], [RIGHT]]
    assert all(r.verdict.method == "reference" for r in records if r.task_id != "delta")
    assert all(r.verdict.method is None for r in records if r.task_id == "delta")
    assert [r.expected for r in records if r.task_id == "alpha"] == [RIGHT] * 3

    report = convert(settings.run_dir(), tiny_model, tmp_path / "data", best_of=True, require_verified=True,
                     max_seq_length=8192, split=(1.0, 0.0, 0.0))
    kept = read_jsonl(tmp_path / "data" / "train.jsonl") + (
        read_jsonl(tmp_path / "data" / "valid.jsonl") if (tmp_path / "data" / "valid.jsonl").exists() else [])
    answers = [example["messages"][-1]["content"] for example in kept]
    # Exactly the prompts with at least one right sample, one trajectory each: for alpha the
    # shortest of three right ones (same tool calls), for beta its only right one.
    assert sorted(answers) == sorted([f"See {RIGHT}", f"It is in {RIGHT}."])
    assert report.kept == 2
    assert report.dropped[DropReason.FAILED_VERIFICATION] == 8
    assert report.dropped[DropReason.UNVERIFIED] == 3
    assert report.dropped[DropReason.NOT_BEST_OF] == 2
    failed = sorted((d.task_id, d.sample) for d in report.drops if d.reason == DropReason.FAILED_VERIFICATION)
    assert failed == sorted((r.task_id, r.sample) for r in records if r.verdict.passed is False)
    stats = report.verification
    assert (stats.records, stats.passed, stats.failed, stats.unverified) == (15, 4, 8, 3)
    # pass@k over the four prompts with a reference (alpha 3/3, beta 1/3, gamma 0/3, epsilon 0/3);
    # delta, never verified, is counted apart.
    assert (stats.prompts, stats.prompts_unverified, stats.prompts_passed, stats.k) == (4, 1, 2, 3)
    assert stats.pass_rate == stats.pass_at_1 == round((1 + 1 / 3) / 4, 4) and stats.pass_at_k == 0.5


def test_judge_during_generation_shares_the_endpoint_cap(tmp_path, ray_session, redis_url, code_workspace, run_name):
    teacher = scripted_teacher()
    # The judge is slow and capped at one request at a time over the whole run (two workers).
    judge = SimTeacher(SimTeacherConfig(latency_s=0.2, judge_fail_markers=["did not look"]))
    judge.start()
    lines = [PROMPTS[0]] + [{"id": f"delta{i}", "prompt": f"Where is Collector defined? (delta {i})"} for i in range(6)]
    prompts = write_jsonl(tmp_path / "prompts.jsonl", lines)
    settings = settings_for(run_name, tmp_path, teacher, code_workspace, redis_url, concurrency=8, workers=2,
                            judge=JudgeConfig(base_url=judge.base_url, model="judge", max_concurrency=1))
    try:
        generate(settings, prompts)
        seen = judge.snapshot()
    finally:
        teacher.stop()
        judge.stop()
    records = read_conversations(settings.run_dir())
    judged = [r for r in records if r.task_id.startswith("delta")]
    # Only prompts without a reference go to the judge; a reference is never overruled.
    assert all(r.verdict.method == "judge" for r in judged)
    by_answer = {(r.final_answer, r.verdict.passed, r.verdict.score) for r in judged}
    assert by_answer == {("Probably somewhere, I did not look.", False, 0.0), (f"It is in {RIGHT}.", True, 1.0)}
    assert Counter(r.verdict.passed for r in judged) == {False: 3, True: 3}
    (alpha,) = [r for r in records if r.task_id == "alpha"]
    assert alpha.verdict.method == "reference" and alpha.verdict.passed
    assert seen["completed"] == 6 and seen["peak_in_flight"] == 1


# --- distill verify: a judge after the fact, into verdicts.jsonl ---------------------------------


def test_verify_judges_open_records_into_verdicts_file_and_convert_reads_them(tmp_path, tiny_model):
    run_dir = tmp_path / "runs" / "done"
    right = conversation("right", answer="Collector is defined in coordinator/collector.py.")
    wrong = conversation("wrong", answer="It is defined in the README, I believe.")
    referenced = conversation("referenced", answer="nowhere")
    referenced["expected"] = "collector.py"
    referenced["verdict"] = {"passed": False, "method": "reference", "detail": "answer lacks 'collector.py'"}
    before = write_jsonl(run_dir / CONVERSATIONS_FILE, [right, wrong, referenced]).read_bytes()
    judge = SimTeacher(SimTeacherConfig(judge_fail_markers=["README"]))
    judge.start()
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("The answer must name the file that defines the thing asked about.\n")
    command = [sys.executable, "-m", "distill", "verify", str(run_dir), "--judge", judge.base_url,
               "--judge-model", "judge", "--rubric", str(rubric)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}
    try:
        first = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
        again = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120, env=env)
        requests = judge.snapshot()["requests"]
    finally:
        judge.stop()
    assert first.returncode == 0, first.stderr[-2000:]
    assert "judged: passed" in first.stdout and "Traceback" not in first.stderr
    assert (run_dir / CONVERSATIONS_FILE).read_bytes() == before  # never rewritten
    lines = read_jsonl(run_dir / VERDICTS_FILE)
    assert sorted((line["task_id"], line["verdict"]["passed"], line["verdict"]["method"]) for line in lines) == [
        ("right", True, "judge"), ("wrong", False, "judge")]
    assert all(line["schema_version"] == 1 and line["judge_model"] == "judge" for line in lines)
    # The second verify finds nothing left to judge: the judge was asked twice in all.
    assert again.returncode == 0 and requests == 2 and len(read_jsonl(run_dir / VERDICTS_FILE)) == 2

    report = convert(run_dir, tiny_model, tmp_path / "data", require_verified=True, split=(1.0, 0.0, 0.0),
                     max_seq_length=8192)
    assert [d.task_id for d in report.drops] == ["wrong", "referenced"]
    assert {d.reason for d in report.drops} == {DropReason.FAILED_VERIFICATION}
    assert report.kept == 1 and report.verification.passed == 1


def test_a_later_verdict_wins_and_a_truncated_last_line_is_ignored(tmp_path):
    path = tmp_path / VERDICTS_FILE
    line = {"task_id": "t", "sample": 1, "run": "r", "created_at": "2026-01-01T00:00:00Z"}
    path.write_text(json.dumps({**line, "verdict": {"passed": False, "method": "judge"}}) + "\n"
                    + json.dumps({**line, "verdict": {"passed": True, "method": "judge", "score": 0.9}}) + "\n"
                    + '{"task_id": "t", "sam')
    assert latest_verdicts(path) == {("t", 1): Verdict(passed=True, method="judge", score=0.9)}


def verify_with_sim_judge(run_dir: Path, *rejudge: bool) -> list[Any]:
    """One `verify_run` per flag in `rejudge`, in turn, against one simulated judge."""
    judge = SimTeacher(SimTeacherConfig())
    judge.start()
    config = JudgeConfig(base_url=judge.base_url, model="judge", max_concurrency=2)
    try:
        return [verify_run(run_dir, config, rejudge=flag) for flag in rejudge]
    finally:
        judge.stop()


def test_verify_resumes_past_what_it_judged(tmp_path):
    run_dir = tmp_path / "run"
    write_jsonl(run_dir / CONVERSATIONS_FILE, [conversation(f"t{i}") for i in range(3)])
    first, second, third = verify_with_sim_judge(run_dir, False, False, True)
    assert (first.judged, first.passed) == (3, 3)
    assert (second.judged, second.skipped_judged) == (0, 3)
    assert third.judged == 3 and len(read_jsonl(run_dir / VERDICTS_FILE)) == 6


# --- eval: accuracy beside loops and tool calls ------------------------------------------------------


def test_verify_twice_on_records_without_a_final_answer_records_one_verdict(tmp_path):
    run_dir = tmp_path / "run"
    looped = conversation("looped")
    looped["status"] = "tool_limit"
    looped["messages"] = looped["messages"][:-1]  # ends on a tool result: no final answer
    write_jsonl(run_dir / CONVERSATIONS_FILE, [looped, conversation("answered")])
    first, second = verify_with_sim_judge(run_dir, False, False)
    assert (first.judged, first.failed, first.passed) == (2, 1, 1)
    assert (second.judged, second.skipped_judged) == (0, 2)
    lines = read_jsonl(run_dir / VERDICTS_FILE)
    assert len(lines) == 2 and {line["task_id"] for line in lines} == {"looped", "answered"}


def test_eval_counts_loops_of_a_looping_student_and_scores_answers(tmp_path, code_workspace):
    prompts = write_jsonl(tmp_path / "heldout.jsonl", PROMPTS)
    # A "student" that never stops calling tools, and a teacher right on alpha and beta's second try.
    looping = SimTeacher(SimTeacherConfig(tool_rounds=100))
    looping.start()
    teacher = scripted_teacher()
    try:
        loops = evaluate(None, prompts, code_workspace, out=tmp_path / "loops", max_tool_calls=3,
                         teacher=TeacherConfig(base_url=looping.base_url, model="looper"))
        scored = evaluate(None, prompts, code_workspace, out=tmp_path / "scored", max_tool_calls=3,
                          teacher=TeacherConfig(base_url=teacher.base_url, model="sim"))
    finally:
        looping.stop()
        teacher.stop()
    (looper,) = loops.variants
    assert looper.name == "teacher"
    assert looper.totals.tool_limit_hits == 5 and looper.totals.final_answers == 0
    assert looper.totals.with_reference == 4 and looper.totals.correct == 0 and looper.totals.no_answer == 4
    assert all(p.correct is False for p in looper.prompts if p.id != "delta")
    (right,) = scored.variants
    assert [p.correct for p in right.prompts] == [True, False, False, None, False]  # beta's first answer is wrong
    assert (right.totals.correct, right.totals.with_reference, right.totals.accuracy) == (1, 4, 0.25)
    assert right.totals.tool_limit_hits == 0 and right.totals.final_answers == 5
    # epsilon's shotgun list is wrong, and counted as an answer that named extra files.
    assert (right.totals.wrong, right.totals.no_answer, right.totals.named_extra_files) == (3, 0, 1)
    assert right.prompts[-1].extra_files == EPSILON_EXTRA[0]
    saved = EvalReport.model_validate_json((tmp_path / "scored" / "eval.json").read_text())
    assert saved == scored
    assert (tmp_path / "scored" / "tool_calls.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_of_prefers_passing_then_fewest_calls_then_shortest(tmp_path, tiny_model):
    def sample(task_id: str, number: int, calls: int, answer: str, passed: bool | None) -> dict[str, Any]:
        record = conversation(task_id, calls=[("read_file", {"path": f"f{i}.py"}) for i in range(calls)], answer=answer)
        record["sample"] = number
        record["verdict"] = {"passed": passed, "method": None if passed is None else "reference"}
        return record

    records = [
        sample("p", 0, 1, "wrong but short", False),
        sample("p", 1, 2, "right, two calls", True),
        sample("p", 2, 1, "right with one call and a longer answer", True),
        sample("p", 3, 1, "right, one call", True),
        sample("q", 0, 2, "two calls", None),
        sample("q", 1, 1, "one call", None),
        sample("r", 0, 1, "only wrong ones", False),
    ]
    run_dir = tmp_path / "run"
    write_jsonl(run_dir / CONVERSATIONS_FILE, records)
    report = convert(run_dir, tiny_model, tmp_path / "data", best_of=True, split=(1.0, 0.0, 0.0), max_seq_length=8192)
    kept = {example["messages"][-1]["content"] for example in read_jsonl(tmp_path / "data" / "train.jsonl")
            + read_jsonl(tmp_path / "data" / "valid.jsonl")}
    # Even without --require-verified, a failed sample is never kept: "r" keeps nothing.
    assert kept == {"right, one call", "one call"}
    assert report.dropped[DropReason.NOT_BEST_OF] == 3 and report.dropped[DropReason.FAILED_VERIFICATION] == 2
    stats = report.verification
    assert (stats.passed, stats.failed, stats.unverified) == (3, 2, 2)
    # pass@k over the prompts with a verified sample (p: 3 of 4, r: 0 of 1); q is counted apart.
    assert (stats.prompts, stats.prompts_unverified, stats.prompts_passed, stats.k) == (2, 1, 1, 4)
    assert (stats.pass_at_1, stats.pass_at_k) == ((3 / 4 + 0) / 2, (1 + 0) / 2)


def test_verify_with_the_judge_down_leaves_the_verdict_open_and_says_why(tmp_path):
    from distill.shared.connection import free_port

    run_dir = tmp_path / "run"
    write_jsonl(run_dir / CONVERSATIONS_FILE, [conversation("t0")])
    config = JudgeConfig(base_url=f"http://127.0.0.1:{free_port()}/v1", model="judge", timeout_s=5)
    result = verify_run(run_dir, config)
    assert (result.judged, result.unverified, result.passed, result.failed) == (1, 1, 0, 0)
    (line,) = read_jsonl(run_dir / VERDICTS_FILE)
    assert line["verdict"]["passed"] is None and line["verdict"]["method"] is None
    assert line["verdict"]["detail"].startswith("judge unavailable after 3 tries")
    # An open verdict is judged again by the next verify.
    assert verify_run(run_dir, config).judged == 1
