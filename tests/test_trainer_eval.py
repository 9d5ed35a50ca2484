"""`distill eval` end to end: real mlx_lm.server, the real agent loop and tools, base vs adapter.

The whole pipeline in miniature: a scripted teacher endpoint drives the real agent (real tools)
to capture one conversation; convert turns it into training data; a one-layer random model is
fully fine-tuned on it; eval serves base and adapter through mlx_lm.server and runs the agent
on held-out prompts. Greedy decoding makes the tuned model reproduce the teacher's tool call,
so the report must show the base model making no valid call and the adapter making that one.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tiny_model import build_tiny_model
from trainer_fixtures import answer_completion, write_jsonl

from distill.shared.records import PromptTask
from distill.shared.settings import DEFAULT_SYSTEM_PROMPT, TeacherConfig
from distill.teachers.mlx_server import MlxServerError, mlx_child_env, start_mlx_server
from distill.trainer.convert import convert
from distill.trainer.errors import TrainerError
from distill.trainer.evaluate import EvalReport, PromptEval, evaluate, totals_by_kind, totals_of
from distill.trainer.train import train
from distill.trainer.train_config import load_train_config

QUESTION = "What does config.py do?"
ANSWER = "config.py defines parse(), which returns 1."


class ScriptedTeacher(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that calls read_file(config.py), then answers; keeps each request."""

    requests: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(body)
        if any(m["role"] == "tool" for m in body["messages"]):
            message: dict[str, Any] = {"role": "assistant", "content": ANSWER}
            finish = "stop"
        else:
            call = {"id": "call_1", "type": "function", "function": {"name": "read_file", "arguments": json.dumps({"path": "config.py"})}}
            message, finish = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
        answer_completion(self, body["model"], message, finish)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def teacher_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedTeacher)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, teacher_url: str) -> dict[str, Any]:
    """A workspace, a captured teacher conversation, a one-layer random student, a prompts file."""
    from distill.worker.agent import run_conversation
    from distill.worker.toolcore import ToolCore

    root = tmp_path_factory.mktemp("eval")
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "config.py").write_text("def parse(): return 1\n")
    teacher = TeacherConfig(base_url=teacher_url, model="scripted")
    task = PromptTask(task_id="teach-1", run="teacher-run", prompt=QUESTION)
    conversation = asyncio.run(
        run_conversation(task, teacher, ToolCore(workspace), system_prompt=DEFAULT_SYSTEM_PROMPT)
    )
    assert conversation.status == "final_answer" and conversation.usage.tool_calls == 1
    record = conversation.model_dump(mode="json")
    # Render with the tool definitions exactly as the agent sent them: the recorded schemas may
    # differ in key order and "strict" (pydantic-ai transforms them before sending), and a
    # memorising one-layer model is sensitive to every token of its prompt.
    sent_tools = ScriptedTeacher.requests[0]["tools"]
    record["tools"] = sent_tools
    model = build_tiny_model(
        root / "model", num_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=2,
        num_key_value_heads=1, vocab_size=800,
        # The agent's tool schemas are long; teaching them to the BPE keeps sequences short (fast).
        extra_corpus=[json.dumps(sent_tools), DEFAULT_SYSTEM_PROMPT],
    )
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": QUESTION, "id": "same"}, {"prompt": "List the files.", "id": "other"}])
    return {"root": root, "model": model, "workspace": workspace, "prompts": prompts, "record": record}


@pytest.fixture(scope="module")
def adapter(setup: dict[str, Any]) -> Path:
    """convert + a full fine-tune on the captured conversation."""
    root, model = setup["root"], setup["model"]
    write_jsonl(root / "run" / "conversations.jsonl", [setup["record"]])
    report = convert(root / "run", model, root / "data", max_seq_length=4096)
    assert report.kept == 1
    # One example: train on it and validate on it (this measures imitation, not generalisation).
    (root / "data" / "valid.jsonl").write_text((root / "data" / "train.jsonl").read_text())
    config = load_train_config(
        None, fine_tune_type="full", iters=60, batch_size=1, learning_rate=5e-3, num_layers=-1,
        steps_per_report=10, steps_per_eval=100, val_batches=1, max_seq_length=4096,
    )
    result = train(root / "data", model, root / "adapter", config=config, in_process=True)
    assert result.final_val_loss < 1.0 < result.first_val_loss, result
    return root / "adapter"


