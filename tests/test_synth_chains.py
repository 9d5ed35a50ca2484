"""Chain questions (`base`, `siblings`, `docstring`): each needs a second call built from the first
one's result. Their answers, the stratified split, and the scripted teacher that solves them only
from real tool results."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from distill.coordinator.synth import (
    CHAIN_KINDS,
    KINDS,
    MIN_CALLS,
    candidate_tasks,
    choose,
    docstring_first_line,
    read_facts,
    synthesize,
)
from distill.shared.verdicts import Expected, check_answer
from distill.teachers.sim_solver import next_message, parse_question
from distill.worker.toolcore import ToolCore

PLACEHOLDER = "[Tool execution completed]"

TREE = {
    "zoo/__init__.py": "",
    "zoo/errors.py": (
        "class ZooProblem(Exception):\n"
        "    pass\n\n\n"
        "class CageBroken(ZooProblem):\n"
        "    pass\n"
    ),
    "zoo/animals.py": (
        "from zoo.errors import ZooProblem\n\n\n"
        "class AnimalError(ZooProblem):\n"
        '    """Raised by animals."""\n\n\n'
        "class Penguin(SeaBird):\n"  # SeaBird is defined nowhere: no question
        "    pass\n\n\n"
        "class Walrus(zoo.errors.ZooProblem):\n"  # dotted base: not read off the line as a name
        "    pass\n\n\n"
        "class LocalBase:\n"
        "    pass\n\n\n"
        "class SameFileChild(LocalBase):\n"  # base in the same file: answerable in one call
        "    pass\n\n\n"
        "def feed_animals(zoo_keeper, food_kind):\n"
        '    """Feed every animal in the zoo.\n\n'
        "    Twice a day.\n"
        '    """\n'
        "    return zoo_keeper\n\n\n"
        "@staticmethod\n"
        "def count_legs(animal_list):\n"
        "    '''Count the legs of every animal listed.'''\n"
        "    return 4\n\n\n"
        "def wash_enclosure(enclosure_id):\n"
        "    return enclosure_id\n"
    ),
    "zoo/keepers.py": (
        "def hire_keeper(\n"
        "    keeper_name,\n"
        "):\n"
        '    """Hire a keeper for the night shift."""\n'
        "    return keeper_name\n\n\n"
        "def fire_keeper(keeper_name):\n"
        "    return None\n\n\n"
        "if True:\n"
        "    def shift_plan():\n"  # a top-level def `^def` does not show: no sibling question here
        "        return 1\n"
    ),
    "zoo/tickets.py": (
        "def sell_ticket(ticket_price):\n"
        '    """Short."""\n'  # too short to quote unambiguously
        "    return ticket_price\n\n\n"
        "def refund_ticket(ticket_price):\n"
        "    return -ticket_price\n\n\n"
        "def print_receipt(receipt_text):\n"
        "    return receipt_text\n"
    ),
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("zoo")
    for path, text in TREE.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def right(expected: object, answer: str | None, prompt: str) -> bool:
    return check_answer(TypeAdapter(Expected).validate_python(expected), answer, prompt=prompt).passed is True


def solve(prompt: str, tools: ToolCore, *, hide: str | None = None) -> tuple[str, int]:
    """Drive the scripted teacher with the real tools; `hide` replaces every result with this text."""
    messages: list[dict] = [{"role": "user", "content": prompt}]
    for calls in range(6):
        message = next_message(messages, {"grep", "read_file"})
        assert message is not None, prompt
        messages.append(message)
        if not message.get("tool_calls"):
            return message["content"], calls
        call = message["tool_calls"][0]["function"]
        result = tools.answer(call["name"], json.loads(call["arguments"])).text
        messages.append({"role": "tool", "tool_call_id": "c", "content": hide if hide is not None else result})
    raise AssertionError(f"{prompt}: no answer after 6 calls")


def chain_tasks(root: Path) -> dict[str, dict[str, object]]:
    tasks = candidate_tasks(read_facts(root), CHAIN_KINDS, random.Random(0))
    return {f"{t.kind}:{t.subject}": t.expected for kind in tasks.values() for t in kind}


