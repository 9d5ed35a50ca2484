"""`distill prompts synth` and the scripted teacher that answers its questions, on a real small tree."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from distill.cli import app
from distill.coordinator.synth import (
    KINDS,
    SynthError,
    candidate_tasks,
    distinctive,
    heldout_path,
    params_reference,
    read_facts,
    synthesize,
)
from distill.shared.verdicts import Expected, check_answer
from distill.teachers.sim_solver import next_message, parse_question
from distill.worker.toolcore import ToolCore


def answer_is_right(expected: object, answer: str | None, prompt: str | None = None) -> bool:
    """The prompts format's reference rule, on `expected` as a prompt line spells it."""
    from pydantic import TypeAdapter

    return check_answer(TypeAdapter(Expected).validate_python(expected), answer, prompt=prompt).passed is True

TREE = {
    "shop/__init__.py": "from shop.models import Basket\n",
    "shop/models.py": (
        "import dataclasses\n\n\n"
        "@dataclasses.dataclass\n"
        "class Basket:\n"
        "    items: list\n\n"
        "    def add_item(self, item, quantity=1):\n"
        "        self.items.append((item, quantity))\n\n"
        "    def __len__(self):\n"
        "        return len(self.items)\n\n\n"
        "def load_catalog(path, *, strict=False):\n"
        "    return open(path).read()\n\n\n"
        "async def fetch_prices(\n"
        "    session,\n"
        "    skus: list[str],\n"
        "    timeout: float = 5.0,\n"
        ") -> dict:\n"
        "    return {}\n"
    ),
    "shop/pricing.py": (
        "from shop import models\n"
        "from .models import load_catalog\n\n\n"
        "class PriceRule:\n"
        "    def applies_to(self, basket):\n"
        "        return True\n\n\n"
        "def discount(basket, rate):\n"
        "    def run(x):\n"
        "        return x\n"
        "    return run(rate)\n\n\n"
        "def helper_twice():\n"
        "    return 1\n"
    ),
    "shop/checkout.py": (
        "import shop.pricing\n"
        "from shop.models import Basket, fetch_prices\n\n\n"
        "def helper_twice():\n"
        "    return 2\n\n\n"
        "def total(basket: Basket, *extras, **options) -> float:\n"
        "    return 0.0\n"
    ),
    "tools/report.py": (
        "import logging\n"
        "from shop.pricing import discount\n\n\n"
        "def render_report(rows, title):\n"
        "    return title\n\n\n"
        "def apply_coupon(coupon_code, basket_total, *, maxDiscount=None):\n"
        "    return basket_total\n"
    ),
    # A workspace file named like a standard module: `import logging` does not import it.
    "logging.py": "def log_line_now():\n    pass\n",
    # grep reaches dot-folders and unparsable files: these make two names defined twice.
    ".tools/extra.py": "def render_report(rows):\n    pass\n",
    "broken.py": "def oops(:\n\ndef discount(x):\n    pass\n",
    ".venv/lib/site.py": "def hidden_function():\n    pass\n",
    "node_modules/x.py": "def also_hidden():\n    pass\n",
    "README.md": "not python\n",
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shop")
    for path, text in TREE.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_facts_come_from_the_code(tree):
    facts = read_facts(tree)

    assert facts.files == ["broken.py", "logging.py", ".tools/extra.py", "shop/__init__.py", "shop/checkout.py",
                           "shop/models.py", "shop/pricing.py", "tools/report.py"]
    assert facts.unparsable == ["broken.py"]
    names = facts.by_name()
    assert [d.path for d in names["helper_twice"]] == ["shop/checkout.py", "shop/pricing.py"]
    assert [(d.path, d.line) for d in names["discount"]] == [("broken.py", 3), ("shop/pricing.py", 10)]
    assert [d.path for d in names["render_report"]] == [".tools/extra.py", "tools/report.py"]
    assert facts.modules["logging"] == "logging.py" and "logging" not in facts.importers
    assert names["fetch_prices"][0].params == ("session", "skus", "timeout")
    assert names["add_item"][0].owner == "Basket" and names["add_item"][0].params == ("item", "quantity")
    assert not names["run"][0].top_level
    # Absolute, `from package import module` and relative imports all count; the package itself too.
    assert facts.importers["shop.models"] == {"shop/__init__.py", "shop/checkout.py", "shop/pricing.py"}
    assert facts.importers["shop.pricing"] == {"shop/checkout.py", "tools/report.py"}


def test_questions_have_one_right_answer(tree):
    tasks = candidate_tasks(read_facts(tree), KINDS, random.Random(0))
    by_subject = {(t.kind, t.subject): t for kind in tasks.values() for t in kind}

    assert by_subject[("defined", "load_catalog")].expected == "shop/models.py"
    assert by_subject[("defined", "PriceRule")].expected == "shop/pricing.py"
    assert by_subject[("method", "Basket.add_item")].expected == "shop/models.py"
    assert by_subject[("importers", "shop.pricing")].expected == {"files": ["shop/checkout.py", "tools/report.py"]}
    assert by_subject[("params", "apply_coupon")].expected == {"names": ["coupon_code", "basket_total", "maxDiscount"],
                                                               "ordered": True}
    # Common words ("options", "path", "rows") and short names are no parameters to grade an answer on.
    assert {s for k, s in by_subject if k == "params"} == {"apply_coupon"}
    subjects = {subject for _, subject in by_subject}
    # Defined twice (in a dot-folder, in a file ast cannot parse), too short, a dunder, outside the
    # walk, nested: no question has one answer.
    assert not subjects & {"helper_twice", "run", "Basket.__len__", "hidden_function", "also_hidden", "render_report",
                           "discount", "logging"}
    # A package's __init__ is not a module anyone asks "who imports" about.
    assert ("importers", "shop") not in by_subject


def test_params_reference_needs_every_name_as_a_word_in_order():
    reference = params_reference(["path_in", "strict_mode"])
    assert answer_is_right(reference, "`load` (a/path_in.py, line 2) takes `path_in` and `strict_mode`.",
                           "What are the parameters of `load`?")
    assert not answer_is_right(reference, "It takes `strict_mode` and `path_in`.")
    assert not answer_is_right(reference, "It takes `path_ins` and `strict_mode`.")
    assert not answer_is_right(reference, "It takes `path_in`, `strict_mode` and `verbose`.")
    assert distinctive("coupon_code") and distinctive("maxDiscount") and distinctive("tokenizer_path")
    assert not distinctive("ok") and not distinctive("arguments") and not distinctive("x") and not distinctive("rows")


def test_synthesize_is_reproducible_and_splits_by_name(tree, tmp_path):
    first = synthesize(tree, tmp_path / "a" / "q.jsonl", n=12, seed=7, heldout=0.25)
    again = synthesize(tree, tmp_path / "b" / "q.jsonl", n=12, seed=7, heldout=0.25)

    assert first.train_file.read_text() == again.train_file.read_text()
    assert first.heldout_file == heldout_path(first.train_file) == tmp_path / "a" / "q.heldout.jsonl"
    assert first.heldout_file.read_text() == again.heldout_file.read_text()
    lines = [json.loads(line) for f in (first.train_file, first.heldout_file) for line in f.read_text().splitlines()]
    assert all(set(line) == {"id", "prompt", "expected", "metadata"} for line in lines)
    assert len({line["id"] for line in lines}) == len(lines)
    # Kinds with a question for each side are in; params (one question) and base, docstring (none here)
    # are reported instead.
    assert {line["metadata"]["kind"] for line in lines} == {k for k, v in first.candidates.items() if v >= 2}
    assert set(first.shortfall) >= {"params", "base", "docstring"}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 40), heldout=st.floats(0.05, 0.6))
