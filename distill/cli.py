"""The `distill` command: a thin shell over the roles' public functions."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from distill.demo_options import DEMO_KINDS, DemoOptions
from distill.shared.errors import DistillError
from distill.shared.settings import DEFAULT_OUT_DIR, ConfigError, GenerationLimits, TeacherConfig, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Distil a teacher's real tool use into training data, and train a student on it.")
console_out = Console()
T = TypeVar("T")
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """One `error: ...` line and the exit code (README, Exit codes)."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def endpoint_from_flags(config_class: type[T], flag: str, **fields: Any) -> T:
    """A TeacherConfig/JudgeConfig built from flags; a bad value ends as one line naming the flag."""
    from pydantic import ValidationError

    from distill.shared.errors import describe_validation_error

    try:
        return config_class.model_validate(fields)  # type: ignore[attr-defined]
    except ValidationError as error:
        fail(describe_validation_error(error, flag))
        raise


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console_out.print(f"distill {version('distill')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print distill's version and exit.")] = False,
) -> None:
    """Distil a teacher's real tool use into training data, and train a student on it."""


# What to do after Ctrl+C: one line, so the user knows whether anything was lost.
RESUME_GENERATE = "interrupted: run the same command again to resume; the conversations written so far are kept"
RESUME_DEMO = "interrupted: run the same command again to start the demo over (its stages are not resumed)"


