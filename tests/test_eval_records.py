"""eval.json keeps what a reader needs to judge an answer: each tool call's real result, why the
answer was judged right or wrong, and whether it was cut off at the token limit.

A scripted OpenAI-compatible endpoint drives the real agent loop and the real tools through
`distill eval --teacher` (no student needed): it greps, then answers from the result; on the
"cut" question it answers with the right file name but with finish_reason "length", an answer
that looks right and must not count as a final answer.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from trainer_fixtures import write_jsonl

from distill.shared.settings import TeacherConfig
from distill.trainer.evaluate import EvalReport, evaluate, totals_of
from distill.views import eval_table


class GrepThenAnswer(BaseHTTPRequestHandler):
    """Calls grep for `def parse`, then answers; the question containing "cut" stops at max_tokens."""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
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
        payload = json.dumps({
            "id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

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
