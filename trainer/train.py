"""`distill train` and `distill fuse`: LoRA / DoRA / full fine-tuning through mlx-lm's own trainer.

mlx-lm's `tuner.train` runs the loop and draws its own progress bar; distill passes it a batch
iterator and a loss that train every assistant turn (trainer/batches.py) and a `MetricsWriter`,
an mlx-lm `TrainingCallback` that writes every report and hands it on to the caller's callback
(the CLI's display, distill/views.py). The steps follow mlx-lm's lora.py: `_run` -> `train_model`
-> `evaluate_model`. Next to the adapter it records what is needed to reproduce the run:

    OUT/adapters.safetensors   OUT/adapter_config.json   (what mlx_lm.load(adapter_path=) reads)
    OUT/metrics.jsonl          every train and validation report
    OUT/loss.png               both loss curves
    OUT/distill_train.json     config, data hashes, versions, result
    OUT/train_config.yaml      the effective config: `--config` it to train the same run again
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, cast

from mlx_lm.tuner.callbacks import TrainingCallback

from distill.shared.records import utcnow
from distill.teachers.mlx_server import blas_in_use, openblas_missing
from distill.trainer.batches import (
    MaskedDataset,
    TokenizeCallback,
    iterate_batches,
    load_split,
    masked_loss,
)
from distill.trainer.errors import TrainerError
from distill.trainer.metrics import MetricRecord, MetricsWriter, plot_losses
from distill.trainer.provenance import TrainResult, write_configs, write_info
from distill.trainer.render import check_model_source
from distill.trainer.train_child import train_in_child
from distill.trainer.train_config import (
    ADAPTER_FILE,
    INFO_FILE,
    METRICS_FILE,
    PLOT_FILE,
    TrainConfig,
    TrainJob,
)

logger = logging.getLogger(__name__)


def train(
    data: Path,
    model: str | Path,
    adapter_path: Path,
    *,
    config: TrainConfig | None = None,
    callback: TrainingCallback | None = None,
    on_tokenize: TokenizeCallback | None = None,
    in_process: bool | None = None,
) -> TrainResult:
    """Fine-tune `model` on DATA/{train,valid}.jsonl (from `distill convert`); write OUT files.

    Loss covers every assistant turn (config.train_on). `callback` gets mlx-lm's train and
    validation reports as they happen (after they are written to metrics.jsonl); `on_tokenize`
    gets (file name, done, total) while the splits are tokenised. `in_process=None` re-runs the
    training in a child process when an OpenBLAS preload is available but not active here (10-25x
    faster on Linux CPU): the child relays both callbacks' calls, and mlx-lm's own progress bar
    draws from the child on this process's terminal. True forces this process, False a child.
    Raises TrainerError for bad data, config or model.
    """
    _check_data_dir(Path(data))
    job = TrainJob(data=data, model=check_model_source(model), adapter_path=adapter_path, config=config or TrainConfig())
    if in_process is None:
        in_process = not openblas_missing()
    if not in_process:
        return train_in_child(job, callback, on_tokenize)
    return run_job(job, callback, on_tokenize)


def _check_data_dir(data: Path) -> None:
    if not data.is_dir():
        raise TrainerError(f"{data}: data directory not found")
    train_file = data / "train.jsonl"
    if not train_file.is_file() or not train_file.read_text(encoding="utf-8").strip():
        raise TrainerError(f"{data}: no training examples in train.jsonl (run distill convert first)")


def run_job(job: TrainJob, callback: TrainingCallback | None, on_tokenize: TokenizeCallback | None) -> TrainResult:
    """Load, train, test, record: mlx-lm lora.py's `run` with distill's data and records."""
    colour_only_on_a_terminal()
    started_at, clock = utcnow(), time.perf_counter()
    config = job.config
    _seed(config.seed)
    model, tokenizer = _load_model(job.model)
    splits = load_splits(job.data, tokenizer, config, on_tokenize)
    metrics = MetricsWriter(job.adapter_path / METRICS_FILE, wrapped_callback=callback)
    with metrics:
        train_model(config, model, job.model, splits, job.adapter_path, metrics)
        test_loss = None
        if config.test and len(splits["test"]):
            test_loss = evaluate_model(config, model, splits["test"], metrics)
    plot_file = plot_losses(metrics.path, job.adapter_path / PLOT_FILE)
    seconds = time.perf_counter() - clock
    result = _result(job.adapter_path, config, splits, metrics.records, plot_file, test_loss, seconds)
    result.blas = blas_in_use()
    write_info(job, result, started_at)
    return result


def colour_only_on_a_terminal() -> None:
    """mlx-lm's shared console (its bar, its loss lines, ours above them) is made with truecolour
    forced: piped into a log file or CI it would write colour codes. Plain text there; NO_COLOR is
    honoured by rich itself."""
    from mlx_lm.cli_ui import make_console

    console = make_console()
    if not console.is_terminal:
        console._color_system = None  # rich's own switch for "no colour"; there is no public setter


def _seed(seed: int) -> None:
    import mlx.core as mx
    import numpy as np

    np.random.seed(seed)
    mx.random.seed(seed)


def _load_model(model_source: str) -> tuple[Any, Any]:
    from mlx_lm.utils import load

    try:
        model, tokenizer, *_ = load(model_source)
        return model, tokenizer
    except Exception as error:  # noqa: BLE001 - any loader failure means a bad model argument
        raise TrainerError(f"{model_source}: cannot load the model ({type(error).__name__}: {error})") from None


def load_splits(
    data: Path, tokenizer: Any, config: TrainConfig, on_tokenize: TokenizeCallback | None = None
) -> dict[str, MaskedDataset]:
    """train, valid and test from DATA, tokenised with their loss masks; a missing split is empty."""
    splits = {
        name: load_split(
            data / f"{name}.jsonl", tokenizer,
            max_seq_length=config.max_seq_length, train_on=config.train_on, on_progress=on_tokenize,
        )
        for name in ("train", "valid", "test")
    }
    if not splits["valid"]:
        logger.warning("%s is missing or empty: training without validation", data / "valid.jsonl")
    return splits


def train_model(
    config: TrainConfig,
    model: Any,
    model_source: str,
    splits: dict[str, MaskedDataset],
    adapter_path: Path,
    callback: TrainingCallback,
) -> None:
    """Make the model trainable, save its configs next to the adapter, and run mlx-lm's loop."""
    from mlx_lm.tuner import trainer as mlx_trainer

    _make_trainable(model, config)
    optimizer = _optimizer(config)
    write_configs(adapter_path, model_source, config)
    _log_start(config, model, model_source, splits)
    mlx_trainer.train(
        model=model,
        optimizer=optimizer,
        train_dataset=splits["train"],
        val_dataset=splits["valid"] if len(splits["valid"]) else None,
        args=_training_args(config, adapter_path),
        loss=masked_loss,
        iterate_batches=iterate_batches,
        training_callback=callback,
    )


