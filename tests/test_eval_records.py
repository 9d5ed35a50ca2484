"""eval.json keeps what a reader needs to judge an answer: each tool call's real result, why the
answer was judged right or wrong, and whether it was cut off at the token limit.

A scripted OpenAI-compatible endpoint drives the real agent loop and the real tools through
`distill eval --teacher` (no student needed): it greps, then answers from the result; on the
"cut" question it answers with the right file name but with finish_reason "length", an answer
that looks right and must not count as a final answer.
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
from typing import Any

import pytest
import test_viewer_browser
from trainer_fixtures import answer_completion, write_jsonl

from distill.shared.settings import TeacherConfig
from distill.trainer.evaluate import EvalReport, evaluate, totals_of
from distill.views import eval_table

# The viewer tests' headless Chromium (Debian's, driven by selenium), shared rather than copied.
browser = test_viewer_browser.browser
URL_LINE = test_viewer_browser.URL_LINE


class GrepThenAnswer(BaseHTTPRequestHandler):
    """Calls grep for `def parse`, then answers; the question containing "cut" stops at max_tokens."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        question = next(m["content"] for m in body["messages"] if m["role"] == "user")
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        if not results:
            call = {"id": "call_1", "type": "function",
                    "function": {"name": "grep", "arguments": json.dumps({"pattern": "def parse"})}}
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
        elif "cut" in question:
            message, finish = {"role": "assistant", "content": "parse is defined in config.py, which"}, "length"
        else:
            # Answers with the file the real result named, so a wrong result gives a wrong answer.
            file = results[0].split(":", 1)[0]
            message, finish = {"role": "assistant", "content": f"parse is defined in {file}."}, "stop"
        answer_completion(self, body["model"], message, finish)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def endpoint() -> Iterator[TeacherConfig]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), GrepThenAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield TeacherConfig(name="teacher", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", model="scripted",
                        max_concurrency=1)
    server.shutdown()


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, endpoint: TeacherConfig) -> EvalReport:
    root = tmp_path_factory.mktemp("eval-records")
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "config.py").write_text("def parse():\n    return 1\n")
    prompts = write_jsonl(root / "prompts.jsonl", [
        {"id": "right", "prompt": "Where is parse defined?", "expected": "config.py"},
        # The right answer is not where the tool points: the verdict must say what was missing.
        {"id": "wrong", "prompt": "Which file defines parse, really?", "expected": "settings.py"},
        {"id": "cut", "prompt": "Where is parse defined (cut)?", "expected": "config.py"},
    ])
    return evaluate(None, prompts, workspace, teacher=endpoint, out=root / "eval", max_tool_calls=3, max_tokens=32)


def test_eval_json_keeps_each_tool_result_and_the_verdict(report: EvalReport) -> None:
    saved = EvalReport.model_validate_json((Path(report.plot_file).parent / "eval.json").read_text())
    assert saved == report
    right, wrong, cut = saved.variants[0].prompts
    for prompt in (right, wrong, cut):
        [call] = prompt.tool_results
        assert call.name == "grep" and call.arguments == {"pattern": "def parse"}
        # The real tool's answer, read from the real file: path, line number, the line.
        assert call.outcome == "ok" and call.result is not None and "config.py:1" in call.result
        assert "def parse" in call.result and not call.result_cut
    assert right.correct is True and "config.py" in right.verdict
    assert wrong.correct is False and "settings.py" in wrong.verdict


def test_an_answer_cut_at_the_token_limit_is_counted_as_truncated(report: EvalReport) -> None:
    variant = report.variants[0]
    right, wrong, cut = variant.prompts
    # The cut answer names the right file, yet it is neither a final answer nor a correct one.
    assert cut.status == "truncated" and cut.truncated and not cut.final_answer
    assert cut.answer == "parse is defined in config.py, which"
    assert cut.correct is False and "cut off at the token limit" in cut.verdict
    assert not right.truncated and right.final_answer and right.status == "final_answer"
    assert not wrong.truncated and wrong.final_answer
    totals = variant.totals
    assert totals == totals_of(variant.prompts)
    assert (totals.truncated, totals.final_answers, totals.correct) == (1, 2, 1)


def test_the_eval_table_shows_the_truncated_count(report: EvalReport) -> None:
    from rich.console import Console

    console = Console(width=80, record=True)
    console.print(eval_table(report))
    text = console.export_text()
    line = next(row for row in text.splitlines() if "cut off at the token limit" in row)
    assert line.split("│")[-2].strip() == "1"