def test_chain_answers_come_from_the_code_and_stay_unambiguous(tree):
    # CageBroken, SameFileChild: base in the same file; Penguin: base defined nowhere; Walrus: dotted base;
    # keepers.py: a top-level def under `if`; sell_ticket: a docstring too short to quote.
    assert chain_tasks(tree) == {
        "base:AnimalError": "zoo/errors.py",
        "siblings:feed_animals": {"names": ["count_legs", "wash_enclosure"], "ordered": False},
        "siblings:count_legs": {"names": ["feed_animals", "wash_enclosure"], "ordered": False},
        "siblings:wash_enclosure": {"names": ["count_legs", "feed_animals"], "ordered": False},
        "siblings:sell_ticket": {"names": ["print_receipt", "refund_ticket"], "ordered": False},
        "siblings:refund_ticket": {"names": ["print_receipt", "sell_ticket"], "ordered": False},
        "siblings:print_receipt": {"names": ["refund_ticket", "sell_ticket"], "ordered": False},
        "docstring:feed_animals": {"quote": "Feed every animal in the zoo."},
        "docstring:count_legs": {"quote": "Count the legs of every animal listed."},
        "docstring:hire_keeper": {"quote": "Hire a keeper for the night shift."},
    }


def test_the_scripted_teacher_solves_every_chain_only_from_real_results(tree):
    tools = ToolCore(tree)
    tasks = [t for kind in candidate_tasks(read_facts(tree), CHAIN_KINDS, random.Random(3)).values() for t in kind]
    assert {t.kind for t in tasks} == set(CHAIN_KINDS)
    for task in tasks:
        answer, calls = solve(task.prompt, tools)
        assert calls == MIN_CALLS[task.kind] == 2, (task.prompt, calls)
        assert right(task.expected, answer, task.prompt), (task.prompt, answer)
        # The same script with the results hidden (a placeholder, or nothing found) cannot know.
        for hidden in (PLACEHOLDER, "no matches"):
            blind, _ = solve(task.prompt, tools, hide=hidden)
            assert not right(task.expected, blind, task.prompt), (task.prompt, hidden, blind)


def test_a_garbled_second_result_gives_a_wrong_answer(tree):
    """Only the second call's result is wrong (another function's lines): the answer follows it."""
    tools = ToolCore(tree)
    prompt = "What is the first line of the docstring of `feed_animals`?"
    messages: list[dict] = [{"role": "user", "content": prompt}]
    first = next_message(messages, {"grep", "read_file"})
    call = first["tool_calls"][0]["function"]
    messages += [first, {"role": "tool", "tool_call_id": "a", "content": tools.answer(call["name"], json.loads(call["arguments"])).text}]
    second = next_message(messages, {"grep", "read_file"})
    assert json.loads(second["tool_calls"][0]["function"]["arguments"])["path"] == "zoo/animals.py"
    other = tools.answer("read_file", {"path": "zoo/keepers.py", "start_line": 1, "end_line": 20}).text
    messages += [second, {"role": "tool", "tool_call_id": "b", "content": other}]
    answer = next_message(messages, {"grep", "read_file"})["content"]
    assert "Hire a keeper" in answer
    assert not right({"quote": "Feed every animal in the zoo."}, answer, prompt)


def test_chain_wordings_are_told_apart_from_the_one_call_kinds():
    assert parse_question("Where is the base class of `CageBroken` defined?").kind == "base"
    assert parse_question("Which file defines the base class of the class `X`?").kind == "base"
    assert parse_question("Which other top-level functions does the file that defines `f_x` contain?").kind == "siblings"
    assert parse_question("Quote the first line of the docstring of the function `f_x`.").kind == "docstring"
    assert parse_question("Where is the class `BaseClassifier` defined?").kind == "defined"