def _log_start(config: TrainConfig, model: Any, model_source: str, splits: dict[str, MaskedDataset]) -> None:
    trainable = sum(v.size for _, v in _flatten(model.trainable_parameters()))
    total = sum(v.size for _, v in _flatten(model.parameters()))
    logger.info(
        "distill train %s on %s: %d train / %d valid examples, %s trained tokens per epoch, "
        "%.3fM of %.3fM parameters trainable",
        config.fine_tune_type, model_source, len(splits["train"]), len(splits["valid"]),
        f"{splits['train'].trained_tokens:,}", trainable / 1e6, total / 1e6,
    )


def _training_args(config: TrainConfig, adapter_path: Path) -> Any:
    from mlx_lm.tuner.trainer import TrainingArgs

    return TrainingArgs(
        batch_size=config.batch_size,
        iters=config.iters,
        val_batches=config.val_batches,
        steps_per_report=config.steps_per_report,
        steps_per_eval=config.steps_per_eval,
        steps_per_save=config.save_every,
        max_seq_length=config.max_seq_length,
        adapter_file=str(adapter_path / ADAPTER_FILE),
        grad_checkpoint=config.grad_checkpoint,
        grad_accumulation_steps=config.grad_accumulation_steps,
    )


def evaluate_model(config: TrainConfig, model: Any, test_set: MaskedDataset, metrics: MetricsWriter) -> float:
    """The masked loss on the test split, recorded in metrics.jsonl as a `test` row."""
    from mlx_lm.tuner import trainer as mlx_trainer

    test_loss = mlx_trainer.evaluate(
        model=model,
        dataset=test_set,
        batch_size=config.batch_size,
        num_batches=config.test_batches,
        max_seq_length=config.max_seq_length,
        loss=masked_loss,
        iterate_batches=iterate_batches,
    )
    metrics.record(MetricRecord(kind="test", iteration=config.iters, loss=test_loss))
    logger.info("test loss %.3f, perplexity %.2f", test_loss, math.exp(min(test_loss, 50)))
    return test_loss


