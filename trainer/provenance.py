"""What a training run leaves beside its adapter to be reproduced: the adapter config mlx-lm loads,
the effective YAML config, and distill_train.json (config and data hashes, versions, result)."""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from distill.shared.records import Record, utcnow
from distill.trainer.render import canonical_json
from distill.trainer.train_config import CONFIG_FILE, SPLIT_FILES, TrainConfig, TrainJob


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


def write_configs(adapter_path: Path, model_source: str, config: TrainConfig) -> None:
    adapter_path.mkdir(parents=True, exist_ok=True)
    _write_adapter_config(adapter_path, model_source, config)
    config_yaml = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    (adapter_path / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")


def write_info(job: TrainJob, result: TrainResult, started_at: datetime) -> None:
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
