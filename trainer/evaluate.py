"""`distill eval`: run the student, bare and with each adapter given, as an agent on held-out prompts.

The student is served by a real `mlx_lm.server` and driven by the same agent loop and the same
real tools that captured the teacher's data, so what is measured is the behaviour that matters:
does it call tools, call them validly, stop repeating itself, and end with an answer? Where a
held-out prompt has an `expected` answer, is the answer right (shared/verdicts.py, the same rule
generation uses)? The teacher itself can run the same prompts with the same tools, as the bar the
student is measured against.

Several adapters (`--adapter NAME=PATH`) are compared side by side with the base: each is served
in turn and runs the same prompts with the same tools. Every count is also kept per question kind
(`metadata.kind`, as `distill prompts synth` writes it), with the calls each kind needs
(`metadata.min_calls`) beside the calls made.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.shared.connection import redact_url
from distill.shared.mcp_config import McpServerConfig
from distill.shared.reasoning import split_thinking
from distill.shared.records import Conversation, PromptTask, Record, utcnow
from distill.shared.settings import BUILTIN_TOOLS, DEFAULT_SYSTEM_PROMPT, BuiltinTool, GenerationLimits, TeacherConfig
from distill.shared.verdicts import WorkspaceFiles, pass_rates, reference_verdict
from distill.teachers.mlx_server import SERVED_MODEL_NAME, MlxServerError, start_mlx_server
from distill.trainer.errors import TrainerError
from distill.trainer.eval_records import EvalToolCall, hit_token_limit, tool_calls_with_results
from distill.trainer.render import canonical_json, check_model_source
from distill.trainer.schema_check import argument_errors, tool_schemas
from distill.worker.toolcore import ToolCore, check_tools

EVAL_FILE = "eval.json"
PLOT_FILE = "tool_calls.png"

log = logging.getLogger(__name__)

PromptCallback = Callable[[str, int, int, int], object]
"""Called after each prompt: (variant, prompts done, prompts in all, tool calls so far)."""
# The variants' names: "base", "teacher", and each adapter's (`adapter` for --adapter-path).
RESERVED_NAMES = frozenset({"base", "teacher"})


class PromptEval(BaseModel):
    """How one variant of the student did on one prompt."""

    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str
    # The prompt's metadata.kind and metadata.min_calls (synthesized questions), when it has them.
    kind: str | None = None
    min_calls: int | None = None
    # truncated: the conversation ended on an answer cut off at the token limit (max_tokens).
    status: Literal["final_answer", "truncated", "tool_limit", "error", "unavailable"]
    tool_calls: int = 0
    distinct_calls: int = 0
    repeated_calls: int = 0
    invalid_calls: int = 0
    final_answer: bool = False
    hit_tool_limit: bool = False
    calls: list[str] = Field(default_factory=list)
    # Each call with the real result its tool gave (eval_records.py).
    tool_results: list[EvalToolCall] = Field(default_factory=list)
    # The last answer stopped at the token limit: shown, but not counted as a final answer.
    truncated: bool = False
    answer: str | None = None
    # Right by the prompt's `expected` answer; None where the prompt has none.
    correct: bool | None = None
    verdict: str = ""
    # Files the answer named besides the reference's (a file answer that lists too much).
    extra_files: list[str] = Field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    # Output tokens the variant spent thinking (shared/records.py:Usage.reasoning_tokens).
    reasoning_tokens: int = 0


class EvalTotals(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompts: int = 0
    tool_calls: int = 0
    distinct_calls: int = 0
    repeated_calls: int = 0
    invalid_calls: int = 0
    final_answers: int = 0
    tool_limit_hits: int = 0
    # Answers cut off at the token limit, counted apart from final answers.
    truncated: int = 0
    errors: int = 0
    mean_calls_per_prompt: float = 0.0
    # How many prompts made 0, 1, 2... tool calls (keys are the counts, as strings for JSON).
    calls_histogram: dict[str, int] = Field(default_factory=dict)
    # Prompts with a min_calls, what they need in all, and how many ended on fewer calls than that.
    with_min_calls: int = 0
    mean_min_calls: float = 0.0
    fewer_calls_than_needed: int = 0
    # Prompts with an `expected` answer, and how many of them were answered correctly.
    with_reference: int = 0
    correct: int = 0
    # Of the prompts with a reference: a final answer that failed it; no final answer at all; and,
    # among the wrong ones, answers that named files besides the reference's.
    wrong: int = 0
    no_answer: int = 0
    named_extra_files: int = 0
    # correct / with_reference: pass@1 by shared.verdicts.pass_rates (0 when no prompt has a reference).
    accuracy: float = 0.0
    reasoning_tokens: int = 0


class VariantEval(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    adapter_path: str | None = None
    # The mlx_lm.server log of a served student; None for the teacher (an endpoint of its own).
    server_log: str | None = None
    endpoint: str | None = None
    prompts: list[PromptEval]
    totals: EvalTotals
    # The same totals for each question kind (prompts without a kind under "other").
    by_kind: dict[str, EvalTotals] = Field(default_factory=dict)


class EvalReport(Record):
    """eval.json: base vs adapter (vs the teacher) on the same held-out prompts."""

    model: str | None
    adapter_path: str | None
    # Every adapter compared, by name (adapter_path: the first of them, as before several were).
    adapters: dict[str, str] = Field(default_factory=dict)
    prompts_file: str
    workspace: str
    max_tool_calls: int
    max_tokens: int
    variants: list[VariantEval]
    plot_file: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


def evaluate(
    model: str | Path | None,
    prompts: Path,
    workspace: Path,
    *,
    adapter_path: Path | None = None,
    adapters: Sequence[tuple[str, Path]] = (),
    out: Path | None = None,
    max_tool_calls: int | None = None,
    max_requests: int | None = None,
    max_tokens: int = 512,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    custom_tools: Sequence[str] = (),
    builtin_tools: Sequence[BuiltinTool] = BUILTIN_TOOLS,
    tool_docs: Literal["full", "brief"] = "full",
    include_base: bool = True,
    teacher: TeacherConfig | None = None,
    limit: int | None = None,
    request_timeout_s: float = 300.0,
    ready_timeout_s: float = 180.0,
    on_prompt: PromptCallback | None = None,
    mcp_servers: Sequence[McpServerConfig] = (),
) -> EvalReport:
    """Serve `model` (base, then with each adapter) and run the agent on every held-out prompt.

    `adapters` are (name, folder) pairs, served in turn; `adapter_path` is one more, named "adapter".

    With `teacher`, that endpoint runs the same prompts with the same tools too (variant
    "teacher"); `model` may then be None to evaluate the teacher alone. Writes OUT/eval.json,
    OUT/tool_calls.png and the servers' logs (OUT defaults to ADAPTER/eval, or ./eval without an
    adapter) and returns the report; the caller shows it. `max_tool_calls` is the loop guard
    (hitting it counts as a loop); `limit` evaluates only the first N prompts. Prompts with an
    `expected` answer are scored correct or not. Offer the tools (`builtin_tools`, `tool_docs`,
    `custom_tools`, `mcp_servers`) and `system_prompt` the training conversations had, so the student is served
    the prompt it learned from. Raises TrainerError for bad inputs or a server that won't start.
    """
    model_source = check_model_source(model) if model is not None else None
    named = named_adapters(adapters, adapter_path)
    if model_source is None and named:
        raise TrainerError("an adapter needs the model it was trained on")
    tasks = read_eval_prompts(Path(prompts), limit=limit)
    include_base = include_base and model_source is not None
    workspace = _check_paths(Path(workspace), named, include_base or teacher is not None)
    first = next(iter(named.values()), None)
    out = Path(out) if out is not None else (first / "eval" if first is not None else Path("eval"))
    out.mkdir(parents=True, exist_ok=True)
    if max_tool_calls is None:  # the loop guard generation uses, so both count a loop alike
        max_tool_calls = GenerationLimits().max_tool_calls
    limits = GenerationLimits(
        max_tool_calls=max_tool_calls,
        max_requests=max_requests or max_tool_calls + 3,
        conversation_timeout_s=max(request_timeout_s * 2, 60.0),
        builtin_tools=list(builtin_tools),
        tool_docs=tool_docs,
    )
    # The tools are checked before any server starts: a bad custom tool is one line, not a dead variant.
    tools = check_tools(workspace, custom_tools, limits)
    run = _Agent(tools, system_prompt, max_tokens, request_timeout_s, on_prompt, tuple(mcp_servers))
    variants = [
        evaluate_variant(name, model_source, adapter, tasks, run, out=out, ready_timeout_s=ready_timeout_s)
        for name, adapter in _variants(include_base, named)
        if model_source is not None
    ]
    if teacher is not None:
        variants.append(evaluate_endpoint("teacher", teacher, tasks, run))
    report = EvalReport(
        model=model_source,
        adapter_path=str(first) if first else None,
        adapters={name: str(path) for name, path in named.items()},
        prompts_file=str(prompts),
        workspace=str(workspace),
        max_tool_calls=max_tool_calls,
        max_tokens=max_tokens,
        variants=variants,
    )
    report.plot_file = str(plot_tool_calls(report, out / PLOT_FILE))
    (out / EVAL_FILE).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


@dataclass(frozen=True)
class _Agent:
    """How every variant is driven: the same agent loop, tools and limits as generation."""

    tools: ToolCore
    system_prompt: str
    max_tokens: int
    request_timeout_s: float
    on_prompt: PromptCallback | None
    # Started for each variant, as a worker starts them for its life.
    mcp_servers: tuple[McpServerConfig, ...] = ()


def named_adapters(adapters: Sequence[tuple[str, Path]], adapter_path: Path | None) -> dict[str, Path]:
    """Name -> adapter folder, in the order given; `adapter_path` (the one-adapter form) is "adapter".
    Names are unique, and neither "base" nor "teacher" (the other variants' names)."""
    pairs = ([("adapter", adapter_path)] if adapter_path is not None else []) + list(adapters)
    named: dict[str, Path] = {}
    for name, path in pairs:
        if not name or name in RESERVED_NAMES:
            raise TrainerError(f"--adapter {name}={path}: the name must be set and not {' or '.join(sorted(RESERVED_NAMES))}")
        if name in named:
            raise TrainerError(f"--adapter {name}: two adapters have this name")
        named[name] = Path(path)
    return named


def _check_paths(workspace: Path, adapters: dict[str, Path], include_base: bool) -> Path:
    if not workspace.is_dir():
        raise TrainerError(f"{workspace}: workspace directory not found")
    for adapter_path in adapters.values():
        if not (adapter_path / "adapters.safetensors").is_file():
            raise TrainerError(f"{adapter_path}: no adapters.safetensors here (run distill train first)")
    if not adapters and not include_base:
        raise TrainerError("nothing to evaluate: no adapter, no teacher, and the base model is excluded")
    return workspace


def _variants(include_base: bool, adapters: dict[str, Path]) -> list[tuple[str, Path | None]]:
    plan: list[tuple[str, Path | None]] = [("base", None)] if include_base else []
    return plan + list(adapters.items())


def evaluate_variant(
    name: str,
    model_source: str,
    adapter: Path | None,
    tasks: list[PromptTask],
    agent: _Agent,
    *,
    out: Path,
    ready_timeout_s: float,
) -> VariantEval:
    """Serve one variant with a real mlx_lm.server and run every prompt against it."""
    log_path = out / f"server-{name}.log"
    log_path.unlink(missing_ok=True)
    log.info("distill eval %s: starting mlx_lm.server for %s", name, f"{model_source} + {adapter}" if adapter else model_source)
    try:
        server = start_mlx_server(model_source, adapter_path=adapter, log_path=log_path, ready_timeout_s=ready_timeout_s)
    except MlxServerError as error:
        raise TrainerError(str(error).splitlines()[0]) from None
    with server:
        student = TeacherConfig(
            name=f"student-{name}",
            base_url=server.base_url,
            model=SERVED_MODEL_NAME,
            max_concurrency=1,
            max_tokens=agent.max_tokens,
            timeout_s=agent.request_timeout_s,
        )
        results = asyncio.run(_run_prompts(tasks, student, agent, name, server))
    return VariantEval(
        name=name,
        adapter_path=str(adapter) if adapter else None,
        server_log=str(log_path),
        prompts=results,
        totals=totals_of(results),
        by_kind=totals_by_kind(results),
    )


def evaluate_endpoint(name: str, endpoint: TeacherConfig, tasks: list[PromptTask], agent: _Agent) -> VariantEval:
    """Run every prompt against an endpoint that is already serving (the teacher)."""
    log.info("distill eval %s: %s at %s", name, endpoint.model, redact_url(endpoint.base_url))
    results = asyncio.run(_run_prompts(tasks, endpoint, agent, name, None))
    return VariantEval(name=name, endpoint=f"{endpoint.model} at {redact_url(endpoint.base_url)}",
                       prompts=results, totals=totals_of(results), by_kind=totals_by_kind(results))


def read_eval_prompts(path: Path, *, limit: int | None = None) -> list[PromptTask]:
    """Held-out prompts through the coordinator's reader (same format and errors as generate)."""
    from distill.shared.prompts import BadLine, PromptsFileError, read_prompts

    tasks: list[PromptTask] = []
    try:
        for item in read_prompts(path, run="eval"):
            if isinstance(item, BadLine):
                raise TrainerError(str(item))
            tasks.append(item)
            if limit is not None and len(tasks) >= limit:
                break
    except PromptsFileError as error:
        raise TrainerError(str(error)) from None
    return tasks


async def _run_prompts(
    tasks: list[PromptTask], student: TeacherConfig, agent: _Agent, name: str, server: Any
) -> list[PromptEval]:
    from distill.worker.agent import ConversationFailed, Conversations, TeacherUnavailable
    # One agent, tool pool and client for the whole variant, as a worker keeps them: starting a
    # tool process per prompt cost up to a second each. The tool core is generation's: the same
    # time limit, output cap and outcomes.
    conversations = Conversations(agent.tools, system_prompt=agent.system_prompt,
                                  tool_processes=agent.tools.limits.tool_processes or 1)
    results: list[PromptEval] = []
    try:
        if agent.mcp_servers:
            await conversations.start_mcp(agent.mcp_servers)
        for task in tasks:
            started = time.monotonic()
            try:
                conversation = await conversations.run(task, student)
                files = await conversations.workspace_files() if task.expected is not None else None
                result = prompt_eval(task, conversation, files=files)
            except TeacherUnavailable as failure:
                if server is not None and not server.alive():
                    raise TrainerError(f"mlx_lm.server ({name}) died during the evaluation; see {server.log_path}") from None
                result = PromptEval(id=task.task_id, prompt=task.prompt, status="unavailable", error=failure.reason[:500],
                                    **_unanswered(task), **task_kind(task))
            except ConversationFailed as failure:
                result = PromptEval(id=task.task_id, prompt=task.prompt, status="error", error=failure.reason[:500],
                                    **_unanswered(task), **task_kind(task))
            result.seconds = round(time.monotonic() - started, 3)
            results.append(result)
            if agent.on_prompt is not None:
                agent.on_prompt(name, len(results), len(tasks), sum(r.tool_calls for r in results))
    finally:
        await conversations.aclose()
    return results


def _unanswered(task: PromptTask) -> dict[str, Any]:
    """A prompt the variant never answered: wrong where there is a reference to miss."""
    verdict = reference_verdict(task.expected, None)
    return {"correct": verdict.passed, "verdict": verdict.detail}


def task_kind(task: PromptTask) -> dict[str, Any]:
    """The question's kind and the calls it needs, from the prompt line's metadata (synth writes both)."""
    kind = task.metadata.get("kind")
    needed = task.metadata.get("min_calls")
    return {"kind": str(kind) if kind is not None else None,
            "min_calls": needed if isinstance(needed, int) and not isinstance(needed, bool) and needed >= 0 else None}


def prompt_eval(task: PromptTask, conversation: Conversation, *, files: WorkspaceFiles | None = None) -> PromptEval:
    """Tool-call statistics of one conversation, and whether its answer is right (`files`: the
    workspace's, so file answers are read as generation reads them)."""
    schemas = tool_schemas(conversation.tools)
    seen: set[str] = set()
    calls: list[str] = []
    invalid = 0
    for message in conversation.messages:
        for call in message.tool_calls or []:
            name, arguments = call.function.name, call.function.arguments
            key = canonical_json([name, arguments])
            seen.add(key)
            calls.append(f"{name}({canonical_json(arguments)[:120]})")
            if name not in schemas or argument_errors(schemas[name], arguments):
                invalid += 1
    last = conversation.messages[-1] if conversation.messages else None
    answer = last.content if last is not None and last.role == "assistant" and not last.tool_calls else None
    # Capture keeps thinking apart already; a record from before it did may still open with a
    # <think> block, and what the student thought is never its answer.
    answer = split_thinking(answer)[1]
    ended = conversation.status == "final_answer" and bool((answer or "").strip())
    truncated = ended and hit_token_limit(conversation)
    final = ended and not truncated
    # The same rule as generation: an answer counts only if the conversation ended with it; one
    # cut off at the token limit did not end, it was stopped.
    verdict = reference_verdict(task.expected, answer if final else None, files=files, prompt=task.prompt)
    detail = f"answer cut off at the token limit; {verdict.detail}" if truncated and verdict.detail else verdict.detail
    return PromptEval(
        id=task.task_id,
        prompt=task.prompt,
        **task_kind(task),
        status="truncated" if truncated else conversation.status,
        tool_calls=len(calls),
        distinct_calls=len(seen),
        repeated_calls=len(calls) - len(seen),
        # The agent counts calls its tools refused; the schema check also catches calls a
        # lenient tool accepted. Either is invalid; they overlap, so take the larger.
        invalid_calls=max(invalid, conversation.usage.invalid_tool_calls),
        final_answer=final,
        hit_tool_limit=conversation.status == "tool_limit",
        calls=calls,
        tool_results=tool_calls_with_results(conversation),
        truncated=truncated,
        answer=(answer or "")[:2000] if answer is not None else None,
        correct=verdict.passed,
        verdict=detail,
        extra_files=verdict.extra,
        error=conversation.error,
        reasoning_tokens=conversation.usage.reasoning_tokens,
    )


def totals_of(results: list[PromptEval]) -> EvalTotals:
    count = len(results)
    calls = sum(r.tool_calls for r in results)
    with_reference = sum(r.correct is not None for r in results)
    correct = sum(r.correct is True for r in results)
    rates = pass_rates({str(index): [r.correct] for index, r in enumerate(results)})
    needing = [r for r in results if r.min_calls is not None]
    histogram = Counter(r.tool_calls for r in results)
    return EvalTotals(
        prompts=count,
        tool_calls=calls,
        distinct_calls=sum(r.distinct_calls for r in results),
        repeated_calls=sum(r.repeated_calls for r in results),
        invalid_calls=sum(r.invalid_calls for r in results),
        final_answers=sum(r.final_answer for r in results),
        tool_limit_hits=sum(r.hit_tool_limit for r in results),
        truncated=sum(r.truncated for r in results),
        errors=sum(r.status in ("error", "unavailable") for r in results),
        mean_calls_per_prompt=round(calls / count, 3) if count else 0.0,
        calls_histogram={str(n): histogram[n] for n in sorted(histogram)},
        with_min_calls=len(needing),
        mean_min_calls=round(sum(r.min_calls or 0 for r in needing) / len(needing), 3) if needing else 0.0,
        fewer_calls_than_needed=sum(r.final_answer and r.tool_calls < (r.min_calls or 0) for r in needing),
        with_reference=with_reference,
        correct=correct,
        wrong=sum(r.correct is False and r.final_answer for r in results),
        no_answer=sum(r.correct is False and not r.final_answer for r in results),
        named_extra_files=sum(r.correct is False and bool(r.extra_files) for r in results),
        accuracy=rates.pass_at_1 or 0.0,
        reasoning_tokens=sum(r.reasoning_tokens for r in results),
    )


def totals_by_kind(results: list[PromptEval]) -> dict[str, EvalTotals]:
    """totals_of for each question kind, kinds in the order they first appear."""
    kinds: dict[str, list[PromptEval]] = {}
    for result in results:
        kinds.setdefault(result.kind or "other", []).append(result)
    return {kind: totals_of(group) for kind, group in kinds.items()}


def plot_tool_calls(report: EvalReport, png: Path) -> Path:
    """Four bar charts, one bar per variant: tool calls per prompt; how many prompts made 0, 1,
    2... calls; the outcomes that matter (final answers, correct answers, loops); and correct
    answers per question kind, with the calls each kind needs."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot's import
    import matplotlib.pyplot as plt

    figure, (per_prompt, distribution, outcomes, by_kind) = plt.subplots(1, 4, figsize=(21, 4))
    count = len(report.variants)
    width = 0.8 / max(count, 1)
    prompts = len(report.variants[0].prompts) if report.variants else 0
    most = max((p.tool_calls for v in report.variants for p in v.prompts), default=0)
    references = report.variants[0].totals.with_reference if report.variants else 0
    labels = ["final answers", f"correct (of {references})", "cut off", "loops"]
    kinds = list(dict.fromkeys(kind for v in report.variants for kind in v.by_kind))
    for index, variant in enumerate(report.variants):
        shift = (index - (count - 1) / 2) * width
        calls = [p.tool_calls for p in variant.prompts]
        per_prompt.bar([i + shift for i in range(prompts)], calls, width, label=variant.name)
        histogram = [sum(p.tool_calls == n for p in variant.prompts) for n in range(most + 1)]
        distribution.bar([n + shift for n in range(most + 1)], histogram, width, label=variant.name)
        totals = variant.totals
        outcomes.bar([n + shift for n in range(4)],
                     [totals.final_answers, totals.correct, totals.truncated, totals.tool_limit_hits],
                     width, label=variant.name)
        by_kind.bar([n + shift for n in range(len(kinds))],
                    [variant.by_kind[k].correct if k in variant.by_kind else 0 for k in kinds], width, label=variant.name)
    per_prompt.set_xlabel("prompt")
    per_prompt.set_ylabel("tool calls")
    per_prompt.set_title("tool calls per prompt")
    per_prompt.set_xticks(range(prompts))
    distribution.set_xlabel("tool calls in the conversation")
    distribution.set_ylabel("prompts")
    distribution.set_title(f"distribution (loop guard at {report.max_tool_calls})")
    distribution.set_xticks(range(most + 1))
    outcomes.set_ylabel("prompts")
    outcomes.set_title(f"answers on {prompts} held-out prompts")
    outcomes.set_xticks(range(4), labels)
    needs = {k: v.by_kind[k] for v in report.variants for k in v.by_kind}
    by_kind.set_ylabel("correct answers")
    by_kind.set_title("correct by question kind")
    by_kind.set_xticks(range(len(kinds)), [f"{k} (of {needs[k].prompts}, needs {needs[k].mean_min_calls:g})"
                                           if needs[k].with_min_calls else f"{k} (of {needs[k].prompts})" for k in kinds],
                       rotation=20, fontsize=8)
    for axes in (per_prompt, distribution, outcomes, by_kind):
        axes.legend()
        axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