def _result(
    adapter_path: Path,
    config: TrainConfig,
    splits: dict[str, MaskedDataset],
    records: list[MetricRecord],
    plot_file: Path | None,
    test_loss: float | None,
    seconds: float,
) -> TrainResult:
    train_rows = [r for r in records if r.kind == "train"]
    val_rows = [r for r in records if r.kind == "val"]
    return TrainResult(
        adapter_path=str(adapter_path),
        adapter_file=str(adapter_path / ADAPTER_FILE),
        metrics_file=str(adapter_path / METRICS_FILE),
        plot_file=str(plot_file) if plot_file else None,
        info_file=str(adapter_path / INFO_FILE),
        iterations=config.iters,
        train_examples=len(splits["train"]),
        valid_examples=len(splits["valid"]),
        trained_tokens=(train_rows[-1].trained_tokens or 0) if train_rows else 0,
        first_train_loss=train_rows[0].loss if train_rows else None,
        final_train_loss=train_rows[-1].loss if train_rows else None,
        first_val_loss=val_rows[0].loss if val_rows else None,
        final_val_loss=val_rows[-1].loss if val_rows else None,
        test_loss=test_loss,
        seconds=round(seconds, 3),
    )


def _make_trainable(model: Any, config: TrainConfig) -> None:
    """Freeze the base, then add LoRA/DoRA layers or unfreeze the top blocks; resume if asked."""
    from mlx_lm.tuner.utils import linear_to_lora_layers

    layers = len(model.layers)
    if config.num_layers > layers:
        raise TrainerError(f"num_layers {config.num_layers} > the model's {layers} layers (use -1 for all)")
    model.freeze()
    if config.fine_tune_type == "full":
        for layer in model.layers[-max(config.num_layers, 0) :]:
            layer.unfreeze()
    else:
        linear_to_lora_layers(
            model,
            config.num_layers,
            config.lora_parameters.model_dump(exclude_none=True),
            use_dora=config.fine_tune_type == "dora",
        )
    if config.resume_adapter_file is not None:
        if not config.resume_adapter_file.is_file():
            raise TrainerError(f"{config.resume_adapter_file}: adapter file to resume from not found")
        try:
            model.load_weights(str(config.resume_adapter_file), strict=False)
        except Exception as error:  # noqa: BLE001 - a mismatched file is the user's input
            raise TrainerError(f"{config.resume_adapter_file}: cannot resume from it ({error})") from None


def _optimizer(config: TrainConfig) -> Any:
    import mlx.optimizers as optim
    from mlx_lm.tuner.utils import build_schedule

    classes = {
        "adam": optim.Adam,
        "adamw": optim.AdamW,
        "sgd": optim.SGD,
        "adafactor": optim.Adafactor,
        "muon": optim.Muon,
    }
    try:
        learning_rate = build_schedule(config.lr_schedule) if config.lr_schedule else config.learning_rate
        return classes[config.optimizer](learning_rate=learning_rate, **config.optimizer_config)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise TrainerError(f"optimizer {config.optimizer} / lr_schedule: {error}") from None


def _flatten(tree: Any) -> list[tuple[str, Any]]:
    from mlx.utils import tree_flatten

    return cast("list[tuple[str, Any]]", tree_flatten(tree))
