"""Training progress as data: every report mlx-lm's trainer makes, written to metrics.jsonl as it
happens and handed on to the caller's callback, and the loss curves drawn from that file."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from mlx_lm.tuner.callbacks import TrainingCallback
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distill.shared.errors import LineError, line_error
from distill.shared.jsonl import iter_jsonl
from distill.shared.records import utcnow
from distill.trainer.errors import TrainerError


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
            axes.plot(*zip(*points, strict=True), style, markersize=3, label=f"{kind} loss")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss (assistant tokens)")
    axes.set_title("distill train")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
