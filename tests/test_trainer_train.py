"""`distill train` / `distill fuse` on a tiny random model, through mlx-lm's real trainer."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.tuner.callbacks import TrainingCallback
from trainer_fixtures import conversation, read_jsonl, tiny_model, write_jsonl  # noqa: F401 - fixture

from distill.teachers.mlx_server import OPENBLAS_PATH
from distill.trainer.batches import MaskedDataset, iterate_batches, load_split, masked_loss
from distill.trainer.convert import convert
from distill.trainer.errors import TrainerError
from distill.trainer.fuse import fuse
from distill.trainer.metrics import read_metrics
from distill.trainer.provenance import TrainInfo
from distill.trainer.render import load_tokenizer
from distill.trainer.train import train
from distill.trainer.train_config import TrainConfig, load_train_config


class Recorder(TrainingCallback):
    """Every report mlx-lm's trainer hands its training callback, and every tokenize step."""

    def __init__(self) -> None:
        self.train: list[dict[str, Any]] = []
        self.val: list[dict[str, Any]] = []
        self.tokenized: list[tuple[str, int, int]] = []

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        self.train.append(dict(train_info))

    def on_val_loss_report(self, val_info: dict[str, Any]) -> None:
        self.val.append(dict(val_info))

    def on_tokenize(self, name: str, done: int, total: int) -> None:
        self.tokenized.append((name, done, total))


def assert_metrics_are_the_reports(metrics_file: Path, recorder: Recorder) -> None:
    """metrics.jsonl holds exactly the losses mlx-lm reported to the callback, in order."""
    rows = read_metrics(metrics_file)
    assert recorder.train and [(r.iteration, r.loss, r.tokens_per_second, r.trained_tokens) for r in rows if r.kind == "train"] == [
        (i["iteration"], i["train_loss"], i["tokens_per_second"], i["trained_tokens"]) for i in recorder.train
    ]
    assert [(r.iteration, r.loss) for r in rows if r.kind == "val"] == [(i["iteration"], i["val_loss"]) for i in recorder.val]