@contextmanager
def resume_hint(line: str) -> Iterator[None]:
    """Ctrl+C ends the command with `line` and exit code 130 (click would otherwise exit silently)."""
    try:
        yield
    except KeyboardInterrupt:
        err.print(line, highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


ConfigOption = Annotated[Optional[Path], typer.Option("--config", help="TOML config (default: ./distill.toml if present).")]
McpOption = Annotated[list[str] | None, typer.Option(
    "--mcp", metavar="NAME=COMMAND|URL",
    help="An MCP server whose tools the teacher is offered, beside the config's mcp_servers: NAME=COMMAND [ARGS...] "
         "(stdio) or NAME=URL (streamable HTTP); repeatable. Its tools are named NAME_TOOL.")]


def with_mcp_flags(servers: list[Any], flags: list[str] | None) -> list[Any]:
    """The config's MCP servers plus those of `--mcp` flags (names unique over both)."""
    from distill.shared.mcp_config import McpSetupError, parse_mcp_flag, unique_servers

    try:
        return unique_servers([*servers, *(parse_mcp_flag(flag) for flag in flags or [])])
    except ValueError as error:
        raise McpSetupError(f"--mcp: {error}") from None


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
    concurrency: Annotated[Optional[int], typer.Option(help="Conversations in flight over the whole run (default: the teachers' caps plus a quarter).")] = None,
    workers: Annotated[Optional[int], typer.Option(help="Ray worker actors.")] = None,
    policy: Annotated[Optional[str], typer.Option(help="local-first | spread | local-only | cloud-only.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="List bad prompt lines and go on without them.")] = False,
    samples: Annotated[Optional[int], typer.Option(help="Run each prompt N times (at the teacher's temperature); one record per sample.")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature for --teacher.")] = None,
    mcp: McpOption = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live progress bar.")] = False,
) -> None:
    """Run the teacher on every prompt with real tools; write one record per prompt and sample."""
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
            samples=samples,
        )
        if max_tool_calls is not None:
            settings.limits = GenerationLimits.model_validate({**settings.limits.model_dump(), "max_tool_calls": max_tool_calls})
        if teacher or teacher_model:
            if not (teacher and teacher_model):
                fail("--teacher and --teacher-model go together")
            settings.teachers = [TeacherConfig(name="cli", base_url=teacher, model=teacher_model, temperature=temperature)]
        elif temperature is not None:
            settings.teachers = [TeacherConfig.model_validate({**t.model_dump(), "temperature": temperature})
                                 for t in settings.teachers]
        settings.mcp_servers = with_mcp_flags(settings.mcp_servers, mcp)
    except ValueError as error:  # pydantic validation of a flag value
        fail(str(error).splitlines()[0])
    with resume_hint(RESUME_GENERATE):
        _generate_and_show(settings, prompts, no_progress=no_progress)


def _generate_and_show(settings: Any, prompts: Path, *, no_progress: bool) -> None:
    """Run `distill generate`'s job and show its tables; exit 1 when prompts are left unfinished."""
    from distill.coordinator.collector import OutputError
    from distill.coordinator.run import RedisLost, RunRefused
    from distill.coordinator.run import generate as run_generate
    from distill.views import endpoints_table, print_with_paths, run_bar, summary_paths, summary_table, tools_table

    if not settings.workspace.is_dir():
        fail(f"workspace {settings.workspace} is not a folder")
    try:
        with run_bar(None if no_progress else err) as on_tick:
            result = run_generate(settings, prompts, on_tick=on_tick)
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
    console_out.print(endpoints_table(result.endpoints, result.policy))
    if result.tools:
        console_out.print(tools_table(result.tools, result.tool_processes))
    print_with_paths(console_out, summary_table(result), summary_paths(result))
    if not result.complete:
        raise typer.Exit(1)


@app.command()
def status(
    run: Annotated[str, typer.Option(help="Run name.")],
    out_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = DEFAULT_OUT_DIR,
) -> None:
    """Show a run's numbers, live or finished."""
    from distill.coordinator.progress import run_status
    from distill.views import print_with_paths, status_tables

    run_dir = out_dir / run
    if not run_dir.is_dir():
        fail(f"no run {run!r} in {out_dir}")
    first, *others = status_tables(run_status(run_dir))
    print_with_paths(console_out, first, [("folder", run_dir)])
    for table in others:
        console_out.print(table)


@app.command()
def verify(
    run: Annotated[str, typer.Argument(help="A run folder, or a run name under --out-dir.")],
    judge: Annotated[Optional[str], typer.Option(help="Judge base URL (OpenAI-compatible, ending in /v1); default: the \\[judge] table of the config.")] = None,
    judge_model: Annotated[Optional[str], typer.Option(help="Model name to send to the judge.")] = None,
    rubric: Annotated[Optional[Path], typer.Option(help="Text file: what a passing answer must do.")] = None,
    config: ConfigOption = None,
    out_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = DEFAULT_OUT_DIR,
    redis_url: Annotated[Optional[str], typer.Option(help="Share the judge's caps with runs on this Redis (default: a private one).")] = None,
    rejudge: Annotated[bool, typer.Option("--rejudge", help="Judge again the records a judge already decided.")] = False,
) -> None:
    """Judge a run's answers with an LLM; verdicts go to RUN/verdicts.jsonl (references are never overruled)."""
    from distill.coordinator.verify import verify_run
    from distill.shared.settings import JudgeConfig
    from distill.views import print_with_paths, verify_paths, verify_progress, verify_table

    run_dir = Path(run) if Path(run).is_dir() else out_dir / run
    if not run_dir.is_dir():
        fail(f"no run folder {run} (nor {out_dir / run})")
    settings = load_settings(config)
    if judge or judge_model:
        if not (judge and judge_model):
            fail("--judge and --judge-model go together")
        kept = settings.judge.model_dump(exclude={"name", "base_url", "model"}) if settings.judge else {}
        settings.judge = endpoint_from_flags(JudgeConfig, "--judge", **kept, base_url=judge, model=judge_model)
    if settings.judge is None:
        fail("no judge: give --judge URL --judge-model MODEL, or a [judge] table in distill.toml")
        return
    if rubric is not None:
        settings.judge = settings.judge.model_copy(update={"rubric_file": rubric})
    with verify_progress(err) as on_verdict:
        result = verify_run(run_dir, settings.judge, redis_url=redis_url, rejudge=rejudge, on_verdict=on_verdict)
    print_with_paths(console_out, verify_table(result), verify_paths(result))
    for detail in result.details[:20]:
        err.print(f"  {detail}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="A run folder or a conversations.jsonl file.")],
    tokenizer: Annotated[str, typer.Option(help="The student model (folder) whose chat template renders the data.")],
    out: Annotated[Path, typer.Option(help="Where train/valid/test.jsonl and report.json go.")],
    max_tool_calls: Annotated[Optional[int], typer.Option(
        help="Drop trajectories with more tool calls (default: the run's own limit from its manifest).")] = None,
    max_seq_length: Annotated[int, typer.Option(help="Drop trajectories longer than this many tokens.")] = 2048,
    split: Annotated[str, typer.Option(help="train,valid,test ratios.")] = "0.8,0.1,0.1",
    format: Annotated[str, typer.Option("--format", help="chat ({messages, tools}) or text (rendered).")] = "chat",
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Count bad lines instead of stopping.")] = False,
    require_verified: Annotated[bool, typer.Option("--require-verified", help="Keep only trajectories whose answer passed verification.")] = False,
    best_of: Annotated[bool, typer.Option("--best-of", help="One trajectory per prompt: passing, fewest tool calls, then shortest.")] = False,
    reasoning: Annotated[str, typer.Option(help="The teacher's reasoning: keep (rendered as the student's template expects), drop, or auto (keep for a thinking template such as Qwen3).")] = "auto",
    drop_redacted: Annotated[bool, typer.Option("--drop-redacted", help="Leave out conversations from which secrets were withheld.")] = False,
    placeholder_results: Annotated[bool, typer.Option(
        "--placeholder-results", help="Write the same kept conversations with every tool result replaced by "
        "[Tool execution completed] (after the filters): the counterfactual dataset, on purpose.")] = False,
) -> None:
    """Turn conversations into mlx-lm training data in the student's own chat format."""
    from distill.trainer.conversation_files import conversations_path
    from distill.trainer.convert import convert as run_convert
    from distill.views import convert_progress, print_convert

    try:
        ratios = tuple(float(part) for part in split.split(","))
        if len(ratios) != 3 or format not in ("chat", "text") or reasoning not in ("auto", "keep", "drop"):
            raise ValueError
    except ValueError:
        fail("--split takes three ratios like 0.8,0.1,0.1, --format is chat or text, --reasoning is auto, keep or drop")
    with convert_progress(err, conversations_path(source)) as on_progress:
        report = run_convert(source, tokenizer, out, max_tool_calls=max_tool_calls, max_seq_length=max_seq_length,
                             split=ratios, format=format, skip_invalid=skip_invalid,  # type: ignore[arg-type]
                             require_verified=require_verified, best_of=best_of, reasoning=reasoning,  # type: ignore[arg-type]
                             on_progress=on_progress, drop_redacted=drop_redacted,
                             placeholder_results=placeholder_results)
    print_convert(console_out, report)


@app.command()
def repair(
    source: Annotated[Path, typer.Argument(help="Conversations: a run folder, distill records or plain chat lines.")],
    workspace: Annotated[Path, typer.Option(help="Folder the tools replay in (read-only).")],
    out: Annotated[Path, typer.Option(help="Repaired conversations (plain chat lines); the report goes beside it.")],
    custom_tool: Annotated[Optional[list[str]], typer.Option(
        "--custom-tool", help="A tool of your own, package.module:function (repeatable).")] = None,
    on_changed: Annotated[str, typer.Option(
        "--on-changed", help="Where a real result differs today: keep the original (default), or cut: write "
        "today's and cut the conversation after it (continue it with --continue-with).")] = "keep",
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Count bad lines instead of stopping.")] = False,
    continue_with: Annotated[Optional[str], typer.Option(
        help="Teacher base URL: continue each repaired conversation from its first repaired result.")] = None,
    teacher_model: Annotated[Optional[str], typer.Option(help="Model name to send to --continue-with.")] = None,
    run: Annotated[Optional[str], typer.Option(help="Run name for --continue-with (default: OUT's name + -continued).")] = None,
    out_dir: Annotated[Optional[Path], typer.Option(help="Where --continue-with's run is written.")] = None,
    mcp: McpOption = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No live progress bar.")] = False,
) -> None:
    """Replay every tool call with the real tools, so placeholder results become real ones."""
    from distill.trainer.conversation_files import conversations_path
    from distill.trainer.repair import continuation_prompts
    from distill.trainer.repair import repair as run_repair
    from distill.views import convert_progress, print_with_paths, repair_paths, repair_table

    if (continue_with is None) != (teacher_model is None):
        fail("--continue-with and --teacher-model go together")
    servers = with_mcp_flags([], mcp)
    with convert_progress(err, conversations_path(source), verb="repair") as on_progress:
        report = run_repair(source, workspace, out, custom_tools=custom_tool or (), on_changed=on_changed,  # type: ignore[arg-type]
                            skip_invalid=skip_invalid, on_progress=on_progress, mcp_servers=servers)
    print_with_paths(console_out, repair_table(report), repair_paths(report))
    if continue_with is None or teacher_model is None:  # both or neither (checked above)
        return
    prompts = out.with_name(f"{out.stem}.continue.jsonl")
    plan = continuation_prompts(out, prompts)
    console_out.print(f"{plan.written} conversation(s) to continue from their first repaired result: {prompts}"
                      + (f"; {len(plan.skipped)} not continued" if plan.skipped else ""), highlight=False)
    for conversation_id, reason in plan.skipped[:5]:
        err.print(f"  not continued: {conversation_id}: {reason}", highlight=False, markup=False)
    if not plan.written:
        return
    try:
        settings = load_settings(None, run=run or f"{out.stem}-continued", workspace=workspace, out_dir=out_dir)
        settings.custom_tools = list(custom_tool or settings.custom_tools)
        settings.mcp_servers = servers or settings.mcp_servers
        settings.teachers = [TeacherConfig(name="continue", base_url=continue_with, model=teacher_model)]
    except ValueError as error:
        fail(str(error).splitlines()[0])
    with resume_hint(RESUME_GENERATE):
        _generate_and_show(settings, prompts, no_progress=no_progress)


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Folder with train.jsonl and valid.jsonl (from distill convert).")],
    model: Annotated[str, typer.Option(help="Student model folder.")],
    adapter_path: Annotated[Path, typer.Option(help="Where the adapter, metrics.jsonl and loss.png go.")],
    config: Annotated[Optional[Path], typer.Option(help="YAML training config (mlx-lm's keys).")] = None,
    fine_tune_type: Annotated[Optional[str], typer.Option(help="lora | dora | full.")] = None,
    iters: Annotated[Optional[int], typer.Option(help="Training iterations.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per batch.")] = None,
    learning_rate: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    rank: Annotated[Optional[int], typer.Option(help="LoRA rank.")] = None,
    scale: Annotated[Optional[float], typer.Option(help="LoRA scale.")] = None,
    dropout: Annotated[Optional[float], typer.Option(help="LoRA dropout.")] = None,
    num_layers: Annotated[Optional[int], typer.Option(help="Blocks to adapt from the top (-1: all).")] = None,
    max_seq_length: Annotated[Optional[int], typer.Option(help="Longest sequence in tokens.")] = None,
    grad_checkpoint: Annotated[Optional[bool], typer.Option("--grad-checkpoint/--no-grad-checkpoint")] = None,
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N iterations.")] = None,
    resume_adapter_file: Annotated[Optional[Path], typer.Option(help="Continue from this adapter file.")] = None,
) -> None:
    """Fine-tune the student with mlx-lm, with the loss on every assistant turn."""
    from distill.trainer.train import train as run_train
    from distill.trainer.train_config import load_train_config
    from distill.views import TrainDisplay, tokenize_progress, train_summary

    settings = load_train_config(
        config, fine_tune_type=fine_tune_type, iters=iters, batch_size=batch_size, learning_rate=learning_rate,
        rank=rank, scale=scale, dropout=dropout, num_layers=num_layers, max_seq_length=max_seq_length,
        grad_checkpoint=grad_checkpoint, save_every=save_every, resume_adapter_file=resume_adapter_file,
    )
    with tokenize_progress(err) as on_tokenize:
        # In a child process with OpenBLAS preloaded where it is installed but not loaded here.
        result = run_train(data, model, adapter_path, config=settings, callback=TrainDisplay(),
                           on_tokenize=on_tokenize)
    console_out.print(train_summary(result), highlight=False)


@app.command()
def fuse(
    model: Annotated[str, typer.Option(help="Student model folder.")],
    adapter_path: Annotated[Path, typer.Option(help="Adapter folder from distill train.")],
    save_path: Annotated[Path, typer.Option(help="Where the fused model goes.")],
    dequantize: Annotated[bool, typer.Option("--dequantize", help="Write full-precision weights.")] = False,
) -> None:
    """Fold an adapter into the model (mlx_lm fuse)."""
    from distill.trainer.fuse import fuse as run_fuse

    result = run_fuse(model, adapter_path, save_path, dequantize=dequantize)
    console_out.print(f"fused model: {result.save_path} ({result.fused_modules} modules)", highlight=False)


@app.command("eval")
def eval_command(
    prompts: Annotated[Path, typer.Option(help="Held-out prompts (JSONL; `expected` answers are scored).")],
    model: Annotated[Optional[str], typer.Option(help="Student model folder (leave out to evaluate only --teacher).")] = None,
    workspace: Annotated[Path, typer.Option(help="Folder the tools work in.")] = Path("."),
    adapter_path: Annotated[Optional[Path], typer.Option(help="Adapter to compare with the base model (named `adapter`).")] = None,
    adapter: Annotated[Optional[list[str]], typer.Option(
        help="NAME=PATH: an adapter to compare, by name; repeat for several (side by side with the base).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for eval.json and the PNG.")] = None,
    max_tool_calls: Annotated[Optional[int], typer.Option(
        help="Tool calls before a run counts as a loop (default: generation's limit).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 512,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.")] = None,
    no_base: Annotated[bool, typer.Option("--no-base", help="Skip the base model (adapter only).")] = False,
    teacher: Annotated[Optional[str], typer.Option(help="Also run this teacher (base URL ending in /v1) on the same prompts and tools.")] = None,
    teacher_model: Annotated[Optional[str], typer.Option(help="Model name to send to --teacher.")] = None,
    mcp: McpOption = None,
) -> None:
    """Run the student (base and each adapter), and the teacher if given, on held-out prompts: tool calls, loops,
    correct answers, in all and per question kind."""
    from distill.trainer.evaluate import evaluate
    from distill.views import eval_paths, eval_progress, eval_table, print_with_paths

    endpoint = None
    if teacher or teacher_model:
        if not (teacher and teacher_model):
            fail("--teacher and --teacher-model go together")
        endpoint = endpoint_from_flags(TeacherConfig, "--teacher", name="teacher", base_url=teacher, model=teacher_model,
                                       max_concurrency=1, max_tokens=max_tokens)
    if model is None and endpoint is None:
        fail("give --model (the student), --teacher with --teacher-model, or both")
    named = [_named_adapter(text) for text in adapter or []]
    with eval_progress(err) as on_prompt:
        report = evaluate(model, prompts, workspace, adapter_path=adapter_path, adapters=named, out=out,
                          max_tool_calls=max_tool_calls,
                          max_tokens=max_tokens, include_base=not no_base, teacher=endpoint, limit=limit,
                          on_prompt=on_prompt, mcp_servers=with_mcp_flags([], mcp))
    print_with_paths(console_out, eval_table(report), eval_paths(report))


def _named_adapter(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        fail(f"--adapter {text}: give NAME=PATH (for example real=out/adapter)")
    return name.strip(), Path(path.strip())


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo writes.")] = DemoOptions.out,
    teacher: Annotated[Optional[str], typer.Option(help="A real OpenAI-compatible teacher (base URL ending in /v1) "
                                                        "instead of the scripted one.")] = None,
    teacher_model: Annotated[Optional[str], typer.Option(help="Model name to send to --teacher.")] = None,
    student: Annotated[Optional[Path], typer.Option(help="Student model folder (default: the bundled SmolLM2-135M-Instruct).")] = None,
    workspace: Annotated[Optional[Path], typer.Option(help="Ask about this code base (default: distill's own source).")] = None,
    tasks: Annotated[int, typer.Option(help="Training questions.")] = DemoOptions.train_tasks,
    heldout: Annotated[int, typer.Option(help="Held-out questions for the evaluation.")] = DemoOptions.heldout_tasks,
    kinds: Annotated[str, typer.Option(help="Question kinds, comma-separated: defined, method, importers, params; "
                                            "chains: base, siblings, docstring.")] = ",".join(DEMO_KINDS),
    iters: Annotated[int, typer.Option(help="LoRA iterations.")] = DemoOptions.iters,
    seed: Annotated[int, typer.Option(help="Seed of the questions and their split.")] = DemoOptions.seed,
    view_after: Annotated[bool, typer.Option("--view", help="Open the viewer on what the demo made when it ends.")] = False,
    compare_placeholder: Annotated[bool, typer.Option(
        "--compare-placeholder", help="Also train an adapter on the same conversations with every tool result replaced "
        "by [Tool execution completed] (same iterations and seed) and evaluate it beside the others.")] = False,
) -> None:
    """The loop closing: questions with known answers -> real-tool conversations -> LoRA -> base vs adapter."""
    from distill.demo import check_options, run_demo
    from distill.views import print_demo_summary

    options = DemoOptions(out=out, teacher_url=teacher, teacher_model=teacher_model, student=student, workspace=workspace,
                          kinds=_kinds(kinds), train_tasks=tasks, heldout_tasks=heldout, iters=iters, seed=seed,
                          compare_placeholder=compare_placeholder)
    check_options(options)
    with resume_hint(RESUME_DEMO):
        result = run_demo(options, console=console_out)
    print_demo_summary(result, console_out)
    if view_after:
        _serve_viewer([result.out], port=0, no_open=False, tokenizer=None, index_dir=None)


def _kinds(text: str) -> list:
    from distill.coordinator.synth import KINDS

    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [k for k in chosen if k not in KINDS]
    if unknown or not chosen:
        fail(f"--kinds takes a comma-separated list of {', '.join(KINDS)}")
    return chosen


prompts_app = typer.Typer(no_args_is_help=True, help="Make prompts files.")
app.add_typer(prompts_app, name="prompts")


@prompts_app.command("synth")
def prompts_synth(
    workspace: Annotated[Path, typer.Argument(help="The code base to ask about (its Python files).")],
    out: Annotated[Path, typer.Option(help="Training questions (JSONL); the held-out ones go beside it as NAME.heldout.jsonl.")],
    n: Annotated[int, typer.Option("--n", help="Questions in all, training and held out.")] = 100,
    kinds: Annotated[str, typer.Option(help="Comma-separated: defined, method, importers, params (one call); "
                                        "base, siblings, docstring (chains of two).")] = "defined,method,importers,params,base,siblings,docstring",
    seed: Annotated[int, typer.Option(help="Same seed, same code: same files.")] = 0,
    heldout: Annotated[float, typer.Option(help="Share of the questions held out (their names never appear in training).")] = 0.2,
) -> None:
    """Questions with answers computed from the code (ast, no model): where is X defined, which file
    defines C.m, which files import M, what are f's parameters; and chains, where the second call
    needs the first's result: where is C's base class defined, which other top-level functions
    share f's file, what is the first line of f's docstring. Kinds are shared evenly and split
    train/held-out by the same ratio; a kind the code cannot fill is reported."""
    from distill.coordinator.synth import MIN_CALLS, synthesize
    from distill.views import print_with_paths

    report = synthesize(workspace, out, n=n, kinds=_kinds(kinds), seed=seed, heldout=heldout)
    table = Table(title=f"distill prompts synth: {report.files_scanned} Python files", header_style="bold")
    for column in ("kind", "calls needed", "possible", "train", "held out", ""):
        table.add_column(column, justify="right" if column not in ("kind", "") else "left")
    for kind, count in report.candidates.items():
        table.add_row(kind, str(MIN_CALLS[kind]), str(count), str(report.train.get(kind, 0)),
                      str(report.heldout.get(kind, 0)), report.shortfall.get(kind, ""))
    if report.excluded_for_overlap:
        table.caption = f"{report.excluded_for_overlap} left out: they name a held-out name"
    paths = [("train", report.train_file)] + ([("held out", report.heldout_file)] if report.heldout_file else [])
    print_with_paths(console_out, table, paths)
    if report.unparsable:
        err.print(f"{len(report.unparsable)} file(s) did not parse and were left out: {', '.join(report.unparsable[:5])}",
                  highlight=False)


@app.command()
def doctor(
    config: ConfigOption = None,
    redis_url: Annotated[Optional[str], typer.Option(help="Check this Redis instead of the embedded one.")] = None,
    ray_address: Annotated[Optional[str], typer.Option(help="Check this Ray cluster (HOST:6379, or auto on a node).")] = None,
    workspace: Annotated[Optional[Path], typer.Option(help="Folder the tools work in (read-only).")] = None,
    mcp: McpOption = None,
) -> None:
    """Check everything a run needs: Redis, Ray, teachers, keys, workspace, MCP servers, MLX, disk. Exit 1 if a required check fails."""
    from distill.coordinator.doctor import failed_required, run_doctor
    from distill.views import doctor_table

    try:
        settings = load_settings(config, redis_url=redis_url, ray_address=ray_address, workspace=workspace)
        settings.mcp_servers = with_mcp_flags(settings.mcp_servers, mcp)
    except ConfigError as error:
        fail(str(error))
    checks = run_doctor(settings)
    console_out.print(doctor_table(checks))
    failed = failed_required(checks)
    if failed:
        err.print(f"[bold red]{len(failed)} required check(s) failed:[/] {escape(', '.join(c.name for c in failed))}",
                  highlight=False)
        raise typer.Exit(1)
    console_out.print("[green]ready[/]: every required check passed", highlight=False)


@app.command()
def view(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Run folders, convert outputs, eval reports, or folders holding them (default: data/runs).")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).")] = 8000,
    no_open: Annotated[bool, typer.Option("--no-open", help="Don't open a browser.")] = False,
    tokenizer: Annotated[Optional[str], typer.Option(help="Student model folder for the token view (default: the one convert's report names).")] = None,
    index_dir: Annotated[Optional[Path], typer.Option(help="Where run indexes are kept between sessions (default: ~/.cache/distill/view).")] = None,
) -> None:
    """Browse runs, conversations, what the student learns from each, and evaluations (read-only, on loopback)."""
    _serve_viewer(paths or [Path("data/runs")], port=port, no_open=no_open, tokenizer=tokenizer, index_dir=index_dir)


