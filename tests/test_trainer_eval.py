"""`distill eval` end to end: real mlx_lm.server, the real agent loop and tools, base vs adapter.

The adapter is trained (full fine-tune, on a one-layer random model) to make one tool call,
rendered with the agent's real tool schemas; greedy decoding then reproduces it. The report
must show the base model making no valid call and the adapter calling in a loop that the
guard stops. That exercises render -> mask -> train -> adapter -> server tool parser -> agent
-> real tools -> report in one go.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from trainer_fixtures import write_jsonl

from shared.mlx_server import mlx_child_env, start_mlx_server
from shared.settings import DEFAULT_SYSTEM_PROMPT, GenerationLimits
from shared.tiny_model import build_tiny_model
from trainer.errors import TrainerError
from trainer.evaluate import EvalReport, evaluate, totals_of
from trainer.train import load_train_config, train

QUESTION = "What does config.py do?"


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=120)  # noqa: SIM115 - closed with the process


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-layer random model, a workspace and a prompts file."""
    root = tmp_path_factory.mktemp("eval")
    model = build_tiny_model(
        root / "model", num_layers=1, hidden_size=32, intermediate_size=64, num_attention_heads=2, num_key_value_heads=1
    )
    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "config.py").write_text("def parse(): return 1\n")
    prompts = write_jsonl(root / "prompts.jsonl", [{"prompt": QUESTION, "id": "same"}, {"prompt": "List the files.", "id": "other"}])
    return {"root": root, "model": model, "workspace": workspace, "prompts": prompts}


@pytest.fixture(scope="module")
def adapter(setup: dict[str, Path]) -> Path:
    """A full fine-tune that makes the model call read_file(config.py)."""
    from worker.agent import build_tools, openai_tool_schemas
    from worker.tools import Workspace

    root, model = setup["root"], setup["model"]
    tools = openai_tool_schemas(build_tools(Workspace(setup["workspace"]), (), GenerationLimits()))
    # Only the tool-calling turn is taught, so the adapter calls read_file whatever the context:
    # after the tool's answer it calls again, which is exactly the loop eval must report.
    example = {
        "messages": [
            {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
            {"role": "user", "content": QUESTION},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": {"path": "config.py"}}}]},
        ],
        "tools": tools,
    }
    data = root / "data"
    write_jsonl(data / "train.jsonl", [example])
    write_jsonl(data / "valid.jsonl", [example])
    config = load_train_config(
        None, fine_tune_type="full", iters=40, batch_size=1, learning_rate=1e-2, num_layers=-1,
        steps_per_report=10, steps_per_eval=100, val_batches=1, max_seq_length=4096,
    )
    result = train(data, model, root / "adapter", config=config, console=quiet(), in_process=True)
    assert result.final_val_loss < result.first_val_loss - 3, result
    return root / "adapter"


def test_eval_compares_base_and_adapter_through_a_real_server(setup: dict[str, Path], adapter: Path) -> None:
    out = setup["root"] / "eval-out"
    report = evaluate(
        setup["model"], setup["prompts"], setup["workspace"], adapter_path=adapter, out=out,
        max_tool_calls=2, max_tokens=48, console=quiet(),
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
    # The adapter calls read_file(config.py), gets the real file, calls it again: a loop that
    # the guard (max_tool_calls=2) stops and the report counts.
    for result in tuned.prompts:
        assert result.calls == ['read_file({"path":"config.py"})'] * 2, result
        assert (result.distinct_calls, result.repeated_calls, result.invalid_calls) == (1, 1, 0)
        assert result.hit_tool_limit and not result.final_answer
    assert tuned.totals.tool_limit_hits == 2 and tuned.totals.mean_calls_per_prompt == 2.0
    saved = EvalReport.model_validate_json((out / "eval.json").read_text())
    assert saved == report
    assert (out / "tool_calls.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_input_errors(setup: dict[str, Path], tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "ok"}, {"promt": "typo"}])
    with pytest.raises(TrainerError, match=r"prompts.jsonl:2: field "):
        evaluate(setup["model"], bad, setup["workspace"], console=quiet())
    with pytest.raises(TrainerError, match="workspace directory not found"):
        evaluate(setup["model"], setup["prompts"], tmp_path / "nope", console=quiet())
    with pytest.raises(TrainerError, match="no adapters.safetensors"):
        evaluate(setup["model"], setup["prompts"], setup["workspace"], adapter_path=tmp_path, console=quiet())


def test_mlx_server_start_stop_and_failure(setup: dict[str, Path], tmp_path: Path) -> None:
    env = mlx_child_env({"PATH": "/usr/bin"})
    assert env["HF_HUB_OFFLINE"] == "1" and Path(env["HF_HUB_CACHE"]).is_dir()
    with start_mlx_server(setup["model"], log_path=tmp_path / "server.log") as server:
        assert server.base_url.startswith("http://127.0.0.1:") and server.base_url.endswith("/v1")
        assert server.alive() and server.pid > 0
    assert not server.alive()
    from shared.mlx_server import MlxServerError

    with pytest.raises(MlxServerError, match="cannot serve .*HTTP 404"):
        start_mlx_server(tmp_path / "not-a-model", log_path=tmp_path / "bad.log", ready_timeout_s=60)
