"""`distill convert`: filters with their reasons, input errors, splits and output formats."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from trainer_fixtures import conversation, read_jsonl, tiny_model, write_jsonl  # noqa: F401 - fixture

from distill.shared.records import MANIFEST_FILE, RunManifest
from distill.shared.settings import GenerationLimits
from distill.trainer.convert import convert
from distill.trainer.convert_report import ConvertReport, DropReason
from distill.trainer.errors import TrainerError
from distill.trainer.render import load_tokenizer, render_text
from distill.trainer.schema_check import argument_errors, basic_errors
from distill.trainer.splits import split_of


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=120)


def run(tmp_path: Path, model: Path, records: list[Any], **options: Any) -> ConvertReport:
    source = write_jsonl(tmp_path / "run" / "conversations.jsonl", records)
    return convert(source, model, tmp_path / "out", **options)


def kept_records(out: Path) -> list[dict[str, Any]]:
    return [row for name in ("train", "valid", "test") if (out / f"{name}.jsonl").exists() for row in read_jsonl(out / f"{name}.jsonl")]


def test_good_conversation_is_kept_in_mlx_chat_format(tmp_path: Path, tiny_model: Path) -> None:
    report = run(tmp_path, tiny_model, [conversation()])
    assert report.kept == 1 and report.records == 1
    assert sum(report.dropped.values()) == 0
    [row] = kept_records(tmp_path / "out")
    assert set(row) == {"messages", "tools"}
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert row["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"path": "config.py"}
    assert row["messages"][2]["content"] == ""  # None would break templates that concatenate
    assert row["tools"] == conversation()["tools"]
    saved = ConvertReport.model_validate_json((tmp_path / "out" / "report.json").read_text())
    assert saved.kept == 1 and saved.splits["train"] == 1


def with_status(status: str) -> Callable[[dict[str, Any]], None]:
    def mutate(record: dict[str, Any]) -> None:
        record["status"] = status
        record["error"] = "loop guard"

    return mutate


def set_result(value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(record: dict[str, Any]) -> None:
        record["messages"][3]["content"] = value

    return mutate


def set_outcome(outcome: str, content: str | None = None) -> Callable[[dict[str, Any]], None]:
    def mutate(record: dict[str, Any]) -> None:
        record["messages"][3]["outcome"] = outcome
        if content is not None:
            record["messages"][3]["content"] = content

    return mutate


def drop_result(record: dict[str, Any]) -> None:
    del record["messages"][3]


def set_arguments(value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(record: dict[str, Any]) -> None:
        record["messages"][2]["tool_calls"][0]["function"]["arguments"] = value

    return mutate


def unknown_tool(record: dict[str, Any]) -> None:
    record["messages"][2]["tool_calls"][0]["function"]["name"] = "rm_rf"


def no_final_answer(record: dict[str, Any]) -> None:
    record["messages"].pop()


def empty_final_answer(record: dict[str, Any]) -> None:
    record["messages"][-1]["content"] = "   "


DROP_CASES = [
    ("tool_limit status", with_status("tool_limit"), DropReason.NOT_FINAL_ANSWER),
    ("error status", with_status("error"), DropReason.NOT_FINAL_ANSWER),
    ("result missing", drop_result, DropReason.BAD_TOOL_RESULT),
    ("result None", set_result(None), DropReason.BAD_TOOL_RESULT),
    ("result empty", set_result(""), DropReason.BAD_TOOL_RESULT),
    ("placeholder", set_result("[Tool execution completed]"), DropReason.BAD_TOOL_RESULT),
    ("infra error outcome", set_outcome("infra_error", "time limit of 5s hit"), DropReason.TOOL_INFRA_ERROR),
    # Written before outcomes existed: pydantic-ai's own tool time limit, as the issue's run left it.
    ("old file's tool timeout", set_result('{"error":"Timed out after 5.0 seconds."}'), DropReason.TOOL_INFRA_ERROR),
    ("wrong type", set_arguments({"path": 3}), DropReason.INVALID_ARGUMENTS),
    ("required key missing", set_arguments({"max_lines": 3}), DropReason.INVALID_ARGUMENTS),
    ("unknown key", set_arguments({"path": "a", "mode": "r"}), DropReason.INVALID_ARGUMENTS),
    ("unknown tool", unknown_tool, DropReason.INVALID_ARGUMENTS),
    ("string args not JSON", set_arguments('{"path": "a"'), DropReason.ARGUMENTS_NOT_JSON),
    ("string args a list", set_arguments('["a"]'), DropReason.ARGUMENTS_NOT_JSON),
    ("no final answer", no_final_answer, DropReason.NO_FINAL_ANSWER),
    ("blank final answer", empty_final_answer, DropReason.NO_FINAL_ANSWER),
]


@pytest.mark.parametrize(("case", "mutate", "reason"), DROP_CASES, ids=[c[0] for c in DROP_CASES])
def test_each_bad_trajectory_is_dropped_with_its_reason(
    tmp_path: Path, tiny_model: Path, case: str, mutate: Callable[[dict[str, Any]], None], reason: DropReason
) -> None:
    bad = conversation("bad")
    mutate(bad)
    report = run(tmp_path, tiny_model, [conversation("good-1"), bad, conversation("good-2", prompt="other")])
    assert report.kept == 2
    assert {r: n for r, n in report.dropped.items() if n} == {reason: 1}
    [drop] = report.drops
    assert drop.line == 2 and drop.task_id == "bad" and drop.reason == reason and drop.detail


def test_tool_outcomes_are_kept_and_older_records_without_them_still_load(tmp_path: Path, tiny_model: Path) -> None:
    real_error = conversation("tool-error")
    set_outcome("tool_error", "error: no such file or directory: config.py")(real_error)
    ok = conversation("ok", prompt="other")
    set_outcome("ok")(ok)
    report = run(tmp_path, tiny_model, [conversation("old", prompt="third"), real_error, ok])
    assert report.kept == 3  # a tool's own error is a real answer, worth learning from
    rows = kept_records(tmp_path / "out")
    assert all("outcome" not in message for row in rows for message in row["messages"])


def test_repeated_calls_and_tool_call_budget(tmp_path: Path, tiny_model: Path) -> None:
    same = ("read_file", {"path": "a.py", "max_lines": 5})
    repeated = conversation("rep", calls=[same, ("grep", {"pattern": "x"}), ("read_file", {"max_lines": 5, "path": "a.py"})])
    many = conversation("many", calls=[("read_file", {"path": f"f{i}.py"}) for i in range(4)])
    report = run(tmp_path, tiny_model, [repeated, many], max_tool_calls=3)
    assert report.dropped[DropReason.REPEATED_CALL] == 1  # key order does not make a call new
    assert report.dropped[DropReason.TOO_MANY_TOOL_CALLS] == 1
    assert report.kept == 0
    # With a larger budget the four distinct calls are fine.
    assert run(tmp_path, tiny_model, [many], max_tool_calls=4).kept == 1


def test_tool_call_budget_defaults_to_the_runs_own_limit(tmp_path: Path, tiny_model: Path) -> None:
    """Without --max-tool-calls, convert keeps what generate allowed: the manifest's limit, else generate's default."""
    nine = conversation("nine", calls=[("read_file", {"path": f"f{i}.py"}) for i in range(9)])
    eight = conversation("eight", calls=[("read_file", {"path": f"f{i}.py"}) for i in range(8)])
    assert GenerationLimits().max_tool_calls == 8
    report = run(tmp_path, tiny_model, [nine, eight])  # no manifest: generate's default
    assert (report.max_tool_calls, report.kept, report.dropped[DropReason.TOO_MANY_TOOL_CALLS]) == (8, 1, 1)
    manifest = RunManifest(run="r", prompts_file="p.jsonl", limits=GenerationLimits(max_tool_calls=9))
    (tmp_path / "run" / MANIFEST_FILE).write_text(manifest.model_dump_json())
    report = convert(tmp_path / "run", tiny_model, tmp_path / "out2")
    assert (report.max_tool_calls, report.kept) == (9, 2)


def test_duplicates_are_judged_on_rendered_text(tmp_path: Path, tiny_model: Path) -> None:
    first = conversation("same-task")
    again = copy.deepcopy(first)
    again["attempt"] = 2
    for message in again["messages"]:  # a re-run has new call ids, which the template never shows
        for tool_call in message.get("tool_calls") or []:
            tool_call["id"] = "re-" + tool_call["id"]
        if message.get("tool_call_id"):
            message["tool_call_id"] = "re-" + message["tool_call_id"]
    report = run(tmp_path, tiny_model, [first, again, conversation("other", answer="Something else.")])
    assert report.dropped[DropReason.DUPLICATE] == 1
    assert report.kept == 2


def test_too_long_uses_student_tokens_and_huge_outputs_survive_when_they_fit(tmp_path: Path, tiny_model: Path) -> None:
    huge = "line of output ü\n" * 20_000  # ~340 kB of tool output
    record = conversation("huge", results=[huge])
    tokenizer = load_tokenizer(tiny_model)
    report = run(tmp_path, tiny_model, [record], max_seq_length=4096)
    assert report.dropped[DropReason.TOO_LONG] == 1
    assert "tokens > max_seq_length 4096" in report.drops[0].detail
    report = run(tmp_path, tiny_model, [record], max_seq_length=10**6)
    assert report.kept == 1
    [row] = kept_records(tmp_path / "out")
    assert row["messages"][3]["content"] == huge
    length = len(tokenizer._tokenizer(render_text(tokenizer, row["messages"], row["tools"]), add_special_tokens=False)["input_ids"])
    assert report.tokens.max == length
    # Exactly at the limit is kept: nothing will be truncated later.
    assert run(tmp_path, tiny_model, [record], max_seq_length=length).kept == 1
    assert run(tmp_path, tiny_model, [record], max_seq_length=length - 1).kept == 0


def test_json_string_arguments_become_objects(tmp_path: Path, tiny_model: Path) -> None:
    record = conversation()
    record["messages"][2]["tool_calls"][0]["function"]["arguments"] = '{"path": "config.py", "max_lines": 10}'
    report = run(tmp_path, tiny_model, [record])
    assert report.kept == 1
    [row] = kept_records(tmp_path / "out")
    assert row["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"path": "config.py", "max_lines": 10}


def test_unicode_round_trips(tmp_path: Path, tiny_model: Path) -> None:
    record = conversation(prompt="Что делает 設定.py? 🤔", results=["# 注释\nprint('héllo 🌍')"], answer="Elle affiche « héllo » 🌍.")
    record["messages"][2]["tool_calls"][0]["function"]["arguments"] = {"path": "設定.py"}
    assert run(tmp_path, tiny_model, [record]).kept == 1
    raw = (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8")
    assert "設定.py" in raw and "🌍" in raw  # written as UTF-8, not \u escapes
    [row] = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert row["messages"][-1]["content"] == "Elle affiche « héllo » 🌍."


INVALID_LINES = [
    ("not json", "this is not json\n", "not JSON"),
    ("truncated", '{"schema_version": 1, "task_id": "x", "run"', "truncated last line"),
    ("old schema", json.dumps({"schema_version": 0, "task_id": "x"}) + "\n", "field schema_version: unsupported version 0"),
    ("no schema", json.dumps({"task_id": "x"}) + "\n", "field schema_version: is required"),
    ("array", "[1, 2]\n", "expected a JSON object"),
]


@pytest.mark.parametrize(("case", "line", "message"), INVALID_LINES, ids=[c[0] for c in INVALID_LINES])
def test_invalid_lines_fail_with_file_and_line(tmp_path: Path, tiny_model: Path, case: str, line: str, message: str) -> None:
    with pytest.raises(TrainerError) as caught:
        run(tmp_path, tiny_model, [conversation("a"), line])
    text = str(caught.value)
    assert text.startswith(f"{tmp_path / 'run' / 'conversations.jsonl'}:2: ")
    assert message in text and "\n" not in text
    assert not (tmp_path / "out" / "train.jsonl").exists()  # nothing half-written
    assert not list((tmp_path / "out").glob(".*partial"))


def test_missing_and_mistyped_fields_name_the_field(tmp_path: Path, tiny_model: Path) -> None:
    missing = conversation("m")
    del missing["teacher"]
    with pytest.raises(TrainerError, match=r"conversations.jsonl:1: field teacher: is required$"):
        run(tmp_path, tiny_model, [missing])
    wrong = conversation("w")
    wrong["messages"][1]["role"] = "robot"
    with pytest.raises(TrainerError, match=r":1: field messages.1.role: "):
        run(tmp_path, tiny_model, [wrong])


def test_skip_invalid_counts_bad_lines(tmp_path: Path, tiny_model: Path) -> None:
    old = conversation("old")
    old["schema_version"] = 7
    report = run(tmp_path, tiny_model, [conversation("a"), "\n", "garbage\n", old, conversation("b", prompt="b?"), '{"trunc'], skip_invalid=True)
    assert report.kept == 2
    assert report.dropped[DropReason.INVALID_RECORD] == 3
    assert [d.line for d in report.drops] == [3, 4, 6]  # the blank line 2 is not a record
    assert report.records == 5


def test_split_is_deterministic_by_task_and_valid_is_never_empty(tmp_path: Path, tiny_model: Path) -> None:
    records = [conversation(f"task-{i}", prompt=f"question {i}?") for i in range(30)]
    report = run(tmp_path, tiny_model, records, split=(0.5, 0.25, 0.25))
    out = tmp_path / "out"
    for name in ("train", "valid", "test"):
        rows = read_jsonl(out / f"{name}.jsonl")
        assert len(rows) == report.splits[name]
        for row in rows:
            task = row["messages"][1]["content"].split()[1].rstrip("?")
            assert split_of(f"task-{task}", (0.5, 0.25, 0.25)) == name
    assert sum(report.splits.values()) == 30 and min(report.splits.values()) > 0
    # Two examples that both hash into train: one moves to valid so mlx-lm has a validation set.
    both_train = [f"t{i}" for i in range(100) if split_of(f"t{i}", (0.8, 0.1, 0.1)) == "train"][:2]
    report = run(tmp_path, tiny_model, [conversation(t, prompt=t) for t in both_train])
    assert report.splits == {"train": 1, "valid": 1, "test": 0}
    assert not (out / "test.jsonl").exists()  # mlx-lm cannot read an empty split file
    with pytest.raises(TrainerError, match="split ratios"):
        run(tmp_path, tiny_model, records, split=(0.5, 0.5, 0.5))


def test_text_format_writes_the_rendered_conversation(tmp_path: Path, tiny_model: Path) -> None:
    report = run(tmp_path, tiny_model, [conversation()], format="text")
    assert report.kept == 1
    [row] = kept_records(tmp_path / "out")
    assert set(row) == {"text"}
    assert row["text"].startswith("<|im_start|>system\n") and row["text"].endswith("<|im_end|>\n")
    assert '<tool_call>\n{"name": "read_file", "arguments": {"path": "config.py"}}\n</tool_call>' in row["text"]


def test_run_dir_and_missing_inputs(tmp_path: Path, tiny_model: Path) -> None:
    write_jsonl(tmp_path / "run" / "conversations.jsonl", [conversation()])
    assert convert(tmp_path / "run", tiny_model, tmp_path / "out").kept == 1
    with pytest.raises(TrainerError, match="no conversations.jsonl"):
        convert(tmp_path / "out", tiny_model, tmp_path / "o2")
    with pytest.raises(TrainerError, match="no such file"):
        convert(tmp_path / "nope.jsonl", tiny_model, tmp_path / "o2")
    with pytest.raises(TrainerError, match="model directory not found"):
        convert(tmp_path / "run", tmp_path / "no-model", tmp_path / "o2")


SCHEMA = {
    "type": "object",
    "properties": {"path": {"type": "string"}, "n": {"type": "integer"}, "mode": {"enum": ["r", "w"]}},
    "required": ["path"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("arguments", "ok"),
    [
        ({"path": "a"}, True),
        ({"path": "a", "n": 2, "mode": "r"}, True),
        ({"path": "a", "n": 2.0}, True),
        ({"path": "a", "n": True}, False),
        ({"path": "a", "n": "2"}, False),
        ({"n": 2}, False),
        ({"path": "a", "extra": 1}, False),
        ({"path": "a", "mode": "x"}, False),
        ([], False),
    ],
)
def test_fallback_schema_check_agrees_with_jsonschema(arguments: Any, ok: bool) -> None:
    assert (basic_errors(SCHEMA, arguments, "arguments") == []) is ok
    assert (argument_errors(SCHEMA, arguments, use_jsonschema=True) == []) is ok


# --- plain chat lines ({"messages", "tools"}, as mlx-lm and most datasets write them) ----------


def plain_line(result: str | None, *, ids: bool = True, string_arguments: bool = True) -> dict[str, Any]:
    """A dataset line in OpenAI chat format, shaped like the seed's Phase 1 data."""
    record = conversation()
    messages = copy.deepcopy(record["messages"])
    call = messages[2]["tool_calls"][0]
    if string_arguments:
        call["function"]["arguments"] = json.dumps(call["function"]["arguments"])
    messages[3]["content"] = result
    if not ids:
        del call["id"]
        del messages[3]["tool_call_id"]
    return {"messages": messages, "tools": record["tools"]}