def _serve_viewer(paths: list[Path], *, port: int, no_open: bool, tokenizer: str | None, index_dir: Path | None) -> None:
    import webbrowser
    from urllib.parse import quote

    from distill.viewer.app import create_app
    from distill.viewer.index import default_index_dir
    from distill.viewer.server import bind, check_paths, serve, url_of

    folders = check_paths(paths)
    sock = bind(port)
    app_ = create_app(folders, tokenizer=tokenizer, index_dir=index_dir or default_index_dir())
    state = app_.state.viewer
    for run in state.catalog.runs:
        with err.status(f"indexing {run.path}"):
            state.index(run).refresh()
    found = state.catalog
    url = url_of(sock)
    console_out.print(f"{len(found.runs)} run(s), {len(found.converts)} convert output(s), {len(found.evals)} evaluation(s)",
                      highlight=False)
    console_out.print(f"distill view: {url} (Ctrl+C stops it)", highlight=False, soft_wrap=True)
    for evaluation in found.evals:
        console_out.print(f"  evaluation {evaluation.id}: {url}evals/{quote(evaluation.id)}", highlight=False, soft_wrap=True)
    if not no_open:
        webbrowser.open(url)
    serve(app_, sock)


teacher_app = typer.Typer(no_args_is_help=True, help="Serve and prepare local teachers.")
app.add_typer(teacher_app, name="teacher")


