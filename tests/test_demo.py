"""`distill demo`'s stages end to end on a tiny random model (CI cannot afford SmolLM2 training).

Everything real but the student's size: questions synthesized from distill's own source, the
scripted teacher answering them through the real pipeline (embedded Redis, local Ray, real tools),
convert, LoRA, and eval serving base and adapter with mlx_lm.server; with --compare-placeholder, a
second adapter trained on the same data with placeholder results, evaluated beside them. Started
from an empty folder, so nothing may depend on the checkout being the working directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console
from tiny_model import build_tiny_model

from distill.demo import DEMO_SYSTEM_PROMPT, run_demo
from distill.demo_options import DemoOptions
from distill.shared.records import Conversation
from distill.shared.settings import GenerationLimits
from distill.trainer.evaluate import EvalReport
from distill.views import demo_scores_table, print_demo_summary
from distill.worker.toolcore import ToolCore


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The demo's prompt in the BPE corpus keeps the tiny model's sequences short.
    return build_tiny_model(tmp_path_factory.mktemp("student"), extra_corpus=[DEMO_SYSTEM_PROMPT])


def test_demo_closes_the_loop_from_an_empty_folder(tmp_path, monkeypatch, ray_session, tiny_student):
    empty = tmp_path / "anywhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    options = DemoOptions(student=tiny_student, train_tasks=6, heldout_tasks=2, iters=2, num_layers=-1,
                          max_seq_length=4096, eval_max_tokens=8, val_batches=1, compare_placeholder=True)

    # 80 columns, as in a CI log or a narrow terminal: every path the demo prints must stay whole.
    screen80 = Console(file=open("/dev/null", "w"), width=80, record=True)
    result = run_demo(options, console=screen80)
    print_demo_summary(result, screen80)
    printed = screen80.export_text()
    for _, path in result.files:
        assert str(path) in printed, f"{path} is not whole at 80 columns"
    assert str(result.eval_dir / "eval.json") in printed and str(result.data_dir / "report.json") in printed
    assert len(str(result.eval_dir / "tool_calls.png")) > 80 or len(str(result.data_dir)) > 40
    # It ends with the exact command that opens all of it in the viewer.
    assert printed.rstrip().splitlines()[-1].strip() == result.view_command == f"distill view {result.out}"
    assert result.blas and result.blas in printed
    assert "pydantic-ai v" not in printed and "Logfire" not in printed

    assert result.out == empty / "distill-demo"
    assert [s.name for s in result.stages] == ["questions", "student", "generate", "convert", "train", "evaluate"]
    # The workspace is distill's own source, laid out as it is imported.
    assert (result.workspace / "distill" / "coordinator" / "synth.py").is_file()
    questions = [json.loads(line) for line in result.synth.train_file.read_text().splitlines()]
    heldout = [json.loads(line) for line in result.synth.heldout_file.read_text().splitlines()]
    assert (len(questions), len(heldout)) == (6, 2)
    # A chain kind is in by default, and each question says how many calls it needs.
    assert {q["metadata"]["kind"] for q in questions + heldout} == {"defined", "method", "docstring"}
    assert all(q["metadata"]["min_calls"] == (2 if q["metadata"]["kind"] == "docstring" else 1) for q in questions)

    # Every question became a record whose every tool result is what the tool really answers.
    records = [Conversation.model_validate_json(line)
               for line in (result.run_dir / "conversations.jsonl").read_text().splitlines()]
    assert sorted(r.task_id for r in records) == sorted(q["id"] for q in questions)
    tools = ToolCore(result.workspace)
    expected = {q["id"]: q["expected"] for q in questions}
    for record in records:
        assert {t["function"]["name"] for t in record.tools} == {"grep", "read_file"}
        assert "description" not in record.tools[0]["function"]["parameters"]["properties"]["pattern"]
        calls = {c.id: c for m in record.messages for c in (m.tool_calls or [])}
        assert calls, f"{record.task_id}: the teacher answered without a tool"
        for message in record.messages:
            if message.role == "tool":
                call = calls[message.tool_call_id]
                assert message.content == tools.answer(call.function.name, call.function.arguments).text
                assert "no matches" not in message.content
        # The scripted teacher is right on distill's own code, from the results alone; the worker
        # checked it against the question's reference.
        assert record.expected == expected[record.task_id] or record.expected.model_dump() == expected[record.task_id]
        assert (record.verdict.passed, record.verdict.method) == (True, "reference")
    teacher = result.scores[-1]
    assert (teacher.questions, teacher.final_answers, teacher.correct) == (6, 6, 6)
    # The chain questions took the teacher two calls each, the second built from the first's result.
    chains = [r for r in records if r.task_id.startswith("docstring:")]
    assert chains and all(r.usage.tool_calls == 2 for r in chains)
    for record in chains:  # it reads the file grep named, from the line grep named
        first, second = (c for m in record.messages for c in (m.tool_calls or []))
        found = next(m.content for m in record.messages if m.role == "tool" and m.tool_call_id == first.id)
        path, line, _ = found.split(":", 2)
        assert (second.function.name, second.function.arguments["path"]) == ("read_file", path)
        assert second.function.arguments["start_line"] == int(line)

    # Convert kept them, with their real results, in the student's chat format.
    report = json.loads((result.data_dir / "report.json").read_text())
    assert report["kept"] == 6
    kept = [json.loads(line) for name in ("train", "valid") for line in (result.data_dir / f"{name}.jsonl").read_text().splitlines()]
    assert len(kept) == 6
    results_in_data = {m["content"] for k in kept for m in k["messages"] if m["role"] == "tool"}
    results_in_records = {m.content for r in records for m in r.messages if m.role == "tool"}
    assert results_in_data == results_in_records
    # The placeholder copy: the same kept conversations, split alike, every result hidden, the rest equal.
    hidden_report = json.loads((result.out / "train-data-placeholder" / "report.json").read_text())
    assert hidden_report["placeholder_results"] and hidden_report["splits"] == report["splits"]
    hidden = [json.loads(line) for name in ("train", "valid")
              for line in (result.out / "train-data-placeholder" / f"{name}.jsonl").read_text().splitlines()]
    assert {m["content"] for k in hidden for m in k["messages"] if m["role"] == "tool"} == {"[Tool execution completed]"}
    assert [[m for m in k["messages"] if m["role"] != "tool"] for k in hidden] == \
        [[m for m in k["messages"] if m["role"] != "tool"] for k in kept]
    assert result.placeholder_dir is not None and (result.placeholder_dir / "adapters.safetensors").is_file()

    assert (result.adapter_dir / "adapters.safetensors").is_file()

    # The evaluation ran both variants on the held-out questions, with the demo's tools and prompt.
    evaluation = EvalReport.model_validate_json((result.eval_dir / "eval.json").read_text())
    assert [v.name for v in evaluation.variants] == ["base", "placeholder", "adapter"]
    assert evaluation.adapters == {"placeholder": str(result.placeholder_dir), "adapter": str(result.adapter_dir)}
    for variant in evaluation.variants:  # per kind, every held-out question counted once, with its needed calls
        assert sum(t.prompts for t in variant.by_kind.values()) == 2
        assert all(p.kind and p.min_calls in (1, 2) for p in variant.prompts)
    assert all(sorted(p.id for p in v.prompts) == sorted(q["id"] for q in heldout) for v in evaluation.variants)
    assert all(p.correct is not None for v in evaluation.variants for p in v.prompts)
    # Each call the students made is kept with the real result its tool gave.
    for prompt in (p for v in evaluation.variants for p in v.prompts):
        assert len(prompt.tool_results) == prompt.tool_calls
        for call in prompt.tool_results:
            if call.outcome == "ok":
                assert call.result == tools.answer(call.name, call.arguments).text[:4000]
    # Every held-out question is correct, wrong or unanswered: nothing is counted twice or lost.
    assert all(v.totals.correct + v.totals.wrong + v.totals.no_answer == v.totals.with_reference == 2
               for v in evaluation.variants)
    assert report["require_verified"] is True
    assert [s.who for s in result.scores[:3]] == ["student base", "student placeholder", "student adapter"]
    assert all(s.questions == 2 for s in result.scores[:3])
    # One column per model: at 80 columns every cell is whole, the per-kind rows say what each kind needs.
    screen = Console(file=open("/dev/null", "w"), width=80, record=True)
    screen.print(demo_scores_table(result))
    shown = screen.export_text()
    header = next(line for line in shown.splitlines() if "placeholder" in line)
    assert [word for word in header.split() if word.isalpha()] == ["base", "placeholder", "adapter", "teacher"]
    assert "…" not in shown and "6/6" in shown and "docstring (needs 2 calls)" in shown
    assert "[Tool execution completed]" in shown


def test_brief_tool_docs_keep_the_schema_and_drop_the_prose(tmp_path):
    from distill.worker.agent import build_tools
    from distill.worker.tool_schemas import openai_tool_schemas

    (tmp_path / "a.py").write_text("def found_it():\n    pass\n")
    full = ToolCore(tmp_path).schemas
    core = ToolCore(tmp_path, limits=GenerationLimits(builtin_tools=["grep", "read_file"], tool_docs="brief"))
    brief = core.schemas
    # The agent's pooled tools offer exactly the core's schemas.
    assert openai_tool_schemas(build_tools(core)) == brief

    assert [s["function"]["name"] for s in full] == ["grep", "read_file", "list_dir", "find_files"]
    assert [s["function"]["name"] for s in brief] == ["grep", "read_file"]
    short, long = brief[0]["function"], full[0]["function"]
    assert short["description"] == "Search file contents for a regular expression, line by line (like `grep -rn`)."
    assert short["parameters"]["required"] == long["parameters"]["required"] == ["pattern"]
    assert set(short["parameters"]["properties"]) == set(long["parameters"]["properties"])
    assert not any("description" in p for p in short["parameters"]["properties"].values())
    assert len(json.dumps(brief[0])) < len(json.dumps(full[0])) / 2
    # The brief tool is the same real tool (run here in-process; a worker runs it in its tool pool).
    assert core.answer("grep", {"pattern": "def found_it"}) == ("ok", "a.py:1: def found_it():")