def test_no_name_is_both_trained_and_held_out(tree, seed, n, heldout):
    from distill.coordinator.synth import choose

    candidates = candidate_tasks(read_facts(tree), KINDS, random.Random(seed))
    train, held, _ = choose(candidates, n, heldout, random.Random(seed))

    assert held and len(train) + len(held) <= n
    assert not frozenset().union(*(t.names for t in train)) & frozenset().union(*(t.names for t in held))
    assert len({t.id for t in train + held}) == len(train) + len(held)


def solve(prompt: str, workspace: ToolCore, offered: set[str], *, blind: bool = False) -> tuple[str, int]:
    """Drive the scripted teacher with the real tools; `blind` hides every result from it."""
    messages: list[dict] = [{"role": "user", "content": prompt}]
    for calls in range(6):
        message = next_message(messages, offered)
        assert message is not None, prompt
        messages.append(message)
        if not message.get("tool_calls"):
            return message["content"], calls
        call = message["tool_calls"][0]["function"]
        result = workspace.answer(call["name"], json.loads(call["arguments"])).text
        messages.append({"role": "tool", "tool_call_id": "c", "content": "no matches" if blind else result})
    raise AssertionError(f"{prompt}: no answer after 6 calls")


def test_the_scripted_teacher_answers_every_question_from_real_results(tree):
    workspace = ToolCore(tree)
    tasks = [t for kind in candidate_tasks(read_facts(tree), KINDS, random.Random(1)).values() for t in kind]
    assert len(tasks) >= 12

    for task in tasks:
        answer, calls = solve(task.prompt, workspace, {"grep", "read_file"})
        assert calls >= 1
        assert answer_is_right(task.expected, answer, task.prompt), (task.prompt, answer)
        # Without the results it cannot know: the same script, blind, is wrong.
        blind, _ = solve(task.prompt, workspace, {"grep", "read_file"}, blind=True)
        assert not answer_is_right(task.expected, blind, task.prompt), (task.prompt, blind)