def test_plain_chat_lines_are_read_with_the_same_rules(tmp_path: Path, tiny_model: Path) -> None:
    real = plain_line("1| DEBUG = True")
    records = [
        real,
        plain_line("[Tool execution completed]"),
        plain_line("1| TIMEOUT = 30", ids=False),
        {**plain_line("2| x = 1"), "source": "some-dataset"},  # a dataset's own keys are ignored
    ]
    report = run(tmp_path, tiny_model, records)
    assert report.records == 4
    assert report.kept == 3
    assert report.dropped[DropReason.BAD_TOOL_RESULT] == 1
    [drop] = report.drops
    assert drop.line == 2 and "placeholder" in drop.detail
    rows = kept_records(tmp_path / "out")
    for row in rows:
        call = row["messages"][2]["tool_calls"][0]
        assert call["function"]["arguments"] == {"path": "config.py"}  # decoded from the JSON string
        assert row["messages"][3]["tool_call_id"] == call["id"]  # ids derived by order where missing


def test_plain_chat_line_ids_are_stable_and_explicit_ids_win(tmp_path: Path) -> None:
    from distill.trainer.chat_lines import plain_trajectory

    line = plain_line("1| DEBUG = True")
    first = plain_trajectory("f", 1, line)
    again = plain_trajectory("f", 9, copy.deepcopy(line))
    other = plain_trajectory("f", 1, plain_line("1| DEBUG = False"))
    named = plain_trajectory("f", 1, {**line, "id": "mine"})
    assert first.task_id == again.task_id != other.task_id
    assert named.task_id == "mine"


