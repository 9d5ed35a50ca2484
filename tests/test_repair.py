"""`distill repair`: placeholder datasets replayed with the real tools, then kept by convert."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trainer_fixtures import read_jsonl, tiny_model, write_jsonl  # noqa: F401 - fixture

from distill.shared.settings import GenerationLimits
from distill.trainer.convert import convert
from distill.trainer.convert_report import DropReason
from distill.trainer.errors import TrainerError
from distill.trainer.repair import (
    CHANGED_HANDLING_KEY,
    CHANGED_KEY,
    CallOutcome,
    RepairReport,
    continuation_prompts,
    repair,
    report_path,
)

PLACEHOLDER = "[Tool execution completed]"


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "config.py").write_text("DEBUG = True\nTIMEOUT = 30\n")
    (root / "pkg" / "server.py").write_text("from pkg.config import TIMEOUT\n\ndef serve():\n    return TIMEOUT\n")
    return root


def chat(name: str, arguments: Any, result: Any, *, answer: str = "It is in pkg/config.py.") -> dict[str, Any]:
    """A plain chat line as the seed's Phase 1 data had them: string arguments, ids optional."""
    call: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    tool: dict[str, Any] = {"role": "tool", "content": result}
    return {"messages": [
        {"role": "system", "content": "Answer questions about the code. Use the tools."},
        {"role": "user", "content": "Where is TIMEOUT defined?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        tool,
        {"role": "assistant", "content": answer},
    ]}


def test_placeholders_become_real_results_and_convert_keeps_them(tmp_path: Path, workspace: Path, tiny_model: Path) -> None:
    dataset = write_jsonl(tmp_path / "phase1.jsonl", [
        chat("grep", {"pattern": "TIMEOUT =", "path": "pkg"}, PLACEHOLDER),
        chat("read_file", {"path": "pkg/config.py"}, None),
        chat("list_dir", {"path": "pkg"}, ""),
        chat("delete_everything", {"path": "/"}, PLACEHOLDER),  # no such tool: dropped with its reason
    ])
    # Before: convert drops every line, since none carries a real result.
    before = convert(dataset, tiny_model, tmp_path / "before")
    assert before.kept == 0 and before.dropped[DropReason.BAD_TOOL_RESULT] == 4

    report = repair(dataset, workspace, tmp_path / "repaired.jsonl")
    assert report.records == 4 and report.written == 3 and report.dropped == 1
    assert report.calls[CallOutcome.REPLACED] == 3 and report.calls[CallOutcome.FAILED] == 1
    [failure] = report.notes
    assert failure.line == 4 and failure.outcome == CallOutcome.FAILED and "unknown tool 'delete_everything'" in failure.detail
    saved = RepairReport.model_validate_json(report_path(tmp_path / "repaired.jsonl").read_text())
    assert saved.written == 3

    rows = read_jsonl(tmp_path / "repaired.jsonl")
    results = [row["messages"][3]["content"] for row in rows]
    assert results[0] == "pkg/config.py:2: TIMEOUT = 30"
    assert results[1].splitlines()[1].endswith("TIMEOUT = 30")
    assert "config.py" in results[2] and "server.py" in results[2]
    assert all(row["messages"][2]["tool_calls"][0]["function"]["arguments"] != "" for row in rows)
    assert isinstance(rows[0]["messages"][2]["tool_calls"][0]["function"]["arguments"], dict)
    assert {t["function"]["name"] for t in rows[0]["tools"]} >= {"grep", "read_file", "list_dir", "find_files"}

    after = convert(tmp_path / "repaired.jsonl", tiny_model, tmp_path / "after", max_seq_length=4096)
    assert after.kept == 3, after.drops


def test_real_results_are_kept_changed_results_flagged(tmp_path: Path, workspace: Path) -> None:
    dataset = write_jsonl(tmp_path / "real.jsonl", [
        chat("grep", {"pattern": "TIMEOUT =", "path": "pkg"}, "pkg/config.py:2: TIMEOUT = 30"),
        chat("grep", {"pattern": "DEBUG", "path": "pkg"}, "pkg/config.py:1: DEBUG = False",  # the code moved on
             answer="DEBUG is False (pkg/config.py, line 1)."),
    ])
    # By default a changed result keeps the original: the answer after it was written against it.
    report = repair(dataset, workspace, tmp_path / "original.jsonl")
    assert report.calls[CallOutcome.KEPT] == 1 and report.calls[CallOutcome.CHANGED] == 1 and report.cut == 0
    [note] = report.notes
    assert note.outcome == CallOutcome.CHANGED and note.line == 2 and note.tool == "grep"
    assert "kept the original" in note.detail
    rows = read_jsonl(tmp_path / "original.jsonl")
    assert rows[1]["messages"][3]["content"] == "pkg/config.py:1: DEBUG = False"
    assert rows[1]["messages"][4]["content"] == "DEBUG is False (pkg/config.py, line 1)."
    assert rows[1][CHANGED_KEY] == [rows[1]["messages"][2]["tool_calls"][0]["id"]]
    assert rows[1][CHANGED_HANDLING_KEY] == "kept_original" and CHANGED_KEY not in rows[0]


def test_a_changed_result_is_never_paired_with_the_old_answer(tmp_path: Path, workspace: Path) -> None:
    """--on-changed cut: today's result, the turns after it gone, the outcome recomputed, and the
    conversation continued from there (never today's result under yesterday's answer)."""
    stale = chat("grep", {"pattern": "DEBUG", "path": "pkg"}, "pkg/config.py:1: DEBUG = False",
                 answer="DEBUG is False (pkg/config.py, line 1).")
    stale["messages"][3]["outcome"] = "tool_error"  # a recorded outcome that no longer holds
    dataset = write_jsonl(tmp_path / "real.jsonl", [
        stale, chat("grep", {"pattern": "TIMEOUT =", "path": "pkg"}, "pkg/config.py:2: TIMEOUT = 30")])
    report = repair(dataset, workspace, tmp_path / "cut.jsonl", on_changed="cut")
    assert report.calls[CallOutcome.CHANGED] == 1 and report.cut == 1 and "cut the turns" in report.notes[0].detail
    cut, whole = read_jsonl(tmp_path / "cut.jsonl")
    assert [m["role"] for m in cut["messages"]] == ["system", "user", "assistant", "tool"]
    assert cut["messages"][3]["content"] == "pkg/config.py:1: DEBUG = True"
    assert cut["messages"][3]["outcome"] == "ok"
    assert cut[CHANGED_HANDLING_KEY] == "cut" and CHANGED_KEY not in whole
    assert [m["role"] for m in whole["messages"]][-1] == "assistant"
    # A cut conversation has no answer to train on until a teacher continues it from the new result.
    plan = continuation_prompts(tmp_path / "cut.jsonl", tmp_path / "cut.continue.jsonl")
    assert plan.written == 1 and [reason for _, reason in plan.skipped] == ["no placeholder or cut result: nothing to redo"]
    [line] = read_jsonl(tmp_path / "cut.continue.jsonl")
    assert line["history"][-1]["content"] == "pkg/config.py:1: DEBUG = True"


def test_bad_calls_drop_the_record_with_the_reason(tmp_path: Path, workspace: Path) -> None:
    missing_result = chat("grep", {"pattern": "serve"}, PLACEHOLDER)
    del missing_result["messages"][3]  # the call has no result message at all: repair adds one
    dataset = write_jsonl(tmp_path / "bad.jsonl", [
        chat("grep", {"no_pattern": "x"}, PLACEHOLDER),  # fails the tool's schema
        chat("read_file", "not an object", PLACEHOLDER),
        missing_result,
    ])
    report = repair(dataset, workspace, tmp_path / "out.jsonl")
    assert report.dropped == 2 and report.written == 1
    details = [note.detail for note in report.notes]
    assert "pattern" in details[0]
    assert "not an object" in details[1]
    [row] = read_jsonl(tmp_path / "out.jsonl")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    assert "pkg/server.py:3: def serve():" in row["messages"][3]["content"]


def test_repair_never_leaves_the_workspace(tmp_path: Path, workspace: Path) -> None:
    (tmp_path / "secret.txt").write_text("password=hunter2\n")
    dataset = write_jsonl(tmp_path / "escape.jsonl", [chat("read_file", {"path": "../secret.txt"}, PLACEHOLDER)])
    repair(dataset, workspace, tmp_path / "out.jsonl")
    out = (tmp_path / "out.jsonl").read_text()
    assert "hunter2" not in out
    assert read_jsonl(tmp_path / "out.jsonl")[0]["messages"][3]["content"].startswith("error:")


def test_bad_input_is_one_line_naming_file_and_line(tmp_path: Path, workspace: Path) -> None:
    dataset = write_jsonl(tmp_path / "broken.jsonl", [chat("grep", {"pattern": "x"}, PLACEHOLDER), "{oops\n"])
    with pytest.raises(TrainerError, match=r"broken.jsonl:2: not JSON"):
        repair(dataset, workspace, tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    command = [sys.executable, "-m", "distill", "repair", str(dataset), "--workspace", str(workspace),
               "--out", str(tmp_path / "out.jsonl")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "broken.jsonl:2: not JSON" in done.stderr
    skipped = subprocess.run(command + ["--skip-invalid"], capture_output=True, text=True, timeout=120)
    assert skipped.returncode == 0, skipped.stderr
    assert "1 of 2 conversations written" in skipped.stdout


def test_a_bad_custom_tool_fails_repair_in_one_line_before_any_line(tmp_path: Path, workspace: Path) -> None:
    dataset = write_jsonl(tmp_path / "phase1.jsonl", [chat("grep", {"pattern": "TIMEOUT"}, PLACEHOLDER)])
    for specs, needle in (
        (["nonexistent_mod_xyz:fn"], "cannot import module 'nonexistent_mod_xyz' for tool 'nonexistent_mod_xyz:fn'"),
        (["json:dumps", "pickle:dumps"], "custom tools 'json:dumps' and 'pickle:dumps' are both named 'dumps'"),
    ):
        command = [sys.executable, "-m", "distill", "repair", str(dataset), "--workspace", str(workspace),
                   "--out", str(tmp_path / "out.jsonl")] + [arg for spec in specs for arg in ("--custom-tool", spec)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "COLUMNS": "80"})
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.strip().splitlines()
        assert line.startswith("error: ") and needle in line, done.stderr
        assert not (tmp_path / "out.jsonl").exists() and not report_path(tmp_path / "out.jsonl").exists()


def test_custom_tools_replay_with_the_generation_limits(tmp_path: Path, workspace: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Replayed in a tool process like a generation run's: a hung custom tool hits the time limit
    (its conversation dropped, nothing written for it), a long answer is capped, a raise is its answer."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "repair_tools_mod.py").write_text(
        "import time\n\n"
        "def hang() -> str:\n    time.sleep(3600)\n    return 'never'\n\n"
        "def flood() -> str:\n    return 'word ' * 10_000\n\n"
        "def boom() -> str:\n    raise ValueError('no such ticket')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    dataset = write_jsonl(tmp_path / "custom.jsonl", [chat("hang", {}, PLACEHOLDER), chat("flood", {}, PLACEHOLDER),
                                                      chat("boom", {}, PLACEHOLDER)])
    limits = GenerationLimits(tool_timeout_s=0.2, tool_attempts=1, tool_max_output_chars=500)
    report = repair(dataset, workspace, tmp_path / "out.jsonl", limits=limits,
                    custom_tools=[f"repair_tools_mod:{name}" for name in ("hang", "flood", "boom")])
    assert (report.written, report.dropped) == (2, 1)
    [failure] = report.notes
    assert failure.tool == "hang" and "time limit of 0.2s" in failure.detail
    flood, boom = (row["messages"][3]["content"] for row in read_jsonl(tmp_path / "out.jsonl"))
    assert len(flood) <= 500 and flood.splitlines()[-1].startswith("[truncated]")
    assert boom == "error: ValueError: no such ticket"


def test_continue_with_a_teacher_exactly_once_across_a_kill(tmp_path: Path, workspace: Path) -> None:
    """--continue-with: each repaired conversation goes back to a teacher from its first repaired
    result, through the normal pipeline; a coordinator SIGKILL and the same command again give one
    fresh record per conversation."""
    import os
    import signal

    from conftest import REPO, wait_for_lines

    from distill.shared.records import Conversation
    from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig

    names = ["TIMEOUT", "DEBUG", "serve", "import"]
    dataset = write_jsonl(tmp_path / "phase1.jsonl", [
        {**chat("grep", {"pattern": f"{names[i % 4]}", "path": "pkg"}, PLACEHOLDER, answer=f"stale {i}"), "id": f"d{i}"}
        for i in range(12)
    ])
    teacher = SimTeacher(SimTeacherConfig(latency_s=0.3, tool_rounds=2))
    teacher.start()
    command = [sys.executable, "-m", "distill", "repair", str(dataset), "--workspace", str(workspace),
               "--out", str(tmp_path / "repaired.jsonl"), "--continue-with", teacher.base_url, "--teacher-model", "sim",
               "--run", "cont", "--out-dir", str(tmp_path / "runs"), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    written = tmp_path / "runs" / "cont" / "conversations.jsonl"
    try:
        first = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_lines(written, 3, timeout_s=180)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        before = written.read_bytes().count(b"\n")
        assert before < 12, "the kill came too late to prove anything"
        second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        teacher.stop()
    assert second.returncode == 0, second.stderr[-2000:]
    records = [Conversation.model_validate_json(line) for line in written.read_text().splitlines() if line.strip()]
    assert sorted(r.task_id for r in records) == sorted(f"d{i}-continued" for i in range(12))  # each exactly once
    repaired = {row["id"]: row for row in read_jsonl(tmp_path / "repaired.jsonl")}
    for record in records:
        source = repaired[record.metadata["continues"]]
        roles = [m.role for m in record.messages]
        assert roles == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"], roles
        # The history is the repaired conversation up to its first repaired result, word for word...
        assert record.messages[2].tool_calls[0].function.arguments == source["messages"][2]["tool_calls"][0]["function"]["arguments"]
        assert record.messages[3].content == source["messages"][3]["content"]
        assert record.messages[3].content != PLACEHOLDER and "pkg/" in record.messages[3].content
        # ...and what follows is the teacher's own, written looking at the real result.
        assert not record.messages[-1].content.startswith("stale")
        assert record.status == "final_answer"


def test_a_prompt_history_must_end_on_real_results(tmp_path: Path) -> None:
    from distill.shared.prompts import read_prompts

    call = {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "grep", "arguments": {"pattern": "x"}}}]}
    lines = [
        {"prompt": "where?", "history": [call, {"role": "tool", "tool_call_id": "c1", "content": "a.py:1: x"}]},
        {"prompt": "where?", "history": [call, {"role": "tool", "tool_call_id": "c1", "content": PLACEHOLDER}]},
        {"prompt": "where?", "history": [call]},
        {"prompt": "where?", "history": [{"role": "assistant", "content": "It is in a.py."}]},
        {"prompt": "where?", "history": [{"role": "user", "content": "and?"}]},
    ]
    path = write_jsonl(tmp_path / "p.jsonl", lines)
    first, *bad = list(read_prompts(path, "r"))
    assert first.history[1].content == "a.py:1: x"
    assert first.task_id != next(iter(read_prompts(write_jsonl(tmp_path / "q.jsonl", [{"prompt": "where?"}]), "r"))).task_id
    assert [str(b) for b in bad] == [
        f"{path}:2: field history: tool call 'c1' has a placeholder result '{PLACEHOLDER}'",
        f"{path}:3: field history: must end with tool results",
        f"{path}:4: field history: message 0 is an assistant answer; a history ends before the answer",
        f"{path}:5: field history: message 0 is a user message; a history holds assistant and tool turns only",
    ]


def test_secrets_the_dataset_brought_along_are_tagged_too(tmp_path: Path, workspace: Path) -> None:
    """Today's results are redacted in the tool process; an old result kept as it was, the prompt
    and the answers are redacted by repair before it writes them."""
    key = "AKIA" + "Z7QW3ERT5YUI8OPA"  # an AWS access key id's shape, split so no scanner flags this file
    line = chat("grep", {"pattern": "DEBUG", "path": "pkg"}, f"pkg/config.py:1: DEBUG = False  # {key}",
                answer=f"DEBUG is set next to the key {key}.")
    line["messages"][1]["content"] = f"Where is DEBUG? My key is {key}."
    dataset = write_jsonl(tmp_path / "leaky.jsonl", [line])

    repair(dataset, workspace, tmp_path / "kept.jsonl")  # a changed result keeps the original by default

    written = (tmp_path / "kept.jsonl").read_text()
    assert key not in written
    [row] = read_jsonl(tmp_path / "kept.jsonl")
    # One value, one tag, in the prompt, the kept result and the answer.
    assert [m["content"].count("[REDACTED aws-access-key #1]") for m in row["messages"]] == [0, 1, 0, 1, 1]
    assert "#2" not in written