def test_a_signature_over_several_lines_is_read_with_read_file(tree):
    answer, calls = solve("What are the parameters of the function `fetch_prices`?", ToolCore(tree), {"grep", "read_file"})
    assert calls == 2 and "`session`, `skus`, `timeout`" in answer


def test_questions_it_does_not_know_are_left_to_the_generic_script():
    assert parse_question("What does this repository do?") is None
    assert parse_question("Where is the class `LoraParameters` defined?").kind == "defined"
    assert parse_question("Where is the method `Basket.add_item` implemented?").owner == "Basket"
    assert next_message([{"role": "user", "content": "Where is `x_y_z` defined?"}], {"read_file"}) is None


def test_bad_options_are_one_clear_error(tree, tmp_path):
    with pytest.raises(SynthError, match="workspace folder not found"):
        synthesize(tmp_path / "missing", tmp_path / "q.jsonl")
    with pytest.raises(SynthError, match="unknown kind 'where'"):
        synthesize(tree, tmp_path / "q.jsonl", kinds=["where"])  # type: ignore[list-item]
    with pytest.raises(SynthError, match="--heldout"):
        synthesize(tree, tmp_path / "q.jsonl", heldout=1.5)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthError, match="no Python files"):
        synthesize(tmp_path / "empty", tmp_path / "q.jsonl")


def test_the_command_writes_both_files(tree, tmp_path):
    out = tmp_path / "questions.jsonl"
    result = CliRunner().invoke(app, ["prompts", "synth", str(tree), "--out", str(out), "--n", "10",
                                      "--kinds", "defined,params", "--heldout", "0.2"])

    assert result.exit_code == 0, result.output
    assert "defined" in result.output and "params" in result.output
    train = out.read_text().splitlines()
    held = (tmp_path / "questions.heldout.jsonl").read_text().splitlines()
    # 8 unambiguous questions of these kinds (7 defined, 1 params): params cannot be on both sides, so
    # it is left out, and said so.
    assert (len(train), len(held)) == (6, 1)
    assert "left out: 1" in result.output
    bad = CliRunner().invoke(app, ["prompts", "synth", str(tree), "--out", str(out), "--kinds", "nope"])
    assert bad.exit_code == 2 and "--kinds" in bad.output
