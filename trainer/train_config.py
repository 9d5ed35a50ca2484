"""What a training run is given: the config (mlx-lm's key names, from flags or a YAML file), the
checked inputs of one run, and the names of the files it writes next to the adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from distill.shared.errors import describe_validation_error
from distill.trainer.errors import TrainerError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class TrainJob(BaseModel):
    """One run's inputs, checked; also what the training child process is given."""

    model_config = ConfigDict(extra="forbid")

    data: Path
    model: str
    adapter_path: Path
    config: TrainConfig
