"""`distill view`: the index, the filters, and what each page says, over data from the real pipeline."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from trainer_fixtures import (
    tiny_model,  # noqa: F401 - fixture viewer_data uses
    write_jsonl,
)
from viewer_fixtures import MARKER, SCRIPT, ViewerData, verdict_line, viewer_data  # noqa: F401 - fixture

from distill.trainer.batches import load_split
from distill.trainer.convert import convert
from distill.trainer.render import load_tokenizer
from distill.viewer.app import create_app
from distill.viewer.evals import eval_table
from distill.viewer.index import HEAD_BYTES, Filters, RunIndex
from distill.viewer.learn import student_view
from distill.viewer.trajectory import conversation_turns, final_answer, raw_timings


@pytest.fixture(scope="module")
def client(viewer_data: ViewerData) -> Iterator[TestClient]:
    with TestClient(create_app([viewer_data.root / "runs"])) as test_client:
        yield test_client


def index_of(client: TestClient, run: str = "viewer-run") -> RunIndex:
    state = client.app.state.viewer  # type: ignore[attr-defined]
    return state.index(state.catalog.run(run))


def lines(index: RunIndex, **filters: Any) -> list[tuple[str, int]]:
    page = index.page(Filters(**filters), size=1000)
    assert page.total == len(page.rows)
    return [(row.kind, row.line) for row in page.rows]


def conversation_lines(data: ViewerData, keep: Any) -> list[tuple[str, int]]:
    return [("conversation", n) for n, record in enumerate(data.records, start=1) if keep(record)]


# --- the run's numbers -----------------------------------------------------------------------


def test_run_numbers_come_from_the_records(client: TestClient, viewer_data: ViewerData) -> None:
    summary = index_of(client).summary()
    statuses = Counter(record["status"] for record in viewer_data.records)
    assert summary["statuses"] == {**statuses, "dead": 1}
    # Passed: one by verdicts.jsonl, one by its reference; pass@1 over the prompts with a verified
    # sample, unverified ones apart (shared.verdicts.pass_rates, as convert counts).
    checked = viewer_data.report.verification
    assert summary["pass_rate"] == checked.pass_at_1 == round(2 / checked.prompts, 4)
    assert summary["prompts_unverified"] == checked.prompts_unverified > 0
    teachers = {row["teacher"]: row for row in summary["teachers"]}
    assert teachers["alpha"]["conversations"] == sum(r["teacher"]["endpoint"] == "alpha" for r in viewer_data.records)
    assert teachers["alpha"]["dead"] == 1 and teachers["beta"]["dead"] == 0
    called = Counter(
        call["function"]["name"]
        for record in viewer_data.records for message in record["messages"] for call in message.get("tool_calls") or []
    )
    called["grep"] += 1  # the dead letter's unanswered call
    tools = {row["tool"]: row for row in summary["tools"]}
    assert {name: row["calls"] for name, row in tools.items()} == dict(called)
    # Real records carry pydantic-ai's history: every tool has a time.
    assert all(row["p50"] is not None and row["p95"] >= row["p50"] for row in tools.values())
    page = client.get("/runs/viewer-run").text
    assert "66.7 %" in page and "2 passed, 1 failed, 2 unverified" in page and "pass@1" in page
    assert "status is not final_answer" in page  # the convert report's drop reasons, linked


def test_filters_by_status_teacher_and_tool_calls(client: TestClient, viewer_data: ViewerData) -> None:
    index = index_of(client)
    for status in ("final_answer", "tool_limit", "error"):
        assert lines(index, status=status) == conversation_lines(viewer_data, lambda r, s=status: r["status"] == s)
    assert lines(index, status="dead") == [("dead", 1)]
    beta = conversation_lines(viewer_data, lambda r: r["teacher"]["endpoint"] == "beta")
    assert lines(index, teacher="beta") == beta and beta
    calls = [sum(len(m.get("tool_calls") or []) for m in r["messages"]) for r in viewer_data.records]
    one = [("conversation", n) for n, count in enumerate(calls, start=1) if count == 1]
    assert lines(index, calls_min=1, calls_max=1, status="tool_limit") == one[:1]
    assert lines(index, calls_min=2) == [("conversation", n) for n, c in enumerate(calls, start=1) if c >= 2]
    assert lines(index, calls_max=0) == [("conversation", n) for n, c in enumerate(calls, start=1) if c == 0]


def test_filter_by_verdict_reads_verdicts_file(client: TestClient, viewer_data: ViewerData) -> None:
    index = index_of(client)
    # t-script passed and t-settings failed by verdicts.jsonl; t-retries passed by its own reference.
    passed = sorted(("conversation", viewer_data.line_of(t)) for t in ("t-script", "t-retries"))
    assert viewer_data.records[viewer_data.line_of("t-retries") - 1]["verdict"]["method"] == "reference"
    assert lines(index, verdict="passed") == passed
    assert lines(index, verdict="failed") == [("conversation", viewer_data.line_of("t-settings"))]
    assert len(lines(index, verdict="unverified")) == len(viewer_data.records) - 3
    assert lines(index, verdict="none") == [("dead", 1)]  # a dead letter has no verdict


def test_filter_by_drop_reason_follows_the_convert_report(client: TestClient, viewer_data: ViewerData) -> None:
    index = index_of(client)
    dropped = {drop.line for drop in viewer_data.report.drops}
    assert dropped and len(dropped) < len(viewer_data.records)
    assert lines(index, drop="status_not_final_answer") == sorted(
        ("conversation", d.line) for d in viewer_data.report.drops if d.reason == "status_not_final_answer"
    )
    kept = [("conversation", n) for n in range(1, len(viewer_data.records) + 1) if n not in dropped]
    assert lines(index, drop="kept") == kept and len(kept) == viewer_data.report.kept
    assert lines(index, drop="arguments_fail_schema") == []


def test_search_finds_substrings_of_prompts_and_answers(client: TestClient, viewer_data: ViewerData) -> None:
    index = index_of(client)

    def expected(query: str) -> list[tuple[str, int]]:
        found = conversation_lines(
            viewer_data,
            lambda r: query.lower() in r["prompt"].lower() or query.lower() in (final_answer(r) or "").lower(),
        )
        return found + ([("dead", 1)] if query.lower() in "where is the retry policy?" else [])

    for query in (MARKER.upper(), "filler text", "parse_settings", "ow", "retry policy", "nothing like this"):
        assert lines(index, q=query) == expected(query), query
    assert lines(index, q="filler text") != []  # found in an answer only
    assert lines(index, q='say "quoted"') == []  # quotes in a query are text, not syntax


def test_paging(client: TestClient, viewer_data: ViewerData) -> None:
    index = index_of(client)
    every = lines(index)
    second = index.page(Filters(), page=2, size=2)
    assert [(r.kind, r.line) for r in second.rows] == every[2:4]
    assert second.pages == -(-len(every) // 2) and second.total == len(every)
    assert index.page(Filters(), page=99, size=2).page == second.pages  # past the end: the last page
    html = client.get("/runs/viewer-run/records", params={"status": "final_answer"}).text
    assert f"<b id=\"total\">{sum(r['status'] == 'final_answer' for r in viewer_data.records)}</b>" in html


def test_index_follows_a_growing_run(tmp_path: Path, viewer_data: ViewerData) -> None:
    run = tmp_path / "live"
    run.mkdir()
    path = run / "conversations.jsonl"
    shutil.copy(viewer_data.run_dir / "conversations.jsonl", path)
    with TestClient(create_app([run])) as client:
        index = index_of(client, "live")
        before = index.page(Filters()).total
        extra = json.dumps({**viewer_data.records[0], "task_id": "t-new", "prompt": "A new question?"})
        with path.open("a") as handle:
            handle.write(extra[:100])  # a line the coordinator is still writing
            handle.flush()
            assert index.page(Filters()).total == before
            handle.write(extra[100:] + "\n")
        assert index.page(Filters(q="new question")).total == 1
        (run / "verdicts.jsonl").write_text(json.dumps(verdict_line("t-new", False, "judge", "no")) + "\n")
        assert lines(index, verdict="failed") == [("conversation", before + 1)]


def test_next_session_reuses_the_index_and_reads_only_what_was_appended(
    tmp_path: Path, viewer_data: ViewerData
) -> None:
    run = tmp_path / "kept"
    run.mkdir()
    path = run / "conversations.jsonl"
    shutil.copy(viewer_data.run_dir / "conversations.jsonl", path)
    count = len(viewer_data.records)

    def session() -> tuple[RunIndex, list[tuple[str, int]]]:
        with TestClient(create_app([run], index_dir=tmp_path / "indexes")) as client:
            index = index_of(client, "kept")
            found = lines(index)
            assert lines(index, q=MARKER) == [row for row, r in zip(found, records(), strict=False) if MARKER in r["prompt"]]
            return index, found

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for line in path.read_text().splitlines()]

    first, every = session()
    assert first.parsed_here == count and len(every) == count
    again, same = session()
    assert again.parsed_here == 0 and same == every
    with path.open("a") as handle:
        handle.write(json.dumps({**viewer_data.records[0], "task_id": "t-more"}) + "\n")
    grown, more = session()
    assert grown.parsed_here == 1 and more == [*every, ("conversation", count + 1)]
    # A file shorter than the part that identifies it (a first dead letter), then longer: same rule.
    dead = json.loads((viewer_data.run_dir / "dead.jsonl").read_text())
    written = 0
    for batch in (1, 12, 0):
        with (run / "dead.jsonl").open("a") as handle:
            for _ in range(batch):
                written += 1
                handle.write(json.dumps({**dead, "partial_messages": [], "task_id": f"d-{written}"}) + "\n")
        dead_grown, with_dead = session()
        assert dead_grown.parsed_here == batch and with_dead[-1] == ("dead", written)
    assert (run / "dead.jsonl").stat().st_size > HEAD_BYTES
    # Rewritten rather than appended to (here: the first record gone): indexed again from the start.
    path.write_text("".join(json.dumps(r) + "\n" for r in viewer_data.records[1:]))
    rewritten, fewer = session()
    assert rewritten.parsed_here == count - 1 and len(fewer) == count - 1 + written  # no stale match (session checks)


def test_two_viewers_share_one_index_without_doubling_rows(tmp_path: Path, viewer_data: ViewerData) -> None:
    from distill.viewer.catalog import discover

    run = tmp_path / "shared"
    run.mkdir()
    path = run / "conversations.jsonl"
    shutil.copy(viewer_data.run_dir / "conversations.jsonl", path)
    found = discover([run]).run("shared")
    first, second = RunIndex(found, tmp_path / "indexes"), RunIndex(found, tmp_path / "indexes")
    try:
        first.refresh()
        second.refresh()
        assert (first.parsed_here, second.parsed_here) == (len(viewer_data.records), 0)
        with path.open("a") as handle:
            handle.write(json.dumps({**viewer_data.records[0], "task_id": "t-late"}) + "\n")
        second.refresh()
        assert second.parsed_here == 1 and lines(first) == lines(second)
        assert len(lines(first)) == len(viewer_data.records) + 1 and first.parsed_here == len(viewer_data.records)
    finally:
        first.close()
        second.close()


def test_fields_from_newer_records_show_when_present(tmp_path: Path, viewer_data: ViewerData) -> None:
    """A record-level verdict, a sample number and tool outcomes with their own timing (issues 13, 14)."""
    record = json.loads(json.dumps(viewer_data.records[0]))
    record["verdict"] = {"passed": False, "method": "reference", "detail": "expected config.py"}
    record["sample"] = 2
    tool = next(m for m in record["messages"] if m["role"] == "tool")
    tool.update(outcome="infra_error", duration_s=7.5)
    older = json.loads(json.dumps(viewer_data.records[1]))
    for message in older["messages"]:
        message.pop("outcome", None)  # written before tool outcomes existed: counted as unknown
    run = tmp_path / "newer"
    run.mkdir()
    (run / "conversations.jsonl").write_text(json.dumps(record) + "\n" + json.dumps(older) + "\n")
    (run / "progress.json").write_text(json.dumps({
        "run": "newer", "total": 2, "tool_processes": 2,
        "tools": {"grep": {"ok": 3, "tool_error": 1, "infra_error": 0, "p50_ms": 12.5, "p95_ms": 40.0}},
    }))
    with TestClient(create_app([run])) as client:
        run_page = client.get("/runs/newer").text
        assert "2 tool processes" in run_page and "12 ms" in run_page and "40 ms" in run_page
        index = index_of(client, "newer")
        assert lines(index, verdict="failed") == [("conversation", 1)]
        tools = {row["tool"]: row for row in index.summary()["tools"]}
        assert tools["grep"]["infra_error"] == 1 and tools["grep"]["unknown"] == 1
        page = client.get("/runs/newer/conversation/1").text
        assert "infra error" in page and "7.50 s" in page and "sample 2" in page and "expected config.py" in page
        assert "Training data" not in page and "drop" not in client.get("/runs/newer/records").text


def test_a_broken_line_is_listed_and_shown_as_it_is(tmp_path: Path, viewer_data: ViewerData) -> None:
    run = tmp_path / "broken"
    run.mkdir()
    good = json.dumps(viewer_data.records[1])
    (run / "conversations.jsonl").write_text(good + "\n" + '{"task_id": "t-cut", "prompt": <b>oops\n' + good + "\n")
    with TestClient(create_app([run])) as client:
        assert lines(index_of(client, "broken"), status="invalid") == [("conversation", 2)]
        html = client.get("/runs/broken/conversation/2").text
        assert "Unreadable line" in html and "not JSON" in html and "&lt;b&gt;oops" in html
        assert client.get("/runs/broken/conversation/3").status_code == 200


# --- one conversation ------------------------------------------------------------------------


def test_conversation_page_shows_calls_results_and_times(client: TestClient, viewer_data: ViewerData) -> None:
    line = viewer_data.line_of("t-script")
    record = viewer_data.records[line - 1]
    turns = conversation_turns(record)
    assert [t.role for t in turns] == ["system", "user", "assistant", "assistant", "assistant"]
    calls = [call for turn in turns for call in turn.calls]
    results = [m["content"] for m in record["messages"] if m["role"] == "tool"]
    assert [call.result for call in calls] == results  # each call beside its own real result
    assert all(turn.seconds is not None for turn in turns if turn.role == "assistant")
    assert all(call.seconds is not None for call in calls)
    assert len(raw_timings(record["raw_messages"]).requests) == 3
    html = client.get(f"/runs/viewer-run/conversation/{line}").text
    assert SCRIPT not in html  # a tool result holding <script> is text, never markup
    assert "&lt;script&gt;document.title" in html
    assert "<details" in html and "more lines" in html  # the 40-line read_file result is folded
    assert "&#34;pattern&#34;: &#34;injectedscript&#34;" in html
    assert "names page.html" in html and "verdicts.jsonl" in html
    assert f"/runs/viewer-run/conversation/{line}/learn" in html
    assert f'rel="next" href="/runs/viewer-run/conversation/{line + 1}"' in html and 'rel="prev"' not in html


def test_dead_letter_page_shows_reason_and_partial_history(client: TestClient) -> None:
    html = client.get("/runs/viewer-run/dead/1").text
    assert "gave up after 3 attempts: teacher timed out after 60 s" in html
    assert "TeacherTimeout" in html and "Partial history" in html
    assert "no result: the conversation ended before this call was answered" in html
    assert "&#34;pattern&#34;: &#34;injectedscript&#34;" in html


def test_missing_things_answer_404(client: TestClient) -> None:
    assert client.get("/runs/nope").status_code == 404
    assert client.get("/runs/viewer-run/conversation/999").status_code == 404
    assert client.get("/evals/nope").status_code == 404


# --- what the student learns -----------------------------------------------------------------


def test_student_view_is_the_trainers_mask(client: TestClient, viewer_data: ViewerData) -> None:
    state = client.app.state.viewer  # type: ignore[attr-defined]
    run = state.catalog.run("viewer-run")
    index = state.index(run)
    tokenizer = load_tokenizer(viewer_data.model)
    checked = 0
    for line, record in enumerate(viewer_data.records, start=1):
        if line in {drop.line for drop in viewer_data.report.drops}:
            continue
        view = student_view(record, state.locator(run.convert), state.tokenizers, None,
                            kept_before=index.kept_before(line))
        # What the trainer itself loads from that split file.
        dataset = load_split(run.convert.split_path(view.split), tokenizer, max_seq_length=100_000)
        tokens, mask = dataset[view.line - 1]
        assert [p.token for p in view.pieces] == tokens.tolist()
        assert [p.trained for p in view.pieces] == [bool(m) and i > 0 for i, m in enumerate(mask.tolist())]
        trained = "".join(p.text for p in view.pieces if p.trained)
        assert final_answer(record)[:40] in trained
        first_result = next(m["content"] for m in record["messages"] if m["role"] == "tool")
        assert first_result not in trained and record["messages"][0]["content"][:60] not in trained
        html = client.get(f"/runs/viewer-run/conversation/{line}/learn").text
        assert html.count('class="trained"') == int(mask[1:].sum())
        checked += 1
    assert checked == viewer_data.report.kept
    # convert moved a line to fill the empty valid split, so the lines were found by content.
    assert state.locator(run.convert).full_scans == 1


def test_student_view_finds_lines_where_convert_put_them(tmp_path: Path, viewer_data: ViewerData) -> None:
    """Without lines moved between splits, each conversation is found without reading every split line."""
    base = viewer_data.records[viewer_data.line_of("t-settings") - 1]
    records = [{**base, "task_id": f"t-{n}", "prompt": f"Question {n}?"} for n in range(12)]
    for number, record in enumerate(records):
        record["messages"] = [*base["messages"][:-1], {**base["messages"][-1], "content": f"Answer {number}."}]
    run = tmp_path / "many"
    write_jsonl(run / "conversations.jsonl", records)
    report = convert(run, viewer_data.model, run / "data", max_seq_length=100_000, split=(0.5, 0.5, 0.0))
    assert report.splits["train"] >= 2 and report.splits["valid"] >= 2  # nothing for convert to move
    with TestClient(create_app([run])) as client:
        state = client.app.state.viewer  # type: ignore[attr-defined]
        found = state.catalog.run("many")
        index = state.index(found)
        index.refresh()
        locator = state.locator(found.convert)
        for line, record in enumerate(records, start=1):
            view = student_view(record, locator, state.tokenizers, None, kept_before=index.kept_before(line))
            assert f"Answer {line - 1}." in "".join(p.text for p in view.pieces if p.trained)
        assert locator.full_scans == 0


def test_student_view_of_text_format_training_data(tmp_path: Path, viewer_data: ViewerData) -> None:
    """`convert --format text` writes rendered text: found by its rendering, trained on every token."""
    base = viewer_data.records[viewer_data.line_of("t-settings") - 1]
    records = [{**base, "task_id": f"t-{n}"} for n in range(3)]
    for number, record in enumerate(records):
        record["messages"] = [*base["messages"][:-1], {**base["messages"][-1], "content": f"Answer {number}."}]
    run = tmp_path / "texty"
    write_jsonl(run / "conversations.jsonl", records)
    convert(run, viewer_data.model, run / "data", max_seq_length=100_000, format="text")
    with TestClient(create_app([run])) as client:
        html = client.get("/runs/texty/conversation/2/learn").text
        assert 'class="trained"' in html and 'class="masked"' in html  # the first token: nothing predicts it
        state = client.app.state.viewer  # type: ignore[attr-defined]
        found = state.catalog.run("texty")
        view = student_view(records[1], state.locator(found.convert), state.tokenizers, None)
        assert all(piece.trained for piece in view.pieces[1:])  # the text format trains on every token
        assert "Answer 1." in "".join(piece.text for piece in view.pieces)


def test_student_view_of_a_dropped_conversation_says_why(client: TestClient, viewer_data: ViewerData) -> None:
    html = client.get(f"/runs/viewer-run/conversation/{viewer_data.line_of('t-limit')}/learn").text
    assert "convert left this conversation out (status is not final_answer)" in html


# --- evaluation ------------------------------------------------------------------------------


def test_eval_page_puts_variants_side_by_side(client: TestClient) -> None:
    html = client.get("/evals/adapter").text
    assert "<th>base</th><th>adapter</th><th>teacher</th>" in html.replace("\n", "")
    assert "I think it is &lt;b&gt;somewhere&lt;/b&gt;." in html and "In config.py." in html
    assert "tool limit" in html
    table = eval_table(json.loads(client.app.state.viewer.catalog.eval("adapter").path.read_text()))  # type: ignore[attr-defined]
    first = table.rows[0]
    assert [cell.correct for cell in first.cells] == [False, True, True]  # eval's own verdicts, per variant
    assert dict(table.totals)["correct"] == [0, 2, 2] and html.count("badge verdict-passed") == 4
    assert "100.0 %" in html  # accuracy, a share, as a percentage and html.count("badge verdict-failed") == 1


# --- the command -----------------------------------------------------------------------------


def test_view_command_errors_are_one_line(tmp_path: Path) -> None:
    def view(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "distill", "view", *args, "--no-open"]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    missing = view(str(tmp_path / "missing"))
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        busy = view(str(tmp_path), "--port", str(taken.getsockname()[1]))
    finally:
        taken.close()
    assert busy.returncode == 2 and "is in use" in busy.stderr and "Traceback" not in busy.stderr


def test_tokenizer_option_overrides_the_report(tmp_path: Path, viewer_data: ViewerData) -> None:
    """A report naming a tokenizer that is gone: the page says so; --tokenizer MODEL fixes it."""
    run = tmp_path / "moved"
    shutil.copytree(viewer_data.run_dir, run, ignore=shutil.ignore_patterns("adapter"))
    report = json.loads((run / "train-data" / "report.json").read_text())
    report.update(source=str(run / "conversations.jsonl"), tokenizer=str(tmp_path / "gone"))
    (run / "train-data" / "report.json").write_text(json.dumps(report))
    line = viewer_data.line_of("t-settings")
    with TestClient(create_app([run])) as client:
        assert "cannot load the tokenizer" in client.get(f"/runs/moved/conversation/{line}/learn").text
    with TestClient(create_app([run], tokenizer=str(viewer_data.model))) as client:
        html = client.get(f"/runs/moved/conversation/{line}/learn").text
        assert 'class="trained"' in html and str(viewer_data.model) in html
