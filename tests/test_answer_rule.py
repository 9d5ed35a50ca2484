"""The strict answer rule (shared/verdicts.py): traps that look right must fail, right answers in
any spelling must pass; pass@k against its formula; best-of and verify on the edge cases."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter
from trainer_fixtures import conversation, read_jsonl, tiny_model, write_jsonl  # noqa: F401 - fixture

from distill.shared.records import CONVERSATIONS_FILE
from distill.shared.verdicts import (
    Expected,
    WorkspaceFiles,
    check_answer,
    pass_rates,
    pattern_problem,
)
from distill.trainer.convert import convert
from distill.trainer.convert_report import DropReason

EXPECTED: TypeAdapter[Any] = TypeAdapter(Expected)
FILES = ("a.py", "data.py", "pkg/util.py", "pkg/core.py", "pkg/__init__.py", "README", "notes/a.txt")


@pytest.fixture()
def workspace(tmp_path: Path) -> WorkspaceFiles:
    root = tmp_path / "ws"
    for name in FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("x = 1\n")
    return WorkspaceFiles.of(root)


def verdict(expected: Any, answer: str, files: WorkspaceFiles | None, prompt: str | None = None) -> Any:
    return check_answer(EXPECTED.validate_python(expected), answer, files=files, prompt=prompt)


# Each must fail, with and without the workspace's listing.
TRAPS = [
    # a substring of another path: "a.py" is inside "data.py"
    ("a.py", "`fn_alpha` is defined in data.py.", ["a.py"], ["data.py"]),
    ("a.py", "`fn_alpha` is defined in pkg/data.py, line 3.", ["a.py"], ["pkg/data.py"]),
    ("pkg/util.py", "See util.py.", ["pkg/util.py"], ["util.py"]),
    # a shotgun list
    ("pkg/util.py", "It could be in pkg/util.py, pkg/core.py, a.py or data.py.", [], ["pkg/core.py", "a.py", "data.py"]),
    # right plus wrong
    ("pkg/util.py", "`fn_beta` is defined in pkg/util.py and also in pkg/core.py.", [], ["pkg/core.py"]),
    ({"all": ["a.py", "pkg/util.py"]}, "a.py, pkg/util.py and data.py import it.", [], ["data.py"]),
    ({"files": ["a.py"]}, "`a.py` and `./data.py`", [], ["data.py"]),
    # any: exactly one of them, not two
    ({"any": ["a.py", "data.py"]}, "Either a.py or data.py.", [], ["data.py"]),
    # wrong alone; one of a set missing
    ("pkg/util.py", "`fn_beta` is defined in pkg/core.py:12.", ["pkg/util.py"], ["pkg/core.py"]),
    ({"all": ["a.py", "pkg/util.py"]}, "Only a.py imports it.", ["pkg/util.py"], []),
]


@pytest.mark.parametrize("listed", [True, False], ids=["workspace", "no-workspace"])
@pytest.mark.parametrize(("expected", "answer", "missing", "extra"), TRAPS)
def test_traps_fail_and_say_what_is_missing_and_extra(expected: Any, answer: str, missing: list[str], extra: list[str],
                                                      listed: bool, workspace: WorkspaceFiles) -> None:
    result = verdict(expected, answer, workspace if listed else None)
    assert result.passed is False and result.method == "reference", result
    assert (result.missing, result.extra) == (missing, extra)
    for path in missing + extra:
        assert path in result.detail


@pytest.mark.parametrize("answer", [
    "`fn_alpha` is not defined in a.py.",
    "It isn't in a.py.",
    "The definition is in a.py, not data.py.",
])
def test_a_negated_file_is_left_to_the_judge(answer: str, workspace: WorkspaceFiles) -> None:
    result = verdict("a.py", answer, workspace)
    assert result.passed is False and "negation" in result.detail and "judge" in result.detail


@pytest.mark.parametrize("answer", [
    "`fn_beta` is defined in pkg/util.py.",
    "`fn_beta` is defined in ./pkg/util.py.",
    "In `pkg/util.py`, line 12.",
    "pkg/util.py:12: def fn_beta():",
    "Defined in pkg/util.py (line 12); it is not used elsewhere.",
    "pkg/util.py",
])
def test_right_spellings_pass(answer: str, workspace: WorkspaceFiles) -> None:
    for files in (workspace, None):
        result = verdict("pkg/util.py", answer, files)
        assert result.passed is True and (result.missing, result.extra) == ([], []), result


def test_the_workspace_makes_more_tokens_files(workspace: WorkspaceFiles) -> None:
    # README has no extension: only the workspace's listing says it is a file.
    assert verdict("a.py", "a.py, and see README", workspace).extra == ["README"]
    assert verdict("a.py", "a.py, and see README", None).passed is True
    # An absolute path inside the workspace is read relative to it.
    assert verdict("a.py", f"It is {workspace.root}/a.py.", workspace).passed is True
    assert verdict({"any": ["a.py", "data.py"]}, "data.py", workspace).passed is True
    assert verdict({"all": ["a.py", "pkg/util.py"]}, "pkg/util.py and a.py", workspace).passed is True


@pytest.mark.parametrize(("expected", "answer", "passed"), [
    ("fn_alpha", "It is fn_alpha.", True),
    ("fn_alpha", "It is FN_ALPHA.", True),
    ("fn_alpha", "It is fn_alphabet.", False),
    ("run", "rerun it", False),
    ("class  Collector", "see\nclass\tCollector:", True),
    ({"any": ["ok", "fine"]}, "it is okay", False),
    ({"names": ["alpha_x", "beta_y"], "ordered": True}, "`f` takes `alpha_x`, `beta_y`.", True),
    ({"names": ["alpha_x", "beta_y"], "ordered": True}, "`f` takes `beta_y`, `alpha_x`.", False),
    ({"names": ["alpha_x", "beta_y"]}, "`f` takes `beta_y`, `alpha_x`.", True),
    ({"names": ["alpha_x", "beta_y"]}, "`f` takes `alpha_x`, `beta_y`, `gamma_z`.", False),
    ({"names": ["alpha_x", "beta_y"]}, "`f` takes `alpha_xs`, `beta_y`.", False),
    # a parameter named like a path part is not found in the path
    ({"names": ["util", "beta_y"]}, "`f` (pkg/util.py, line 2) takes `beta_y`.", False),
    ({"quote": "Return the  answer."}, 'Its docstring starts: "Return the answer."', True),
    ({"quote": "Return the answer."}, 'Its docstring starts: "return the answer."', False),
])
def test_text_names_and_quotes(expected: Any, answer: str, passed: bool) -> None:
    result = verdict(expected, answer, None, prompt="What are the parameters of `f`?")
    assert result.passed is passed, result


@pytest.mark.parametrize("pattern", ["a{10000000}", "(a{1000}){1000}", "x" * 3000, "(", "a{2,99999}"])
def test_huge_or_broken_regex_references_are_refused_before_compiling(pattern: str) -> None:
    assert pattern_problem(pattern)
    with pytest.raises(ValueError, match="regex"):
        EXPECTED.validate_python({"regex": pattern})


def test_pass_at_k_is_the_unbiased_estimator_over_uneven_sample_counts() -> None:
    outcomes = {
        "five": [True, False, False, True, False],  # n=5, c=2
        "three": [False, False, True],  # n=3, c=1
        "one": [False],  # n=1, c=0
        "open": [None, None],  # no verified sample: apart, never a failure
        "partly": [True, None, False, False],  # n=3 verified, c=1
    }
    rates = pass_rates(outcomes)

    def formula(n: int, c: int, k: int) -> float:
        k = min(k, n)
        return 1.0 if n - c < k else 1 - math.comb(n - c, k) / math.comb(n, k)

    verified = [(5, 2), (3, 1), (1, 0), (3, 1)]
    assert rates.k == 5 and rates.prompts == 4 and rates.prompts_unverified == 1 and rates.prompts_passed == 3
    assert rates.pass_at_1 == round(sum(formula(n, c, 1) for n, c in verified) / 4, 4) == round((0.4 + 1 / 3 + 0 + 1 / 3) / 4, 4)
    assert rates.pass_at_k == round(sum(formula(n, c, 5) for n, c in verified) / 4, 4) == 0.75
    assert (rates.samples, rates.passed, rates.failed, rates.unverified) == (15, 4, 8, 3)
    assert pass_rates({"open": [None]}).pass_at_1 is None


def test_best_of_with_only_a_failed_sample_keeps_nothing_and_prefers_grounded(tmp_path: Path, tiny_model: Path) -> None:
    def sample(task_id: str, number: int, answer: str, passed: bool, results: list[str]) -> dict[str, Any]:
        record = conversation(task_id, calls=[("grep", {"pattern": f"p{i}"}) for i in range(len(results))],
                              results=results, answer=answer)
        record["sample"] = number
        record["verdict"] = {"passed": passed, "method": "reference"}
        return record

    run_dir = tmp_path / "run"
    write_jsonl(run_dir / CONVERSATIONS_FILE, [
        sample("failed-only", 0, "It is in pkg/core.py.", False, ["pkg/core.py:3: def f():"]),
        # one call, but it names a file no result showed: a guess
        sample("grounded", 0, "It is in pkg/util.py.", True, ["pkg/core.py:3: def g():"]),
        sample("grounded", 1, "It is in pkg/util.py.", True, ["no matches", "pkg/util.py:9: def g():"]),
    ])
    report = convert(run_dir, tiny_model, tmp_path / "data", best_of=True, split=(1.0, 0.0, 0.0), max_seq_length=8192)
    assert report.kept == 1
    assert {(d.task_id, d.sample, d.reason) for d in report.drops} == {
        ("failed-only", 0, DropReason.FAILED_VERIFICATION), ("grounded", 0, DropReason.NOT_BEST_OF)}
    [kept] = read_jsonl(tmp_path / "data" / "train.jsonl")
    assert kept["messages"][-2]["content"] == "pkg/util.py:9: def g():"


def test_convert_rechecks_a_reference_verdict_made_by_a_looser_rule(tmp_path: Path, tiny_model: Path) -> None:
    record = conversation("old", answer="It is defined in data.py.")
    record["expected"] = "a.py"
    record["verdict"] = {"passed": True, "method": "reference", "detail": "answer contains 'a.py'"}
    write_jsonl(tmp_path / "run" / CONVERSATIONS_FILE, [record])
    report = convert(tmp_path / "run", tiny_model, tmp_path / "data", require_verified=True, max_seq_length=8192)
    assert report.kept == 0 and report.drops[0].reason == DropReason.FAILED_VERIFICATION
    assert "extra: data.py" in report.drops[0].detail