@pytest.fixture(scope="module")
def data_dir(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight short trajectories (some with two tool calls), converted for the tiny model."""
    root = tmp_path_factory.mktemp("train-data")
    records = []
    for i in range(8):
        calls = [("read_file", {"path": f"src/mod{i}.py"})]
        if i % 2:
            calls.append(("grep", {"pattern": f"def f{i}"}))
        records.append(conversation(f"task-{i}", prompt=f"What does mod{i} do?", calls=calls, answer=f"mod{i} defines f{i}."))
    write_jsonl(root / "run" / "conversations.jsonl", records)
    report = convert(root / "run", tiny_model, root / "data", split=(0.5, 0.25, 0.25))
    assert report.kept == 8 and min(report.splits.values()) > 0
    return root / "data"


@pytest.fixture(scope="module")
def lora_run(tiny_model: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, TrainConfig, Recorder]:
    adapter = tmp_path_factory.mktemp("lora") / "adapter"
    config = load_train_config(
        None, iters=20, batch_size=2, learning_rate=1e-2, num_layers=-1, steps_per_report=5,
        steps_per_eval=10, save_every=10, rank=4, test=True,
    )
    recorder = Recorder()
    result = train(data_dir, tiny_model, adapter, config=config, callback=recorder, on_tokenize=recorder.on_tokenize, in_process=True)
    return adapter, result, config, recorder


def test_lora_training_lowers_loss_and_records_the_run(lora_run: tuple[Path, Any, TrainConfig, Recorder], data_dir: Path) -> None:
    adapter, result, config, recorder = lora_run
    assert result.final_train_loss < result.first_train_loss - 0.5, result
    assert result.final_val_loss < result.first_val_loss, result
    assert result.test_loss is not None and np.isfinite(result.test_loss)
    assert (adapter / "adapters.safetensors").is_file()
    assert (adapter / "0000010_adapters.safetensors").is_file()  # save_every checkpoints

    rows = read_metrics(adapter / "metrics.jsonl")
    train_rows = [r for r in rows if r.kind == "train"]
    assert [r.iteration for r in train_rows] == [5, 10, 15, 20]
    assert all(r.tokens_per_second and r.peak_memory_gb is not None for r in train_rows)
    # The iterations mlx-lm's console prints ("Iter 1: Val loss ..."), not the steps done before.
    assert [r.iteration for r in rows if r.kind == "val"] == [1, 10, 20]
    assert [r.kind for r in rows].count("test") == 1
    assert (adapter / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The metrics writer is mlx-lm's training callback and hands each report on to ours.
    assert_metrics_are_the_reports(adapter / "metrics.jsonl", recorder)
    assert [i["iteration"] for i in recorder.train] == [5, 10, 15, 20]
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        total = len(read_jsonl(data_dir / name))
        assert [(n, d) for n, d, _ in recorder.tokenized if n == name] == [(name, d) for d in range(1, total + 1)]

    info = TrainInfo.model_validate_json((adapter / "distill_train.json").read_text())
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl"):
        assert info.data_files[name].sha256 == hashlib.sha256((data_dir / name).read_bytes()).hexdigest()
    assert info.config == config and info.result == result
    assert "mlx-lm" in info.versions
    # The saved YAML reproduces the exact config.
    assert load_train_config(adapter / "train_config.yaml") == config


def test_adapter_loads_in_mlx_lm_and_changes_the_model(lora_run: tuple[Path, Any, TrainConfig, Recorder], tiny_model: Path) -> None:
    import mlx_lm

    adapter, _, _, _ = lora_run
    base, tokenizer = mlx_lm.load(str(tiny_model))
    tuned, _ = mlx_lm.load(str(tiny_model), adapter_path=str(adapter))
    tokens = mx.array([tokenizer.encode("<|im_start|>assistant\n<tool_call>")])
    assert not mx.allclose(base(tokens), tuned(tokens), atol=1e-3).item()


def test_fuse_gives_the_same_model_as_base_plus_adapter(lora_run: tuple[Path, Any, TrainConfig, Recorder], tiny_model: Path, tmp_path: Path) -> None:
    import mlx_lm

    adapter, _, _, _ = lora_run
    result = fuse(tiny_model, adapter, tmp_path / "fused")
    assert result.fused_modules > 0
    tuned, tokenizer = mlx_lm.load(str(tiny_model), adapter_path=str(adapter))
    fused, _ = mlx_lm.load(str(tmp_path / "fused"))
    tokens = mx.array([tokenizer.encode("<|im_start|>user\nhello<|im_end|>")])
    assert mx.allclose(tuned(tokens), fused(tokens), atol=1e-4).item()
    with pytest.raises(TrainerError, match="no adapters.safetensors"):
        fuse(tiny_model, tmp_path, tmp_path / "f2")


def test_resume_continues_from_the_saved_adapter(lora_run: tuple[Path, Any, TrainConfig, Recorder], tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    adapter, first, config, _ = lora_run
    resumed = config.model_copy(update={"iters": 2, "steps_per_report": 1, "resume_adapter_file": adapter / "adapters.safetensors", "test": False})
    result = train(data_dir, tiny_model, tmp_path / "resumed", config=resumed, in_process=True)
    # A fresh adapter starts near the untrained loss; a resumed one where the last run ended.
    assert result.first_train_loss < first.first_train_loss - 0.5


@pytest.mark.parametrize("kind", ["dora", "full"])
def test_dora_and_full_fine_tuning_save_loadable_adapters(kind: str, tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    import mlx_lm

    config = load_train_config(None, fine_tune_type=kind, iters=2, batch_size=2, num_layers=1, steps_per_report=1, learning_rate=1e-3)
    result = train(data_dir, tiny_model, tmp_path / kind, config=config, in_process=True)
    assert result.final_train_loss is not None
    assert json.loads((tmp_path / kind / "adapter_config.json").read_text())["fine_tune_type"] == kind
    mlx_lm.load(str(tiny_model), adapter_path=str(tmp_path / kind))


def test_training_in_a_child_process(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    """The OpenBLAS path: training re-run in a child with mlx_child_env(), errors passed back."""
    config = load_train_config(None, iters=2, batch_size=2, num_layers=-1, steps_per_report=1)
    recorder = Recorder()
    result = train(data_dir, tiny_model, tmp_path / "child", config=config, callback=recorder,
                   on_tokenize=recorder.on_tokenize, in_process=False)
    assert result.iterations == 2 and (tmp_path / "child" / "adapters.safetensors").is_file()
    assert not (tmp_path / "child" / ".train_job.json").exists()
    # The child says which BLAS it really ran on (the one mlx_child_env preloads where installed).
    assert result.blas == ("OpenBLAS (preloaded)" if OPENBLAS_PATH.exists() else "MLX's reference BLAS (slow; "
                           "apt-get install libopenblas0-pthread: 10-25x faster)")
    # The child relays mlx-lm's reports to this process's callbacks.
    assert_metrics_are_the_reports(tmp_path / "child" / "metrics.jsonl", recorder)
    assert [i["iteration"] for i in recorder.train] == [1, 2] and recorder.val
    assert ("train.jsonl", len(read_jsonl(data_dir / "train.jsonl")), len(read_jsonl(data_dir / "train.jsonl"))) in recorder.tokenized

    bad = tmp_path / "bad-data"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}], "tool": []}\n')
    with pytest.raises(TrainerError, match=r"bad-data/train.jsonl:1: field tool: unknown key$"):
        train(bad, tiny_model, tmp_path / "child2", config=config, in_process=False)


def test_cli_train_shows_mlx_lm_progress_with_our_report_lines(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    """`distill train` as a user runs it: mlx-lm's own report lines and ours, the files, a one-line error."""
    out = tmp_path / "cli-adapter"
    command = [sys.executable, "-m", "distill", "train", "--data", str(data_dir), "--model", str(tiny_model),
               "--adapter-path", str(out), "--iters", "4", "--batch-size", "2", "--num-layers", "-1"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = read_metrics(out / "metrics.jsonl")
    val = [r for r in rows if r.kind == "val"]
    (train_row,) = [r for r in rows if r.kind == "train"]
    assert "\x1b[" not in run.stdout  # piped, as into a log file: no colour codes
    shown = run.stdout
    assert f"val {val[0].loss:.3f}" in shown  # mlx-lm's TrainUI, not patched away
    assert f"  iter     4  lr {train_row.learning_rate:.2e}" in shown  # views.TrainDisplay via the callback
    assert f"train loss {train_row.loss:.3f} -> {train_row.loss:.3f}" in shown  # the CLI's summary
    assert (out / "adapters.safetensors").is_file() and (out / "loss.png").is_file()

    bad = tmp_path / "bad-data"
    bad.mkdir()
    (bad / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}], "tool": []}\n')
    run = subprocess.run([*command[:5], str(bad), *command[6:]], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().endswith("bad-data/train.jsonl:1: field tool: unknown key"), run.stderr


def test_bad_data_is_reported_with_file_and_line(tiny_model: Path, data_dir: Path, tmp_path: Path) -> None:
    config = load_train_config(None, iters=1, batch_size=1, num_layers=-1)
    good = read_jsonl(data_dir / "train.jsonl")[0]

    def attempt(lines: list[str], **updates: Any) -> str:
        folder = tmp_path / f"d{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        (folder / "train.jsonl").write_text("".join(lines))
        with pytest.raises(TrainerError) as caught:
            train(folder, tiny_model, tmp_path / "out", config=config.model_copy(update=updates), in_process=True)
        return str(caught.value)

    ok = json.dumps(good) + "\n"
    assert attempt([ok, "{oops\n"]).endswith("train.jsonl:2: not JSON (Expecting property name enclosed in double quotes at column 2)")
    assert attempt([ok, json.dumps({"messages": [{"role": "bot", "content": "x"}]}) + "\n"]).endswith("train.jsonl:2: field messages.0.role: Input should be 'system', 'user', 'assistant' or 'tool'")
    assert "train.jsonl:1: field messages: " in attempt([ok], max_seq_length=50)
    assert "tokens > max_seq_length 50" in attempt([ok], max_seq_length=50)
    assert attempt([json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n"]).endswith("field messages: no assistant tokens to train on")
    assert "num_layers 16 > the model's 2 layers" in attempt([ok], num_layers=16)
    with pytest.raises(TrainerError, match="no training examples"):
        train(tmp_path, tiny_model, tmp_path / "out", config=config)
    with pytest.raises(TrainerError, match="model directory not found"):
        train(data_dir, tmp_path / "missing-model", tmp_path / "out", config=config)


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("iters: 50\nlearning_rate: 2e-4\nlora_parameters:\n  rank: 16\n  scale: 10.0\n")
    config = load_train_config(path, iters=7, dropout=0.1, batch_size=None)
    assert config.iters == 7 and config.learning_rate == 2e-4 and config.batch_size == 4
    assert (config.lora_parameters.rank, config.lora_parameters.scale, config.lora_parameters.dropout) == (16, 10.0, 0.1)
    path.write_text("iters: 5\nlearning_rat: 1\n")
    with pytest.raises(TrainerError, match=r"train.yaml: field learning_rat: unknown key$"):
        load_train_config(path)
    path.write_text("iters: -3\n")
    with pytest.raises(TrainerError, match=r"train.yaml: field iters: Input should be greater than 0$"):
        load_train_config(path)
    path.write_text("iters: [1\n")
    with pytest.raises(TrainerError, match=r"train.yaml:\d+: not valid YAML"):
        load_train_config(path)
    with pytest.raises(TrainerError, match="config file not found"):
        load_train_config(tmp_path / "nope.yaml")


def test_masked_loss_counts_only_masked_targets() -> None:
    mx.random.seed(1)
    model = nn.Sequential(nn.Embedding(11, 8), nn.Linear(8, 11))
    tokens = mx.array([[1, 2, 3, 4, 5, 0], [6, 7, 8, 9, 10, 0]])
    mask = mx.array([[0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]]).astype(mx.bool_)
    loss, count = masked_loss(model, tokens, mask)
    logits = np.array(model(tokens[:, :-1]))
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = [-log_probs[b, t - 1, int(tokens[b, t])] for b in range(2) for t in range(1, 6) if bool(mask[b, t])]
    assert int(count) == 6
    assert float(loss) == pytest.approx(float(np.mean(expected)), rel=1e-5)


def test_iterate_batches_pads_and_repeats_small_sets() -> None:
    examples = [(np.arange(1, n + 1, dtype=np.int32), np.arange(n) % 2 == 1) for n in (5, 40, 7)]
    dataset = MaskedDataset(examples)
    batches = list(iterate_batches(dataset, batch_size=2, max_seq_length=100, seed=0))
    assert len(batches) == 1  # 3 examples, batch 2, mlx-lm drops the remainder
    tokens, mask = batches[0]
    assert tokens.shape == mask.shape and tokens.shape[1] % 32 == 0
    assert not np.array(mask)[:, 7:].any() and not np.array(tokens)[:, 7:].any()  # the two shortest
    small = list(iterate_batches(MaskedDataset(examples[:1]), batch_size=4, max_seq_length=100))
    assert small[0][0].shape == (4, 32)


def test_load_split_masks_assistant_turns(tiny_model: Path, data_dir: Path) -> None:
    tokenizer = load_tokenizer(tiny_model)
    dataset = load_split(data_dir / "train.jsonl", tokenizer, max_seq_length=2048)
    everything = load_split(data_dir / "train.jsonl", tokenizer, max_seq_length=2048, train_on="all")
    assert len(dataset) == len(everything) > 0
    tokens, mask = dataset[0]
    assert np.array_equal(tokens, everything[0][0])
    assert 0 < mask.sum() < len(mask) * 0.3 and everything[0][1].all()
    decoded = tokenizer._tokenizer.decode(tokens[mask].tolist(), skip_special_tokens=False)
    assert decoded.startswith('<tool_call>\n{"name": "read_file"') and decoded.endswith(".<|im_end|>")
    assert "<|im_start|>" not in decoded and "<tool_response>" not in decoded
