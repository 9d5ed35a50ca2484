"""What the CLI shows: rich tables and progress bars over the reports the library returns."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlx_lm.cli_ui import make_console
from mlx_lm.tuner.callbacks import TrainingCallback
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from distill.coordinator.checks import Check
from distill.coordinator.progress import RunStatus, RunTick, TickCallback
from distill.coordinator.result import RunResult
from distill.coordinator.stats import infra_errors
from distill.coordinator.synth import MIN_CALLS
from distill.coordinator.verify import VerifyResult
from distill.trainer.batches import TokenizeCallback
from distill.trainer.convert_report import (
    DROP_DESCRIPTIONS,
    REPORT_FILE,
    SPLITS,
    ConvertReport,
    DropReason,
    ProgressCallback,
)
from distill.trainer.evaluate import EVAL_FILE, EvalReport, EvalTotals, PromptCallback
from distill.trainer.provenance import TrainResult
from distill.trainer.repair import CallOutcome, RepairReport, report_path
from distill.trainer.train import colour_only_on_a_terminal

if TYPE_CHECKING:  # demo imports this module
    from distill.demo import DemoResult

PathRows = Sequence[tuple[str, Path | str]]


def print_with_paths(console: Console, table: Table, paths: PathRows) -> None:
    """A table, then the paths it refers to, one a line below it and never in a cell or caption.

    A cell cuts a path to fit its column (`…/distill-dem…`) and a caption wraps it mid-word; a line
    printed with soft wrap stays whole in a log and copies whole from a narrow terminal.
    """
    console.print(table)
    print_paths(console, paths)


def print_paths(console: Console, paths: PathRows) -> None:
    width = max((len(label) for label, _ in paths), default=0)
    for label, path in paths:
        console.print(f"  {label + ':':<{width + 1}} {path}", soft_wrap=True, highlight=False, markup=False)


def convert_table(report: ConvertReport) -> Table:
    """Counts per drop reason and per split."""
    table = Table(title=f"distill convert: {report.kept} of {report.records} conversations kept")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for reason in DropReason:
        count = report.dropped.get(reason, 0)
        if count:
            table.add_row(f"dropped: {DROP_DESCRIPTIONS[reason]}", str(count), style="yellow")
    for name in SPLITS:
        table.add_row(f"kept: {name}.jsonl", str(report.splits[name]), style="green")
    if report.kept:
        table.add_row("tokens per conversation", f"max {report.tokens.max}, mean {report.tokens.mean}")
    return table


def convert_paths(report: ConvertReport) -> PathRows:
    return [("training data", report.out_dir), ("report", Path(report.out_dir) / REPORT_FILE)]


def print_convert(console: Console, report: ConvertReport) -> None:
    """The counts, then the verification and reasoning lines as text (a caption squeezes them to the
    table's width), then the paths."""
    console.print(convert_table(report))
    if report.verification.records:
        console.print(verification_line(report), highlight=False)
    if report.reasoning.turns_with_reasoning:
        console.print(reasoning_line(report), highlight=False)
    if report.placeholder_results:
        console.print("--placeholder-results: every tool result of the kept conversations was written as "
                      "[Tool execution completed] (a counterfactual dataset; the filters judged the real results)",
                      style="yellow", highlight=False)
    print_paths(console, convert_paths(report))


def reasoning_line(report: ConvertReport) -> str:
    """How many turns had the teacher's reasoning, and what became of it."""
    stats = report.reasoning
    line = f"reasoning ({stats.applied}): {stats.turns_with_reasoning} turns had it; {stats.kept} kept, {stats.dropped} dropped"
    if stats.dropped_by_template:
        line += f", {stats.dropped_by_template} not shown by the student's template"
    return line


def verification_line(report: ConvertReport) -> str:
    """The answers' outcomes, and pass@1 / pass@k over the prompts with a verified sample."""
    stats = report.verification
    line = f"answers: {stats.passed} passed, {stats.failed} failed, {stats.unverified} unverified of {stats.records}"
    if stats.pass_at_1 is None:
        return line + "; no prompt has a verified sample"
    rates = f"pass@1 {stats.pass_at_1:.0%}" + (f", pass@{stats.k} {stats.pass_at_k:.0%}" if stats.k > 1 else "")
    return (f"{line}; {rates} over {stats.prompts} prompts with a verified sample "
            f"({stats.prompts_passed} with a passing one; {stats.prompts_unverified} unverified prompts apart)")


@contextmanager
def convert_progress(console: Console, source: Path, verb: str = "convert") -> Iterator[ProgressCallback]:
    """A bar over the bytes of the conversations file, with kept and dropped counts."""
    progress = Progress(
        TextColumn(f"[bold blue]{verb}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[kept]} kept, {task.fields[dropped]} dropped"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    total = source.stat().st_size if source.is_file() else None
    with progress:
        task = progress.add_task("convert", total=total, kept=0, dropped=0)

        def update(read: int, kept: int, dropped: int) -> None:
            progress.update(task, completed=read, kept=kept, dropped=dropped)

        yield update


REPAIR_DESCRIPTIONS = {
    CallOutcome.REPLACED: "calls replaced (placeholder, None, empty or missing -> real result)",
    CallOutcome.KEPT: "calls kept (real result, reproduced today)",
    CallOutcome.CHANGED: "calls changed (real result that differs today)",
    CallOutcome.FAILED: "calls failed (record dropped)",
}


def repair_table(report: RepairReport) -> Table:
    """What happened to each call, and to each conversation."""
    table = Table(title=f"distill repair: {report.written} of {report.records} conversations written")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    styles = {CallOutcome.REPLACED: "green", CallOutcome.KEPT: "green", CallOutcome.CHANGED: "yellow",
              CallOutcome.FAILED: "red"}
    for outcome in CallOutcome:
        table.add_row(REPAIR_DESCRIPTIONS[outcome], str(report.calls.get(outcome, 0)), style=styles[outcome])
    if report.invalid_lines:
        table.add_row("invalid lines skipped", str(report.invalid_lines), style="red")
    for note in report.notes[:5]:
        table.add_row(f"  line {note.line} {note.tool} ({note.outcome}): {note.detail}", "", style="dim")
    return table


def repair_paths(report: RepairReport) -> PathRows:
    return [("written", report.out), ("report", report_path(Path(report.out)))]


EVAL_ROWS = (
    ("tool calls", "tool_calls"),
    ("mean calls / prompt", "mean_calls_per_prompt"),
    ("distinct calls", "distinct_calls"),
    ("repeated identical calls", "repeated_calls"),
    ("invalid calls", "invalid_calls"),
    ("final answers", "final_answers"),
    ("answers cut off at the token limit", "truncated"),
    ("hit the tool limit (loop)", "tool_limit_hits"),
    ("errors", "errors"),
    ("prompts with an expected answer", "with_reference"),
    ("correct answers", "correct"),
    ("wrong answers", "wrong"),
    ("no answer", "no_answer"),
    ("wrong: named extra files", "named_extra_files"),
)


def eval_table(report: EvalReport) -> Table:
    """Totals side by side: one column per variant."""
    prompts = report.variants[0].totals.prompts if report.variants else 0
    table = Table(title=f"distill eval: {'the student' if report.model else 'the teacher'} on {prompts} held-out prompts")
    table.add_column("")
    for variant in report.variants:
        table.add_column(variant.name, justify="right")
    for label, field in EVAL_ROWS:
        table.add_row(label, *(str(getattr(v.totals, field)) for v in report.variants))
    if any(v.totals.with_reference for v in report.variants):
        table.add_row("accuracy", *(f"{v.totals.accuracy:.0%}" for v in report.variants), style="bold")
    table.add_row("calls per prompt: prompts", *(calls_distribution(v.totals) for v in report.variants))
    if any(v.totals.with_min_calls for v in report.variants):
        table.add_row("answered on fewer calls than needed", *(str(v.totals.fewer_calls_than_needed) for v in report.variants))
    kinds = list(dict.fromkeys(kind for v in report.variants for kind in v.by_kind))
    if len(kinds) > 1 or (kinds and kinds != ["other"]):
        table.add_section()
        for kind in kinds:
            cells = [v.by_kind.get(kind) for v in report.variants]
            needs = next((c.mean_min_calls for c in cells if c is not None and c.with_min_calls), None)
            title = f"{kind}" + (f" (needs {needs:g} calls)" if needs else "")
            table.add_row(f"{title}: correct / wrong / no answer",
                          *(f"{c.correct}/{c.prompts} / {c.wrong} / {c.no_answer}" if c else "-" for c in cells), style="bold")
            table.add_row(f"{kind}: calls per question (mean; distribution)",
                          *(f"{c.mean_calls_per_prompt:.2f}; {calls_distribution(c)}" if c else "-" for c in cells))
            table.add_row(f"{kind}: loops / repeated identical calls",
                          *(f"{c.tool_limit_hits} / {c.repeated_calls}" if c else "-" for c in cells))
    return table


def calls_distribution(totals: EvalTotals) -> str:
    """`0:2 1:5 3:1`: how many prompts made each number of tool calls."""
    return " ".join(f"{calls}:{prompts}" for calls, prompts in totals.calls_histogram.items()) or "-"


def eval_paths(report: EvalReport) -> PathRows:
    paths: list[tuple[str, Path | str]] = [("model", report.model)] if report.model else []
    if report.plot_file:
        paths += [("report", Path(report.plot_file).parent / EVAL_FILE), ("chart", report.plot_file)]
    return paths


@contextmanager
def eval_progress(console: Console) -> Iterator[PromptCallback]:
    """One bar per variant, advanced as each held-out prompt finishes."""
    progress = Progress(
        TextColumn("[bold blue]{task.description:<7}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[calls]} tool calls"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    bars: dict[str, TaskID] = {}
    with progress:

        def update(variant: str, done: int, total: int, calls: int) -> None:
            if variant not in bars:
                bars[variant] = progress.add_task(variant, total=total, calls=0)
            progress.update(bars[variant], completed=done, calls=calls)

        yield update


class TrainDisplay(TrainingCallback):
    """What mlx-lm's own bar and loss lines leave out: learning rate, speed and peak memory.

    mlx-lm's trainer draws the progress bar and prints loss, tokens/s and validation loss itself.
    Lines go through mlx-lm's shared console, the one its bar is live on, so they land above the
    bar (another rich console would write straight onto the bar's line).
    """

    def __init__(self, console: Console | None = None) -> None:
        if console is None:
            colour_only_on_a_terminal()
        self.console = console or make_console()

    def on_train_loss_report(self, train_info: dict[str, Any]) -> None:
        self.console.print(
            f"  [dim]iter {train_info['iteration']:>5}  lr {train_info.get('learning_rate', 0.0):.2e}  "
            f"{train_info.get('iterations_per_second', 0.0):.2f} it/s  "
            f"peak {train_info.get('peak_memory', 0.0):.2f} GB[/dim]",
            highlight=False,
        )


@contextmanager
def tokenize_progress(console: Console) -> Iterator[TokenizeCallback]:
    """One bar per split file while its examples are tokenised."""
    progress = Progress(
        TextColumn("[bold blue]tokenize {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        transient=True,
    )
    bars: dict[str, TaskID] = {}
    with progress:

        def update(name: str, done: int, total: int) -> None:
            if name not in bars:
                bars[name] = progress.add_task(name, total=total)
            progress.update(bars[name], completed=done)

        yield update


def train_summary(result: TrainResult) -> str:
    """Where the run's files are and how the loss moved."""
    lines = [
        f"adapter: {result.adapter_file}",
        f"metrics: {result.metrics_file}",
        f"loss plot: {result.plot_file}",
        f"train loss {_loss(result.first_train_loss)} -> {_loss(result.final_train_loss)}, "
        f"validation loss {_loss(result.first_val_loss)} -> {_loss(result.final_val_loss)} ({result.seconds:.0f} s)",
    ]
    if result.test_loss is not None:
        lines.append(f"test loss {result.test_loss:.3f}, perplexity {math.exp(min(result.test_loss, 50)):.2f}")
    return "\n".join(lines)


def _loss(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def verify_table(result: VerifyResult) -> Table:
    """What the judge decided, and what it was not asked about."""
    table = Table(title=f"distill verify: {result.records} conversations")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    rows = (
        ("judged: passed", result.passed, "green"),
        ("judged: failed", result.failed, "red"),
        ("judged: no verdict (the judge failed)", result.unverified, "yellow"),
        ("skipped: checked against a reference answer", result.skipped_reference, ""),
        ("skipped: judged before (--rejudge to redo)", result.skipped_judged, ""),
    )
    for label, count, style in rows:
        table.add_row(label, str(count), style=style)
    return table


def verify_paths(result: VerifyResult) -> PathRows:
    return [("run", result.run_dir), ("verdicts", result.verdicts_file)]


@contextmanager
def verify_progress(console: Console) -> Iterator[Callable[[VerifyResult], None]]:
    """A running count of verdicts as the judge returns them."""
    progress = Progress(
        TextColumn("[bold blue]verify"),
        TextColumn("{task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task("verify", total=None, counts="starting the judge")

        def update(result: VerifyResult) -> None:
            counts = f"{result.judged} judged: {result.passed} passed, {result.failed} failed, {result.unverified} open"
            progress.update(task, counts=counts)

        yield update


def doctor_table(checks: Iterable[Check]) -> Table:
    table = Table(title="distill doctor", show_lines=False, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result", overflow="fold")
    table.add_column("fix", overflow="fold")
    for check in checks:
        if check.ok:
            mark = "[green]ok[/]"
        elif check.required:
            mark = "[bold red]FAIL[/]"
        else:
            mark = "[yellow]warn[/]"
        table.add_row(mark, escape(check.name), escape(check.detail), escape(check.hint or "") if not check.ok else "")
    return table


# --- generate and status ------------------------------------------------------------------


class _CountColumn(MofNCompleteColumn):
    """done/total on the run's row; nothing on a teacher's row, which has no total (not `0/?`)."""

    def render(self, task: Any) -> Any:
        return super().render(task) if task.total is not None else ""


class RunBar:
    """The live bar of a run, drawn on `console` from the ticks `generate` sends (started by the first)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._endpoint_rows: dict[str, TaskID] = {}

    def __call__(self, tick: RunTick) -> None:
        if self._bar is None:
            self._bar = Progress(TextColumn(f"[bold]{escape(tick.run)}[/]"), BarColumn(), _CountColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=self._console)
            self._task = self._bar.add_task("generate", total=tick.total, detail="")
            self._bar.start()
        assert self._task is not None
        rate = (tick.done - tick.done_before) / max(1e-6, tick.elapsed_s)
        detail = f"failed {tick.dead} · in flight {tick.in_flight} · {rate:.1f}/s · {tick.tokens:,} tok"
        broken = infra_errors(tick.tools)
        if broken:
            # Retried or dropped, never data; but a run that keeps hitting them needs looking at.
            detail += f" · [bold red]⚠ {broken} tool infra errors[/]"
        self._bar.update(self._task, completed=tick.done, total=tick.total, detail=detail)
        for name, numbers in tick.endpoints.items():
            row = self._endpoint_rows.get(name)
            if row is None:
                row = self._endpoint_rows[name] = self._bar.add_task(name, total=None, detail="")
            latency = numbers["mean_latency_s"]
            text = (f"  {escape(name)} ({numbers['kind']}): in flight {numbers['in_flight']} · "
                    f"{numbers['requests']} req · {numbers['errors']} err"
                    + (f" · {latency:.2f}s/req" if latency is not None else ""))
            self._bar.update(row, detail=text)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def run_bar(console: Console | None) -> Iterator[TickCallback | None]:
    """The live bar for `generate(on_tick=...)`; None (no bar) without a console."""
    if console is None:
        yield None
        return
    bar = RunBar(console)
    try:
        yield bar
    finally:
        bar.stop()


def summary_table(result: RunResult) -> Table:
    table = Table(title=f"run {result.run}", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    rate = (result.conversations + result.dead) / result.elapsed_s if result.elapsed_s else 0.0
    rows = [
        ("prompts in the run (x samples)", f"{result.total:,}"),
        ("conversations written", f"{result.conversations:,}"),
        ("dead letters", f"{result.dead:,}"),
        ("queued by this command", f"{result.queued_now:,}"),
        ("redone after a crash", f"{result.requeued_orphans:,}"),
        ("duplicate deliveries dropped", f"{result.duplicates_dropped:,}"),
        ("bad prompt lines skipped", f"{result.check.bad_count:,}"),
        ("tool calls (this command)", f"{result.tool_calls:,}"),
        ("answers passed / failed / unverified (this command)", f"{result.passed:,} / {result.failed:,} / {result.unverified:,}"),
        ("secrets withheld (in conversations)", f"{result.redactions:,} ({result.redacted:,})"),
        ("tool processes", f"{result.tool_processes:,}"),
        ("tool infrastructure errors", f"{infra_errors(result.tools):,}"),
        ("tokens in / out (this command)", f"{result.input_tokens:,} / {result.output_tokens:,}"),
        ("elapsed", f"{result.elapsed_s:.1f} s"),
        ("records per second", f"{rate:.2f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def summary_paths(result: RunResult) -> list[tuple[str, Path]]:
    """Where the run went: printed below the summary, whole (a cell would cut them)."""
    paths = [("output", result.run_dir)]
    if result.worker_logs is not None:
        paths.append(("worker logs", result.worker_logs / "worker-*.log"))
    return paths


def endpoints_table(endpoints: dict[str, dict[str, Any]], policy: str | None = None) -> Table:
    """One column per teacher, one row per measure: ten measures side by side do not fit 80 columns."""
    title = "teachers" + (f" (policy {policy})" if policy else "")
    table = Table(title=title, header_style="bold")
    table.add_column("teacher")
    for name in endpoints:
        table.add_column(name, justify="right", overflow="fold")
    rows: list[tuple[str, list[str]]] = [
        ("kind", [n["kind"] for n in endpoints.values()]),
        ("conversations", [f"{n['conversations']:,}" for n in endpoints.values()]),
        ("requests", [f"{n['requests']:,}" for n in endpoints.values()]),
        ("in flight", [str(n["in_flight"]) for n in endpoints.values()]),
        ("errors", [f"{n['errors']:,}" for n in endpoints.values()]),
        ("tokens in", [f"{n['input_tokens']:,}" for n in endpoints.values()]),
        ("tokens out", [f"{n['output_tokens']:,}" for n in endpoints.values()]),
        ("mean latency", [f"{n['mean_latency_s']:.2f} s" if n.get("mean_latency_s") is not None else "-"
                          for n in endpoints.values()]),
        ("est. cost", [f"${n['cost_usd']:.4f}" if n.get("cost_usd") is not None else "-" for n in endpoints.values()]),
    ]
    for label, values in rows:
        table.add_row(label, *values)
    return table


def tools_table(tools: dict[str, dict[str, Any]], processes: int | None = None) -> Table:
    """Tool executions by outcome and their execution time; infra errors were retried, never shown."""
    title = "tools" + (f" ({processes} tool processes)" if processes else "")
    table = Table(title=title, header_style="bold")
    for column in ("tool", "ok", "tool error", "infra error", "p50", "p95"):
        table.add_column(column, justify="left" if column == "tool" else "right")
    for name, n in tools.items():
        infra = f"[bold red]{n['infra_error']:,}[/]" if n["infra_error"] else "0"
        p50 = f"{n['p50_ms']:.1f} ms" if n.get("p50_ms") is not None else "-"
        p95 = f"{n['p95_ms']:.1f} ms" if n.get("p95_ms") is not None else "-"
        table.add_row(name, f"{n['ok']:,}", f"{n['tool_error']:,}", infra, p50, p95)
    return table


def status_table(status: RunStatus) -> Table:
    """`distill status`: what is on disk, and what the last snapshot said."""
    counts, snapshot, total = status.counts, status.snapshot, status.total
    ended = counts["conversations"] + counts["dead"]
    table = Table(title=f"run {status.run_dir.name}: {status.state}", header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("prompts", f"{total:,}" if total else "unknown")
    table.add_row("conversations", f"{counts['conversations']:,}")
    table.add_row("dead letters", f"{counts['dead']:,}")
    table.add_row("remaining", f"{max(0, total - ended):,}" if total else "unknown")
    table.add_row("secrets withheld (in conversations)", f"{counts['redactions']:,} ({counts['redacted']:,})")
    if status.state == "running":
        table.add_row("in flight", str(snapshot.get("in_flight", 0)))
        table.add_row("queued", str(snapshot.get("queued", 0)))
    table.add_row("retries", str(snapshot.get("retries", 0)))
    if snapshot.get("tool_processes"):
        table.add_row("tool processes", str(snapshot["tool_processes"]))
    if snapshot.get("tools"):
        table.add_row("tool infrastructure errors", str(infra_errors(snapshot["tools"])))
    table.add_row("last update", str(snapshot.get("updated_at", "never")))
    return table


def status_tables(status: RunStatus) -> list[Table]:
    tables = [status_table(status)]
    snapshot = status.snapshot
    if snapshot.get("endpoints"):
        tables.append(endpoints_table(snapshot["endpoints"]))
    if snapshot.get("tools"):
        tables.append(tools_table(snapshot["tools"], snapshot.get("tool_processes")))
    return tables


# --- distill demo -------------------------------------------------------------------------------

DEMO_ROWS = (("calls / question", "calls_per_question"), ("loops (tool limit)", "loops"),
             ("repeated calls", "repeated"), ("cut off", "truncated"), ("wrong", "wrong"),
             ("no answer", "no_answer"), ("named extra files", "extra_files"))


def demo_scores_table(result: DemoResult) -> Table:
    """One column per model (students on held-out questions, the teacher on its training questions),
    so base, placeholder and real-result adapter read side by side in 80 columns."""
    table = Table(title="did the student learn to use the tools?", header_style="bold")
    table.add_column("", no_wrap=True)
    teacher = result.scores[-1] if result.scores else None
    for row in result.scores:
        name = "teacher" if row is teacher else row.who.removeprefix("student ")
        table.add_column(name, justify="right", style="bold" if name == "adapter" else None)
    table.add_row("questions", *(str(r.questions) for r in result.scores))
    table.add_row("correct", *(f"{r.correct}/{r.questions}" for r in result.scores), style="bold")
    for label, field in DEMO_ROWS:
        values = [getattr(r, field) for r in result.scores]
        table.add_row(label, *(f"{v:.2f}" if isinstance(v, float) else str(v) for v in values))
    kinds = list(dict.fromkeys(kind for r in result.scores for kind in r.by_kind))
    if kinds:
        table.add_section()
    for kind in kinds:
        needs = MIN_CALLS.get(kind)
        label = f"{kind}" + (f" (needs {needs} call{'s' if needs > 1 else ''})" if needs else "")
        table.add_row(label, *(f"{r.by_kind[kind][0]}/{r.by_kind[kind][1]} · {r.calls_by_kind.get(kind, 0.0):.1f}"
                               if kind in r.by_kind else "-" for r in result.scores))
    notes = ["per kind: correct / asked · tool calls per question",
             "students: the held-out questions (names training never mentioned); "
             f"teacher ({teacher.who.removeprefix('teacher ') if teacher else '-'}): the training questions "
             "it answered to make the data, a different set"]
    if result.placeholder_dir is not None:
        notes.append("placeholder: trained on the same conversations with every tool result replaced by "
                     "[Tool execution completed] (same iterations, same seed)")
    if result.scripted_teacher:
        notes.append("the teacher is the scripted simulated teacher (real tools, no model); --teacher URL for a real one")
    table.caption = "\n".join(notes)
    return table


def demo_stages_table(result: DemoResult) -> Table:
    table = Table(title=f"distill demo finished in {result.seconds:.0f} s", header_style="bold")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    table.add_column("")
    for stage in result.stages:
        table.add_row(stage.name, f"{stage.seconds:.1f}", stage.detail)
    if result.blas:
        table.caption = f"the student trained with {result.blas}"
    return table


def print_demo_summary(result: DemoResult, console: Console) -> None:
    """The closing tables, where every file went (whole paths, one a line), and how to look at it all."""
    console.print(demo_scores_table(result))
    console.print(demo_stages_table(result))
    console.rule("where everything went")
    print_paths(console, [(what or "", where) for what, where in result.files])
    console.print()
    console.print("See every conversation, the training data and the evaluation (each held-out question's tool "
                  "calls, their results and the verdict) in your browser:", highlight=False)
    console.print(f"  {result.view_command}", soft_wrap=True, highlight=False, markup=False)