def test_a_docstring_is_read_as_synth_reads_it():
    assert docstring_first_line(["    def f(a):", '        """One line.', "", "        More.", '        """']) == "One line."
    assert docstring_first_line(["def f(a):", "    return a"]) is None
    # The window may end inside the docstring: its first line is all a reader needs.
    assert docstring_first_line(["def f(a):", '    """Opens and never closes']) == "Opens and never closes"
    assert docstring_first_line(["def f(", "    a: int,", ") -> int:", "    '''Long signature.'''"]) == "Long signature."
    assert docstring_first_line(["def f():", '    """', "    Text on the next line.", '    """']) == "Text on the next line."
    # A signature cut off by the window, a comment before the string, a class: no docstring to read.
    assert docstring_first_line(["def f(", "    a,"]) is None
    assert docstring_first_line(["def f():", "    # why", '    """Doc."""']) is None
    assert docstring_first_line(["class C:", '    """Doc of a class."""']) is None


def test_synth_asks_only_for_docstrings_a_read_of_the_window_shows(tmp_path):
    from distill.coordinator.synth import DOC_WINDOW

    long_signature = "def far_away(\n" + "".join(f"    arg_{i},\n" for i in range(DOC_WINDOW + 1)) + "):\n"
    (tmp_path / "m.py").write_text(
        'def plain_one():\n    """Returns the plain answer."""\n\n\n'
        + long_signature + '    """Too far below its def to be read."""\n\n\n'
        + 'def escaped_one():\n    """Has a tab\\there in the source."""\n\n\n'
        + 'def commented_one():\n    # note\n    """Not right under the signature."""\n'
    )
    docs = {d.name: d.doc_first_line for d in read_facts(tmp_path).definitions}
    # The escape reads as a tab to ast but as backslash-t to the reader; the comment hides the string.
    assert docs == {"plain_one": "Returns the plain answer.", "far_away": None, "escaped_one": None,
                    "commented_one": None}


def test_split_is_stratified_and_a_kind_it_cannot_fill_is_reported(tree, tmp_path):
    report = synthesize(tree, tmp_path / "q.jsonl", n=40, kinds=KINDS, seed=1, heldout=0.25)
    lines = [json.loads(line) for f in (report.train_file, report.heldout_file) for line in f.read_text().splitlines()]

    assert all(line["metadata"]["min_calls"] == MIN_CALLS[line["metadata"]["kind"]] for line in lines)
    # Every kind with two questions or more is on both sides; a kind with one (importers, base) would sit on
    # one side only, so it is left out; a kind with none (method) too; each is named with why.
    filled = {k for k, v in report.candidates.items() if v >= 2}
    assert set(report.heldout) == set(report.train) == filled == {"defined", "params", "siblings", "docstring"}
    assert report.shortfall["method"] == "the code gives no question of this kind"
    assert report.shortfall["importers"].startswith("left out: 1 question(s)")
    assert report.shortfall["base"].startswith("left out: 1 question(s)")
    assert "defined" not in report.shortfall


def test_choose_gives_both_sides_the_same_mix():
    from distill.coordinator.synth import SynthTask

    def tasks(kind: str, count: int) -> list[SynthTask]:
        return [SynthTask(kind, f"{kind}{i}", "?", "a.py", frozenset({f"{kind}{i}"})) for i in range(count)]  # type: ignore[arg-type]

    candidates = {"defined": tasks("defined", 60), "params": tasks("params", 50), "method": tasks("method", 6),
                  "importers": tasks("importers", 5)}
    train, held, _ = choose(candidates, 100, 0.2, random.Random(0))  # type: ignore[arg-type]
    trained, held_out = Counter(t.kind for t in train), Counter(t.kind for t in held)
    assert len(train) + len(held) == 100
    assert set(held_out) == set(trained) == set(candidates)
    for kind in candidates:  # each kind's held-out share is the ratio's, within one question's rounding
        share = held_out[kind] / (held_out[kind] + trained[kind])
        assert abs(share - 0.2) <= 1 / (held_out[kind] + trained[kind]) + 0.01, (kind, share)
