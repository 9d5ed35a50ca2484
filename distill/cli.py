"""The `distill` command: a thin shell over the roles' public functions."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from shared.settings import ConfigError, GenerationLimits, TeacherConfig, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Distil a teacher's real tool use into training data, and train a student on it.")
console_out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="TOML config (default: ./distill.toml if present).")]


@app.command()
def generate(
    prompts: Annotated[Path, typer.Argument(help="JSONL prompts file.")],
    run: Annotated[Optional[str], typer.Option(help="Run name; output goes to OUT_DIR/RUN.")] = None,
    workspace: Annotated[Optional[Path], typer.Option(help="Folder the tools work in (read-only).")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="Teacher base URL (OpenAI-compatible, ending in /v1).")] = None,
    teacher_model: Annotated[Optional[str], typer.Option(help="Model name to send to the teacher.")] = None,
    config: ConfigOption = None,
    redis_url: Annotated[Optional[str], typer.Option(help="Use this Redis instead of an embedded one.")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster instead of a local one.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Where runs are written.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.")] = None,
    max_tool_calls: Annotated[Optional[int], typer.Option(help="Loop guard: tool calls per conversation.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Conversations in flight over the whole run.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray worker actors.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="local-first | spread | local-only | cloud-only.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="List bad prompt lines and go on without them.")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live progress bar.")] = False,
) -> None:
    """Run the teacher on every prompt with real tools; write one record per prompt."""
    from coordinator.collector import OutputError
    from coordinator.progress import endpoints_table, summary_table
    from coordinator.prompts import PromptsFileError
    from coordinator.run import RedisLost, RunRefused
    from coordinator.run import generate as run_generate

    try:
        settings = load_settings(
            config,
            run=run,
            workspace=workspace,
            redis_url=redis_url,
            ray_address=ray_address,
            out_dir=out_dir,
            limit=limit,
            concurrency=concurrency,
            workers=workers,
            policy=policy,
            skip_invalid=skip_invalid or None,
        )
        if max_tool_calls is not None:
            settings.limits = GenerationLimits.model_validate({**settings.limits.model_dump(), "max_tool_calls": max_tool_calls})
        if teacher or teacher_model:
            if not (teacher and teacher_model):
                fail("--teacher and --teacher-model go together")
            settings.teachers = [TeacherConfig(name="cli", base_url=teacher, model=teacher_model)]
        if not settings.workspace.is_dir():
            fail(f"workspace {settings.workspace} is not a folder")
        result = run_generate(settings, prompts, show_progress=not no_progress)
    except (ConfigError, PromptsFileError) as error:
        fail(str(error))
    except (OutputError, RedisLost) as error:
        fail(f"{error}; the run stopped cleanly and resumes when you run the same command again", code=3)
    except RunRefused as refused:
        if refused.report is not None:
            for bad in refused.report.bad_lines:
                err.print(str(bad), highlight=False, markup=False, soft_wrap=True)
        fail(str(refused))
    except ValueError as error:  # pydantic validation of a flag value
        fail(str(error).splitlines()[0])
    if result.check.bad_count:
        err.print(f"skipped {result.check.bad_count} bad prompt line(s):")
        for bad in result.check.bad_lines:
            err.print(f"  {bad}", highlight=False, markup=False, soft_wrap=True)
    console_out.print(summary_table(result))
    console_out.print(endpoints_table(result.endpoints, result.policy))
    if not result.complete:
        raise typer.Exit(1)


@app.command()
def status(
    run: Annotated[str, typer.Option(help="Run name.")],
    out_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = Path("data/runs"),
) -> None:
    """Show a run's numbers, live or finished."""
    from coordinator.progress import status_tables

    run_dir = out_dir / run
    if not run_dir.is_dir():
        fail(f"no run {run!r} in {out_dir}")
    for table in status_tables(run_dir):
        console_out.print(table)


teacher_app = typer.Typer(no_args_is_help=True, help="Serve and prepare local teachers.")
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("serve")
def teacher_serve(
    model: Annotated[str, typer.Option(help="Local model folder (or a repo already in the local cache).")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    adapter_path: Annotated[Optional[str], typer.Option(help="LoRA adapter folder to serve with the model.")] = None,
    prompt_cache_bytes: Annotated[Optional[int], typer.Option(help="Cap on the prompt cache's memory.")] = 2 * 1024**3,
    prompt_cache_size: Annotated[Optional[int], typer.Option(help="Cap on cached prompts.")] = 4,
    decode_concurrency: Annotated[Optional[int], typer.Option(help="Sequences decoded at once.")] = None,
    prompt_concurrency: Annotated[Optional[int], typer.Option(help="Prompts prefilled at once.")] = None,
    log_dir: Annotated[Path, typer.Option(help="Where the server's log goes.")] = Path("data/logs"),
) -> None:
    """Run mlx_lm.server on loopback, restarting it whenever it dies."""
    import logging

    from shared.mlx_server import MlxServerError
    from worker.supervisor import ServeOptions, TeacherSupervisor, wait_forever

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    options = ServeOptions(model=model, port=port, adapter_path=adapter_path, prompt_cache_bytes=prompt_cache_bytes,
                           prompt_cache_size=prompt_cache_size, decode_concurrency=decode_concurrency,
                           prompt_concurrency=prompt_concurrency, log_dir=log_dir)
    supervisor = TeacherSupervisor(options)
    try:
        url = supervisor.start()
    except MlxServerError as error:
        fail(str(error).splitlines()[0])
    console_out.print(f"teacher {model} answers at {url} (send model {model!r}); Ctrl+C stops it")
    wait_forever(supervisor)


@teacher_app.command("bundle")
def teacher_bundle(
    out: Annotated[Path, typer.Option(help="Model folder to write.")] = Path("data/models/smollm2-135m-instruct"),
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if an up-to-date bundle is there.")] = False,
    quantized: Annotated[bool, typer.Option("--quantized", help="Keep 4-bit weights (smaller, slower on CPU).")] = False,
) -> None:
    """Build an mlx-lm model folder for SmolLM2-135M-Instruct (with a tool-calling template)."""
    from shared.bundle import BundleError, bundle_smollm2

    try:
        path = bundle_smollm2(out, dequantize=not quantized, force=force)
    except BundleError as error:
        fail(str(error))
    console_out.print(f"bundled model: {path}")


@app.command("sim-teacher")
def sim_teacher(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8765,
    latency: Annotated[float, typer.Option(help="Seconds per request.")] = 0.0,
    tool_rounds: Annotated[int, typer.Option(help="Tool calls before the answer.")] = 2,
    fail_rate: Annotated[float, typer.Option(help="Share of requests answered HTTP 500.")] = 0.0,
) -> None:
    """Serve the simulated OpenAI-compatible teacher (for trying distill without a model)."""
    from shared.sim_teacher import SimTeacher, SimTeacherConfig

    teacher = SimTeacher(SimTeacherConfig(latency_s=latency, tool_rounds=tool_rounds, fail_rate=fail_rate))
    url = teacher.start(port)
    console_out.print(f"simulated teacher at {url} (model 'sim-teacher'); Ctrl+C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        teacher.stop()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