@teacher_app.command("serve")
def teacher_serve(
    model: Annotated[str, typer.Option(help="Local model folder (or a repo already in the local cache).")],
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 lets other machines' workers in "
                                           "(mlx_lm.server has no authentication: firewall it).")] = "127.0.0.1",
    adapter_path: Annotated[Optional[str], typer.Option(help="LoRA adapter folder to serve with the model.")] = None,
    prompt_cache_bytes: Annotated[Optional[int], typer.Option(help="Cap on the prompt cache's memory.")] = 2 * 1024**3,
    prompt_cache_size: Annotated[Optional[int], typer.Option(help="Cap on cached prompts.")] = 4,
    decode_concurrency: Annotated[Optional[int], typer.Option(help="Sequences decoded at once.")] = None,
    prompt_concurrency: Annotated[Optional[int], typer.Option(help="Prompts prefilled at once.")] = None,
    log_dir: Annotated[Path, typer.Option(help="Where the server's log goes.")] = Path("data/logs"),
) -> None:
    """Run mlx_lm.server (on loopback unless --host), restarting it whenever it dies."""
    from distill.teachers.mlx_server import MlxServerError
    from distill.teachers.supervisor import ServeOptions, TeacherSupervisor, wait_forever

    options = ServeOptions(model=model, port=port, host=host, adapter_path=adapter_path, prompt_cache_bytes=prompt_cache_bytes,
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
    from distill.teachers.bundle import BundleError, bundle_smollm2

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
    seconds_per_token: Annotated[float, typer.Option(help="Extra latency per generated token.")] = 0.0,
    length_jitter: Annotated[float, typer.Option(
        help="Generated lengths vary by up to this share either way (0.5: half to one and a half).")] = 0.0,
    script: Annotated[str, typer.Option(
        help="generic: a few tool calls on any prompt; tasks: answer `distill prompts synth` questions "
             "by calling the real tools and reading their results.")] = "generic",
    reasoning: Annotated[str, typer.Option(
        help="none; field: think in reasoning_content; tags: open the content with a <think> block.")] = "none",
    plans: Annotated[Path | None, typer.Option(
        help="A prompts file whose lines carry call plans in metadata.sim_calls ([{\"tool\": ..., \"arguments\": "
             "{...}}, ...]): those prompts get exactly these calls in turn, then an answer from the last result.")] = None,
) -> None:
    """Serve the simulated OpenAI-compatible teacher (for trying distill without a model)."""
    from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig, read_plans

    if script not in ("generic", "tasks"):
        fail("--script is generic or tasks")
    if reasoning not in ("none", "field", "tags"):
        fail("--reasoning is none, field or tags")
    teacher = SimTeacher(SimTeacherConfig(latency_s=latency, tool_rounds=tool_rounds, fail_rate=fail_rate,
                                          seconds_per_token=seconds_per_token, length_jitter=length_jitter,
                                          script=script, reasoning=reasoning,  # type: ignore[arg-type]
                                          calls=read_plans(plans) if plans else {}))
    url = teacher.start(port)
    console_out.print(f"simulated teacher at {url} (model 'sim-teacher'); Ctrl+C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        teacher.stop()


def setup_logging() -> None:
    """One handler for every library module: distill's own messages at INFO, others' at WARNING."""
    handler = RichHandler(console=err, show_path=False, markup=False, rich_tracebacks=False)
    handler.setFormatter(logging.Formatter("%(message)s", datefmt="[%X]"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("distill").setLevel(logging.INFO)


def main() -> None:
    """The console command: distill's own errors end as one line and an exit code, never a traceback."""
    setup_logging()
    try:
        app(standalone_mode=True)
    except DistillError as error:
        err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