def test_eval_compares_base_and_adapter_through_a_real_server(setup: dict[str, Any], adapter: Path) -> None:
    out = setup["root"] / "eval-out"
    report = evaluate(
        setup["model"], setup["prompts"], setup["workspace"], adapter_path=adapter, out=out,
        max_tool_calls=2, max_tokens=48,
    )
    assert [v.name for v in report.variants] == ["base", "adapter"]
    base, tuned = report.variants
    for variant in report.variants:
        assert [p.id for p in variant.prompts] == ["same", "other"]
        assert variant.totals == totals_of(variant.prompts)
        for result in variant.prompts:
            assert result.status != "unavailable", result.error
            assert result.tool_calls == len(result.calls) == result.distinct_calls + result.repeated_calls
            assert result.hit_tool_limit == (result.status == "tool_limit")
            assert result.final_answer == (result.status == "final_answer" and bool((result.answer or "").strip()))
        assert Path(variant.server_log).is_file()
    # Random weights never produce a well-formed call.
    assert base.totals.tool_calls - base.totals.invalid_calls == 0, base
    # The tuned model makes the teacher's call, validly, and the real tool answers it.
    same = tuned.prompts[0]
    assert same.calls[:1] == ['read_file({"path":"config.py"})'], same
    assert tuned.totals.tool_calls - tuned.totals.invalid_calls >= 1
    saved = EvalReport.model_validate_json((out / "eval.json").read_text())
    assert saved == report
    assert (out / "tool_calls.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_input_errors(setup: dict[str, Any], tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok"}, {"promt": "typo"}])
    with pytest.raises(TrainerError, match=r"prompts.jsonl:2: field "):
        evaluate(setup["model"], bad, setup["workspace"])
    with pytest.raises(TrainerError, match="workspace directory not found"):
        evaluate(setup["model"], setup["prompts"], tmp_path / "nope")
    with pytest.raises(TrainerError, match="no adapters.safetensors"):
        evaluate(setup["model"], setup["prompts"], setup["workspace"], adapter_path=tmp_path)
    with pytest.raises(TrainerError, match="two adapters have this name"):
        evaluate(setup["model"], setup["prompts"], setup["workspace"], adapters=[("real", tmp_path), ("real", tmp_path)])
    with pytest.raises(TrainerError, match="two adapters have this name"):  # --adapter-path is "adapter"
        evaluate(setup["model"], setup["prompts"], setup["workspace"], adapter_path=tmp_path, adapters=[("adapter", tmp_path)])
    with pytest.raises(TrainerError, match="not base or teacher"):
        evaluate(setup["model"], setup["prompts"], setup["workspace"], adapters=[("base", tmp_path)])
    with pytest.raises(TrainerError, match="no adapters.safetensors"):
        evaluate(setup["model"], setup["prompts"], setup["workspace"], adapters=[("real", tmp_path)])


def test_totals_per_kind_count_calls_against_what_each_kind_needs() -> None:
    def result(kind: str | None, calls: int, correct: bool | None, final: bool = True, loop: bool = False,
               repeated: int = 0, min_calls: int | None = 2) -> PromptEval:
        return PromptEval(id=f"{kind}:{calls}", prompt="?", status="tool_limit" if loop else "final_answer", kind=kind,
                          min_calls=min_calls, tool_calls=calls, repeated_calls=repeated, final_answer=final and not loop,
                          hit_tool_limit=loop, correct=correct)

    results = [result("base", 2, True), result("base", 1, False), result("base", 4, False, loop=True, repeated=3),
               result("defined", 1, True, min_calls=1), result(None, 0, None, min_calls=None)]
    by_kind = totals_by_kind(results)
    assert list(by_kind) == ["base", "defined", "other"]
    chain = by_kind["base"]
    assert (chain.prompts, chain.correct, chain.wrong, chain.no_answer) == (3, 1, 1, 1)
    assert chain.calls_histogram == {"1": 1, "2": 1, "4": 1} and chain.mean_calls_per_prompt == round(7 / 3, 3)
    # One answer came after a single call where two are needed: an answer not built on a chain.
    assert chain.fewer_calls_than_needed == 1 and chain.mean_min_calls == 2
    assert (chain.tool_limit_hits, chain.repeated_calls) == (1, 3)
    assert by_kind["other"].with_min_calls == 0 and by_kind["other"].with_reference == 0
    every = totals_of(results)
    assert every.calls_histogram == {"0": 1, "1": 2, "2": 1, "4": 1} and every.with_min_calls == 4


def test_mlx_server_start_stop_and_failure(setup: dict[str, Any], tmp_path: Path) -> None:
    env = mlx_child_env({"PATH": "/usr/bin"})
    assert env["HF_HUB_OFFLINE"] == "1" and Path(env["HF_HUB_CACHE"]).is_dir()
    with start_mlx_server(setup["model"], log_path=tmp_path / "server.log") as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        assert server.alive() and server.pid > 0
    assert not server.alive()
    with pytest.raises(MlxServerError, match="cannot serve .*HTTP 404"):
        start_mlx_server(tmp_path / "not-a-model", log_path=tmp_path / "bad.log", ready_timeout_s=60)


def test_child_env_preloads_openblas_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distill.teachers.mlx_server as mlx_server
    from distill.teachers.mlx_server import openblas_missing

    fake = tmp_path / "libopenblas.so.0"
    monkeypatch.setattr(mlx_server, "OPENBLAS_PATH", fake)
    assert "LD_PRELOAD" not in mlx_child_env({"PATH": "/usr/bin"})  # not installed: nothing to preload
    fake.write_bytes(b"")
    env = mlx_child_env({"LD_PRELOAD": "/lib/other.so", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert env["LD_PRELOAD"] == f"{fake}:/lib/other.so"
    assert mlx_child_env(env)["LD_PRELOAD"] == env["LD_PRELOAD"]  # idempotent
    assert Path(env["HF_HUB_CACHE"]).is_dir() and env["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    assert openblas_missing() == (sys.platform == "linux")
    monkeypatch.setenv("LD_PRELOAD", str(fake))
    assert not openblas_missing()


def test_adapter_flag_takes_name_equals_path(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from distill.cli import app

    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q"}])
    for bad in ("just-a-path", "=x", "name="):
        result = CliRunner().invoke(app, ["eval", "--model", str(tmp_path), "--prompts", str(prompts), "--adapter", bad])
        assert result.exit_code == 2 and "NAME=PATH" in result.output, result.output