def test_the_eval_page_shows_each_tool_result_the_verdict_and_the_chart(report: EvalReport, browser: object,
                                                                        tmp_path: Path) -> None:
    """`distill view` on the eval folder, in headless Chromium: the user's way to the answer's why."""
    from selenium.webdriver.common.by import By

    eval_dir = Path(report.plot_file).parent
    process = subprocess.Popen(
        [sys.executable, "-m", "distill", "view", str(eval_dir), "--port", "0", "--no-open", "--index-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "80"},
    )
    try:
        assert process.stdout is not None
        url = next(match.group(1) for line in process.stdout if (match := URL_LINE.search(line)))
        driver = browser
        driver.get(url)  # type: ignore[attr-defined]
        driver.find_element(By.CSS_SELECTOR, "a[href^='/evals/']").click()  # type: ignore[attr-defined]
        rows = {row.find_element(By.CSS_SELECTOR, "td.prompt .dim").text: row  # type: ignore[attr-defined]
                for row in driver.find_elements(By.CSS_SELECTOR, "#eval-prompts tbody tr")}  # type: ignore[attr-defined]
        wrong = rows["wrong"]
        results = [r.text for r in wrong.find_elements(By.CSS_SELECTOR, "pre.result")]
        assert results == ["config.py:1: def parse():"]  # the real result, as the tool gave it
        assert "grep" in wrong.text and "parse is defined in config.py." in wrong.text
        assert "why wrong: answer names other files than expected; missing: settings.py; extra: config.py" in wrong.text
        assert "why right: answer names exactly 'config.py'" in rows["right"].text
        assert "cut off at the token limit (32 tokens)" in rows["cut"].text
        chart = driver.find_element(By.CSS_SELECTOR, ".charts img")  # type: ignore[attr-defined]
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", chart) > 100  # type: ignore[attr-defined]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_demo_evaluation_belongs_to_the_demo_run(tmp_path: Path) -> None:
    """The demo keeps eval/ beside runs/: the index still lists the evaluation on the run's row,
    followed run -> convert output -> adapter (distill_train.json names its data) -> eval.json."""
    from distill.viewer.catalog import discover

    out = tmp_path / "distill-demo"
    run = out / "runs" / "demo"
    run.mkdir(parents=True)
    (run / "conversations.jsonl").write_text("")
    other = out / "runs" / "other"
    other.mkdir()
    (other / "conversations.jsonl").write_text("")
    data = out / "train-data"
    data.mkdir()
    (data / "report.json").write_text(json.dumps({"source": str(run / "conversations.jsonl"), "drops": [], "splits": {}}))
    adapter = out / "adapter"
    adapter.mkdir()
    (adapter / "distill_train.json").write_text(json.dumps({"data_dir": str(data)}))
    (out / "eval").mkdir()
    (out / "eval" / "eval.json").write_text(json.dumps({"variants": [], "adapter_path": str(adapter)}))
    # An evaluation of an adapter trained elsewhere belongs to no run.
    (out / "elsewhere").mkdir()
    (out / "elsewhere" / "eval.json").write_text(json.dumps({"variants": [], "adapter_path": str(tmp_path / "gone")}))

    catalog = discover([out])
    runs = {r.id: r for r in catalog.runs}
    assert [e.path for e in runs["demo"].evals] == [out / "eval" / "eval.json"]
    assert runs["other"].evals == []
    assert len(catalog.evals) == 2


def test_no_third_party_banner_during_eval(endpoint: TeacherConfig, tmp_path: Path) -> None:
    """pydantic-ai shows a first-run banner on a terminal or to a coding agent; distill owns its output.

    AI_AGENT=1 is how pydantic-ai is told a reader is there (as a terminal would): without distill
    turning the banner off, it lands on stderr in the middle of the evaluation.
    """
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "config.py").write_text("def parse():\n    return 1\n")
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"id": "right", "prompt": "Where is parse defined?"}])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_VERSION", "CI", "PYDANTIC_AI_NO_BANNER")}
    done = subprocess.run(
        [sys.executable, "-m", "distill", "eval", "--prompts", str(prompts), "--workspace", str(workspace),
         "--teacher", endpoint.base_url, "--teacher-model", "scripted", "--out", str(tmp_path / "eval")],
        env={**env, "AI_AGENT": "1", "COLUMNS": "80"}, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "final answers" in done.stdout  # the evaluation ran its agent
    for banner_text in ("pydantic-ai v", "observability", "Logfire", "PYDANTIC_AI_NO_BANNER"):
        assert banner_text not in done.stdout + done.stderr
