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

import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from mlx_lm.tuner.callbacks import TrainingCallback
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.shared.errors import LineError, describe_validation_error, iter_jsonl, line_error
from distill.shared.records import Record, utcnow
from distill.teachers.mlx_server import blas_in_use, mlx_child_env, openblas_missing
from distill.trainer.batches import MaskedDataset, TokenizeCallback, iterate_batches, load_split, masked_loss
from distill.trainer.errors import TrainerError
from distill.trainer.render import canonical_json, check_model_source

logger = logging.getLogger(__name__)

ADAPTER_FILE = "adapters.safetensors"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
INFO_FILE = "distill_train.json"
CONFIG_FILE = "train_config.yaml"
SPLIT_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl")


class LoraParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rank: int = Field(default=8, gt=0)
    # mlx-lm's name for LoRA's alpha/rank multiplier.
    scale: float = Field(default=20.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    # Module paths inside each block to adapt (e.g. ["self_attn.q_proj"]); None: every linear.
    keys: list[str] | None = None


class TrainConfig(BaseModel):
    """Every training knob; load from YAML with `load_train_config`. Defaults follow mlx-lm."""

    model_config = ConfigDict(extra="forbid")

    fine_tune_type: Literal["lora", "dora", "full"] = "lora"
    optimizer: Literal["adam", "adamw", "sgd", "adafactor", "muon"] = "adam"
    optimizer_config: dict[str, Any] = Field(default_factory=dict)
    learning_rate: float = Field(default=1e-5, gt=0)
    # mlx-lm's schedule dict, e.g. {"name": "cosine_decay", "arguments": [1e-5, 1000], "warmup": 100}.
    lr_schedule: dict[str, Any] | None = None
    iters: int = Field(default=100, gt=0)
    batch_size: int = Field(default=4, gt=0)
    val_batches: int = Field(default=25, ge=-1)
    steps_per_report: int = Field(default=10, gt=0)
    steps_per_eval: int = Field(default=200, gt=0)
    save_every: int = Field(default=100, gt=0)
    max_seq_length: int = Field(default=2048, gt=1)
    # Transformer blocks to adapt, counted from the top; -1 means all of them.
    num_layers: int = Field(default=16, ge=-1)
    lora_parameters: LoraParameters = Field(default_factory=LoraParameters)
    grad_checkpoint: bool = False
    grad_accumulation_steps: int = Field(default=1, gt=0)
    seed: int = 0
    resume_adapter_file: Path | None = None
    # "assistant": loss on every assistant turn (text, tool calls, end token); "all": every token.
    train_on: Literal["assistant", "all"] = "assistant"
    # After training, report the loss on test.jsonl (when it exists).
    test: bool = False
    test_batches: int = Field(default=-1, ge=-1)


# Flat keyword overrides that live inside lora_parameters.
_LORA_OVERRIDES = {"rank", "scale", "dropout"}


def load_train_config(path: Path | None = None, **overrides: Any) -> TrainConfig:
    """TrainConfig from a YAML file (optional) with keyword overrides on top; None values are ignored.

    `rank`, `scale` and `dropout` may be given flat; they go into lora_parameters. Raises
    TrainerError `file: field X: reason` for an unknown key or a bad value.
    """
    data: dict[str, Any] = {}
    source = str(path) if path is not None else "train config"
    if path is not None:
        if not Path(path).is_file():
            raise TrainerError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f":{mark.line + 1}" if mark is not None else ""
            raise TrainerError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise TrainerError(f"{path}: expected a mapping of option: value")
        data = dict(loaded or {})
    for key, value in overrides.items():
        if value is None:
            continue
        if key in _LORA_OVERRIDES:
            lora = dict(data.get("lora_parameters") or {})
            lora[key] = value
            data["lora_parameters"] = lora
        else:
            data[key] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise TrainerError(describe_validation_error(error, source)) from None


class MetricRecord(BaseModel):
    """One line of metrics.jsonl: a training report (every steps_per_report) or a validation."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["train", "val", "test"]
    iteration: int
    loss: float
    learning_rate: float | None = None
    iterations_per_second: float | None = None
    tokens_per_second: float | None = None
    trained_tokens: int | None = None
    peak_memory_gb: float | None = None
    seconds: float | None = None
    time: datetime = Field(default_factory=utcnow)


class TrainResult(BaseModel):
    """What `train` produced; also stored inside distill_train.json."""

    model_config = ConfigDict(extra="forbid")

    adapter_path: str
    adapter_file: str
    metrics_file: str
    plot_file: str | None
    info_file: str
    iterations: int
    train_examples: int
    valid_examples: int
    trained_tokens: int
    first_train_loss: float | None = None
    final_train_loss: float | None = None
    first_val_loss: float | None = None
    final_val_loss: float | None = None
    test_loss: float | None = None
    seconds: float
    # The BLAS the training process ran on (teachers.mlx_server.blas_in_use); "" in older results.
    blas: str = ""


class DataFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str
    lines: int


class TrainInfo(Record):
    """distill_train.json: everything needed to reproduce a training run."""

    model: str
    model_files: dict[str, str] = Field(default_factory=dict)
    data_dir: str
    data_files: dict[str, DataFile]
    config: TrainConfig
    config_sha256: str
    versions: dict[str, str]
    command: list[str] = Field(default_factory=list)
    started_at: datetime
    finished_at: datetime
    result: TrainResult


class TrainJob(BaseModel):
    """One run's inputs, checked; also what the training child process is given."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    model: str
    adapter_path: Path
    config: TrainConfig


class FuseResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    save_path: str
    fused_modules: int


# --- the command -----------------------------------------------------------------------------


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
        return _train_in_child(job, callback, on_tokenize)
    return _run(job, callback, on_tokenize)


def _check_data_dir(data: Path) -> None:
    if not data.is_dir():
        raise TrainerError(f"{data}: data directory not found")
    train_file = data / "train.jsonl"
    if not train_file.is_file() or not train_file.read_text(encoding="utf-8").strip():
        raise TrainerError(f"{data}: no training examples in train.jsonl (run distill convert first)")


def _run(job: TrainJob, callback: TrainingCallback | None, on_tokenize: TokenizeCallback | None) -> TrainResult:
    """Load, train, test, record: mlx-lm lora.py's `run` with distill's data and records."""
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
    _write_info(job, result, started_at)
    return result


def _seed(seed: int) -> None:
    import mlx.core as mx
    import numpy as np

    np.random.seed(seed)
    mx.random.seed(seed)


def _load_model(model_source: str) -> tuple[Any, Any]:
    from mlx_lm.utils import load

    try:
        return load(model_source)
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
    _write_configs(adapter_path, model_source, config)
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


def _write_configs(adapter_path: Path, model_source: str, config: TrainConfig) -> None:
    adapter_path.mkdir(parents=True, exist_ok=True)
    _write_adapter_config(adapter_path, model_source, config)
    config_yaml = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    (adapter_path / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")


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


def _write_info(job: TrainJob, result: TrainResult, started_at: datetime) -> None:
    data = job.data
    info = TrainInfo(
        model=job.model,
        model_files=_model_fingerprint(job.model),
        data_dir=str(data),
        data_files={name: _data_file(data / name) for name in SPLIT_FILES if (data / name).exists()},
        config=job.config,
        config_sha256=hashlib.sha256(canonical_json(job.config.model_dump(mode="json")).encode()).hexdigest(),
        versions=_versions(),
        command=list(sys.argv),
        started_at=started_at,
        finished_at=utcnow(),
        result=result,
    )
    Path(result.info_file).write_text(info.model_dump_json(indent=2) + "\n", encoding="utf-8")


def _flatten(tree: Any) -> list[tuple[str, Any]]:
    from mlx.utils import tree_flatten

    return tree_flatten(tree)


def _write_adapter_config(adapter_path: Path, model_source: str, config: TrainConfig) -> None:
    # The keys mlx_lm.load(adapter_path=...) / mlx_lm.server --adapter-path / fuse read, plus the
    # rest of the config for humans.
    body = config.model_dump(mode="json")
    body["lora_parameters"] = config.lora_parameters.model_dump(exclude_none=True)
    body["model"] = model_source
    (adapter_path / "adapter_config.json").write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")


def _data_file(path: Path) -> DataFile:
    digest = hashlib.sha256()
    lines = 0
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
            lines += chunk.count(b"\n")
    return DataFile(sha256=digest.hexdigest(), lines=lines)


def _model_fingerprint(model_source: str) -> dict[str, str]:
    """Hashes of a local model's small files (weights are too large to hash on every run)."""
    root = Path(model_source)
    if not root.is_dir():
        return {}
    prints = {}
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (root / name).is_file():
            prints[name] = hashlib.sha256((root / name).read_bytes()).hexdigest()
    for weights in sorted(root.glob("*.safetensors")):
        prints[weights.name] = f"{weights.stat().st_size} bytes"
    return prints


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for package in ("mlx", "mlx-lm", "transformers", "distill"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


# --- progress and metrics --------------------------------------------------------------------


class MetricsWriter(TrainingCallback):
    """metrics.jsonl from mlx-lm's train and validation reports, each handed on to `wrapped_callback`.

    The same shape as mlx-lm's own WandBCallback: record, then pass the report on (here to the
    display the CLI passes in). Use it as a context manager around the training loop.
    """

    def __init__(self, path: Path, wrapped_callback: TrainingCallback | None = None) -> None:
        self.path = Path(path)
        self.wrapped_callback = wrapped_callback
        self.records: list[MetricRecord] = []
        self._handle: Any = None

    def __enter__(self) -> MetricsWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A new run starts a new metrics file (a resumed run's history is in its parent's dir).
        self._handle = self.path.open("w", encoding="utf-8")
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()
        self._handle = None

    def record(self, row: MetricRecord) -> None:
        self.records.append(row)
        self._handle.write(row.model_dump_json() + "\n")
        self._handle.flush()  # a crashed run keeps every report so far

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        self.record(
            MetricRecord(
                kind="train",
                iteration=int(train_info["iteration"]),
                loss=float(train_info["train_loss"]),
                learning_rate=float(train_info["learning_rate"]) if "learning_rate" in train_info else None,
                iterations_per_second=float(train_info.get("iterations_per_second", 0.0)),
                tokens_per_second=float(train_info.get("tokens_per_second", 0.0)),
                trained_tokens=int(train_info.get("trained_tokens", 0)),
                peak_memory_gb=round(float(train_info.get("peak_memory", 0.0)), 4),
            )
        )
        if self.wrapped_callback is not None:
            self.wrapped_callback.on_train_loss_report(train_info)

    def on_val_loss_report(self, val_info: dict[str, Any]) -> None:
        # mlx-lm runs validation before iteration `it`'s step, prints "Iter it: Val loss" and
        # reports it - 1 (steps done) to callbacks; the record keeps the number the console showed,
        # so the plot and metrics.jsonl agree with what the user read.
        val_info = {**val_info, "iteration": int(val_info["iteration"]) + 1}
        self.record(
            MetricRecord(
                kind="val",
                iteration=int(val_info["iteration"]),
                loss=float(val_info["val_loss"]),
                seconds=float(val_info.get("val_time", 0.0)),
            )
        )
        if self.wrapped_callback is not None:
            self.wrapped_callback.on_val_loss_report(val_info)


def read_metrics(metrics_file: Path) -> list[MetricRecord]:
    """The records of a metrics.jsonl; TrainerError `file:line: ...` for a line that is not one."""
    rows = []
    for number, data in iter_jsonl(Path(metrics_file)):
        if isinstance(data, LineError):
            raise TrainerError(str(data))
        try:
            rows.append(MetricRecord.model_validate(data))
        except ValidationError as error:
            raise TrainerError(str(line_error(str(metrics_file), number, error))) from None
    return rows


def plot_losses(metrics_file: Path, png: Path) -> Path | None:
    """Train and validation loss against iteration as a PNG; None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_file) if Path(metrics_file).exists() else []
    if not rows:
        return None
    figure, axes = plt.subplots(figsize=(7, 4))
    for kind, style in (("train", "-o"), ("val", "-s")):
        points = [(r.iteration, r.loss) for r in rows if r.kind == kind]
        if points:
            axes.plot(*zip(*points), style, markersize=3, label=f"{kind} loss")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss (assistant tokens)")
    axes.set_title("distill train")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png


# --- fusing ------------------------------------------------------------------------------------


def fuse(
    model: str | Path,
    adapter_path: Path,
    save_path: Path,
    *,
    dequantize: bool = False,
) -> FuseResult:
    """Merge a trained adapter into the base model and save a standalone model directory.

    The same steps as `mlx_lm fuse` (load with the adapter, fuse each adapted layer, save).
    """
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import dequantize_model, load, save

    model_source = check_model_source(model)
    adapter_path = Path(adapter_path)
    if not (adapter_path / ADAPTER_FILE).is_file() or not (adapter_path / "adapter_config.json").is_file():
        raise TrainerError(f"{adapter_path}: no {ADAPTER_FILE} + adapter_config.json here (run distill train first)")
    try:
        loaded, tokenizer, config = load(model_source, adapter_path=str(adapter_path), return_config=True)
    except Exception as error:  # noqa: BLE001 - a mismatched adapter or model is the user's input
        raise TrainerError(f"{adapter_path}: cannot apply this adapter to {model_source} ({error})") from None
    fused = [
        (name, module.fuse(dequantize=dequantize)) for name, module in loaded.named_modules() if hasattr(module, "fuse")
    ]
    if fused:
        loaded.update_modules(tree_unflatten(fused))
    if dequantize:
        loaded = dequantize_model(loaded)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    save_path = Path(save_path)
    save(save_path, model_source, loaded, tokenizer, config, donate_model=False)
    return FuseResult(save_path=str(save_path), fused_modules=len(fused))


# --- running in a child process --------------------------------------------------------------


class _ChildJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: TrainJob
    # The write end of a pipe the child sends its events down (see _Relay), as JSON lines.
    events_fd: int
    relay_reports: bool
    relay_tokenize: bool


class _ChildEvent(BaseModel):
    """One line from the training child: a report for the callbacks, or the error that ended it."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["train", "val", "tokenize", "error"]
    info: dict[str, Any] = Field(default_factory=dict)
    message: str = ""


def _train_in_child(job: TrainJob, callback: TrainingCallback | None, on_tokenize: TokenizeCallback | None) -> TrainResult:
    adapter_path = job.adapter_path
    adapter_path.mkdir(parents=True, exist_ok=True)
    job_file = adapter_path / ".train_job.json"
    read_end, write_end = os.pipe()
    child_job = _ChildJob(
        job=job, events_fd=write_end, relay_reports=callback is not None, relay_tokenize=on_tokenize is not None
    )
    job_file.write_text(child_job.model_dump_json(), encoding="utf-8")
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "distill.trainer.train", str(job_file)], env=mlx_child_env(), pass_fds=(write_end,)
        )
    finally:
        os.close(write_end)
    try:
        error = _follow_child(read_end, callback, on_tokenize)
        code = child.wait()
    finally:
        if child.poll() is None:  # the caller's callback raised (Ctrl+C): the child goes too
            child.terminate()
            child.wait()
        job_file.unlink(missing_ok=True)
    if error or code != 0:
        raise TrainerError(error or f"the training process exited with code {code}")
    return TrainInfo.model_validate_json((adapter_path / INFO_FILE).read_text(encoding="utf-8")).result


def _follow_child(read_end: int, callback: TrainingCallback | None, on_tokenize: TokenizeCallback | None) -> str:
    """Hand the child's reports to this process's callbacks until it closes the pipe; its error, if any."""
    error = ""
    with os.fdopen(read_end, encoding="utf-8") as events:
        for line in events:
            event = _ChildEvent.model_validate_json(line)
            if event.kind == "error":
                error = event.message
            elif event.kind == "tokenize" and on_tokenize is not None:
                on_tokenize(event.info["name"], event.info["done"], event.info["total"])
            elif event.kind == "train" and callback is not None:
                callback.on_train_loss_report(event.info)
            elif event.kind == "val" and callback is not None:
                callback.on_val_loss_report(event.info)
    return error


class _Relay(TrainingCallback):
    """The child's side: every report, and the error that ends it, as one JSON line down the pipe."""

    def __init__(self, events_fd: int) -> None:
        self._pipe = os.fdopen(events_fd, "w", encoding="utf-8")

    def send(self, event: _ChildEvent) -> None:
        self._pipe.write(event.model_dump_json() + "\n")
        self._pipe.flush()

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        self.send(_ChildEvent(kind="train", info=train_info))

    def on_val_loss_report(self, val_info: dict[str, Any]) -> None:
        self.send(_ChildEvent(kind="val", info=val_info))

    def on_tokenize(self, name: str, done: int, total: int) -> None:
        self.send(_ChildEvent(kind="tokenize", info={"name": name, "done": done, "total": total}))

    def close(self) -> None:
        self._pipe.close()


def _child_main(job_file: str) -> int:
    """The training child's entry point: train here, send reports and errors to the parent."""
    logging.basicConfig(format="%(message)s")
    logging.getLogger("distill").setLevel(logging.INFO)
    child_job = _ChildJob.model_validate_json(Path(job_file).read_text(encoding="utf-8"))
    relay = _Relay(child_job.events_fd)
    try:
        _run(
            child_job.job,
            callback=relay if child_job.relay_reports else None,
            on_tokenize=relay.on_tokenize if child_job.relay_tokenize else None,
        )
    except TrainerError as error:
        relay.send(_ChildEvent(kind="error", message=str(error)))
        return 2
    finally:
        relay.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1]))