def test_plain_chat_line_errors_name_file_line_and_field(tmp_path: Path, tiny_model: Path) -> None:
    orphan = {"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]}
    with pytest.raises(TrainerError, match=r"conversations.jsonl:1: field messages: message 1 is a tool result"):
        run(tmp_path, tiny_model, [orphan])
    with pytest.raises(TrainerError, match=r"conversations.jsonl:1: field messages.0.role"):
        run(tmp_path, tiny_model, [{"messages": [{"role": "robot", "content": "hi"}]}])


def test_an_answer_holding_the_end_of_turn_marker_is_dropped_not_fatal(tmp_path: Path, tiny_model: Path) -> None:
    """One record quoting `<|im_end|>` cannot be masked; the others still convert (a template that
    cannot be masked at all still stops convert: see test_render_families)."""
    quoting = conversation("quoting", answer="Turns end with <|im_end|> in this template.")
    report = run(tmp_path, tiny_model, [conversation(), quoting])
    assert report.kept == 1
    assert report.dropped[DropReason.HOLDS_TURN_MARKER] == 1


def test_placeholder_results_write_the_same_kept_conversations_with_results_hidden(tmp_path: Path, tiny_model: Path) -> None:
    """The counterfactual dataset: filters judge the real results (a placeholder in the input is still
    dropped), then every kept tool result is written as `[Tool execution completed]`, nothing else changed."""
    records = [conversation(task_id=f"t{i}", prompt=f"What does config.py do, part {i}?") for i in range(6)]
    bad = conversation(task_id="bad", prompt="And this one?")
    set_result("none")(bad)
    records.append(bad)
    real = run(tmp_path / "real", tiny_model, records)
    hidden = run(tmp_path / "hidden", tiny_model, records, placeholder_results=True)

    assert real.kept == hidden.kept == 6 and hidden.dropped == real.dropped and hidden.placeholder_results
    assert hidden.splits == real.splits
    real_rows, hidden_rows = kept_records(tmp_path / "real" / "out"), kept_records(tmp_path / "hidden" / "out")
    assert len(real_rows) == len(hidden_rows) == 6
    for before, after in zip(real_rows, hidden_rows, strict=True):
        assert [m["role"] for m in before["messages"]] == [m["role"] for m in after["messages"]]
        for old, new in zip(before["messages"], after["messages"], strict=True):
            if old["role"] == "tool":
                assert old["content"] != new["content"] == "[Tool execution completed]"
            else:
                assert old == new
        assert before["tools"] == after["tools"]
    with pytest.raises(TrainerError, match="chat data only"):
        run(tmp_path / "text", tiny_model, records, placeholder_results=True, format="text")
