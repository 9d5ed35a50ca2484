"""`distill convert`: captured conversations -> mlx-lm training files, keeping only good trajectories.

A trajectory is kept only if it is worth imitating: it ended in a final answer, every tool call
got its real result, every call's arguments fit the tool's schema, no call repeats, it stays
under the tool-call budget and the student's context. Every other one is counted under the
first reason that rejects it, so a report says exactly what was thrown away and why.

It reads distill's own records and plain chat lines (`{"messages", "tools"}`, as mlx-lm and most
datasets write them; see trainer/chat_lines.py) alike, with the same rules for both.

Verdicts (is the answer right?) come from each record and from RUN/verdicts.jsonl, whose later
verdict wins; a record with a reference answer is checked again by today's rule (shared/verdicts.py,
without the workspace: path-looking tokens name files), so a run judged by an older, looser rule
cannot pass a wrong answer. `require_verified` keeps only passing trajectories; `best_of` keeps one
per prompt and never a failed one (see `BestOf`). The report gives pass@1 and pass@k
(`shared.verdicts.pass_rates`, the same numbers eval and the viewer show).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from distill.shared.records import (
    run_limits,
)
from distill.shared.secrets import TAG
from distill.shared.verdicts import (
    VERDICTS_FILE,
    latest_verdicts,
)
from distill.trainer.chat_lines import (
    Trajectory,
)
from distill.trainer.conversation_files import SourceLine, conversations_path, read_conversations
from distill.trainer.convert_report import (
    REPORT_FILE,
    ConvertReport,
    DroppedRecord,
    DropReason,
    ProgressCallback,
    TokenStats,
)
from distill.trainer.errors import TrainerError
from distill.trainer.filters import BestOf, Kept, Rejected, Verification, grounded, training_messages
from distill.trainer.render import (
    MarkerInText,
    assistant_spans,
    encode,
    load_tokenizer,
    render_text,
)
from distill.trainer.splits import SplitFiles, check_ratios, split_of
from distill.trainer.thinking import ReasoningMode, ReasoningStats, resolve, template_thinks, with_reasoning
from distill.trainer.thinking import add as add_reasoning
from distill.trainer.thinking import count as count_reasoning


def convert(
    source: Path,
    tokenizer: str | Path,
    out: Path,
    *,
    max_tool_calls: int | None = None,
    max_seq_length: int = 2048,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    format: Literal["chat", "text"] = "chat",  # mirrors the --format flag
    skip_invalid: bool = False,
    require_verified: bool = False,
    best_of: bool = False,
    reasoning: ReasoningMode = "auto",
    on_progress: ProgressCallback | None = None,
    drop_redacted: bool = False,
    placeholder_results: bool = False,
) -> ConvertReport:
    """Filter a run's conversations and write OUT/{train,valid,test}.jsonl plus OUT/report.json.

    `source` is a run directory (its conversations.jsonl) or a conversations JSONL file, read as
    a stream. `tokenizer` is the student model (path or id): rendering and token counts use its
    chat template. `format="chat"` writes mlx-lm's `{"messages", "tools"}` lines, `"text"` the
    rendered `{"text"}`. Bad lines raise TrainerError (`file:line: field X: reason`) unless
    `skip_invalid`, which counts them as dropped. Empty splits are not written (mlx-lm cannot
    read an empty file). `require_verified` drops every trajectory whose verdict is not passed;
    `best_of` keeps one trajectory per prompt (see `BestOf`). Verdicts come from the records and
    from the verdicts.jsonl beside the conversations file. `reasoning` keeps or drops each turn's
    reasoning (trainer/thinking.py; auto: keep for a thinking template). `placeholder_results`
    writes the same kept conversations with every tool result replaced by PLACEHOLDER_RESULT,
    after every filter (which judged the real results): the counterfactual dataset that shows
    what real results are worth, made on purpose. Returns the report; the caller shows it.
    """
    path = conversations_path(source)
    if max_tool_calls is None:  # what generation allowed, so convert never drops what generate kept
        max_tool_calls = run_limits(path.parent).max_tool_calls
    ratios = _check_options(max_tool_calls, max_seq_length, format, split)
    if placeholder_results and format != "chat":
        raise TrainerError("--placeholder-results writes chat data only (--format chat)")
    student = load_tokenizer(tokenizer)
    thinks = template_thinks(student)
    try:
        applied = resolve(reasoning, thinks)
    except ValueError as error:
        raise TrainerError(str(error)) from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = ConvertReport(
        source=str(path),
        tokenizer=str(tokenizer),
        out_dir=str(out),
        format=format,
        max_tool_calls=max_tool_calls,
        max_seq_length=max_seq_length,
        split_ratios=ratios,
        require_verified=require_verified,
        best_of=best_of,
        reasoning=ReasoningStats(mode=reasoning, applied=applied, template_thinks=thinks),
        drop_redacted=drop_redacted,
        placeholder_results=placeholder_results,
    )
    verification = Verification(latest_verdicts(path.parent / VERDICTS_FILE), require=require_verified,
                                refuse_failed=best_of)
    lengths: list[int] = []
    picker = BestOf() if best_of else None
    outcome: Kept | DroppedRecord | None
    with SplitFiles(out, placeholder_results) as files:
        for outcome in _filtered(path, student, report, skip_invalid, verification, on_progress):
            if isinstance(outcome, Kept) and picker is not None:
                outcome = picker.offer(outcome)
            if isinstance(outcome, DroppedRecord):
                report.drops.append(outcome)
            elif outcome is not None:
                files.write(outcome)
                lengths.append(outcome.tokens)
                add_reasoning(report.reasoning, outcome.reasoning)
        for kept in picker.winners() if picker is not None else []:
            files.write(kept)
            lengths.append(kept.tokens)
            add_reasoning(report.reasoning, kept.reasoning)
        report.splits = files.finish()
    report.verification = verification.stats()
    _summarize(report, lengths)
    (out / REPORT_FILE).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


def _check_options(
    max_tool_calls: int, max_seq_length: int, format: str, split: tuple[float, float, float]
) -> tuple[float, float, float]:
    if max_tool_calls < 0:
        raise TrainerError(f"max_tool_calls must be >= 0, not {max_tool_calls}")
    if max_seq_length < 2:
        raise TrainerError(f"max_seq_length must be >= 2, not {max_seq_length}")
    if format not in ("chat", "text"):
        raise TrainerError(f"format must be 'chat' or 'text', not {format!r}")
    return check_ratios(tuple(split))  # type: ignore[arg-type]


def _filtered(
    path: Path,
    tokenizer: Any,
    report: ConvertReport,
    skip_invalid: bool,
    verification: Verification,
    on_progress: ProgressCallback | None,
) -> Iterator[Kept | DroppedRecord]:
    """Every line of the file, judged in order: kept (with its split) or dropped (with the reason)."""
    seen_texts: set[str] = set()
    kept = dropped = 0
    for line in read_conversations(path):
        report.records += 1
        outcome = _convert_one(line, tokenizer, report, seen_texts, skip_invalid, verification)
        kept, dropped = (kept, dropped + 1) if isinstance(outcome, DroppedRecord) else (kept + 1, dropped)
        yield outcome
        if on_progress is not None:
            on_progress(line.end_offset, kept, dropped)


def _redacted(conversation: Trajectory) -> bool:
    """A record that counted redactions, or any line whose messages hold a tag (a plain dataset)."""
    return bool(conversation.extra.get("redactions")) or any(
        TAG.search(message.content) for message in conversation.messages if isinstance(message.content, str)
    )


def _summarize(report: ConvertReport, lengths: list[int]) -> None:
    reasons = Counter(drop.reason for drop in report.drops)
    report.kept = len(lengths)
    report.dropped = {reason: reasons.get(reason, 0) for reason in DropReason}
    if lengths:
        report.tokens = TokenStats(total=sum(lengths), max=max(lengths), mean=round(sum(lengths) / len(lengths), 1))


def _convert_one(
    line: SourceLine,
    tokenizer: Any,
    report: ConvertReport,
    seen_texts: set[str],
    skip_invalid: bool,
    verification: Verification,
) -> DroppedRecord | Kept:
    if line.error is not None:
        if not skip_invalid:
            raise TrainerError(line.error)
        return DroppedRecord(line=line.number, reason=DropReason.INVALID_RECORD, detail=line.error)
    conversation = line.conversation
    assert conversation is not None  # a line without an error holds one
    if report.drop_redacted and _redacted(conversation):
        return DroppedRecord(line=line.number, task_id=conversation.task_id, sample=conversation.sample,
                             reason=DropReason.REDACTED, detail=f"{conversation.extra.get('redactions') or 'some'} withheld")
    verdict = verification.verdict_of(conversation)
    try:
        if conversation.status == "final_answer":
            # After the status (a conversation that never ended has no answer to verify), before
            # every other check: a wrong answer is not data, whatever its shape.
            verification.check(verdict)
        original = training_messages(conversation, max_tool_calls=report.max_tool_calls)
        messages = with_reasoning(original, report.reasoning.applied, report.reasoning.template_thinks)
        tools = conversation.tools
        text = render_text(tokenizer, messages, tools)
        if report.format == "chat":
            # Training masks every assistant turn of this rendering: a template whose turns
            # cannot be found exactly stops here, not hours later in `distill train`.
            try:
                assistant_spans(tokenizer, messages, tools)
            except MarkerInText as marker:
                raise Rejected(DropReason.HOLDS_TURN_MARKER, str(marker)) from None
        length = len(encode(tokenizer, text))
        if length > report.max_seq_length:
            raise Rejected(DropReason.TOO_LONG, f"{length} tokens > max_seq_length {report.max_seq_length}")
        # Duplicates are judged on what the student would train on: the rendered text (tool
        # call ids differ between runs but are not part of it).
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest in seen_texts:
            raise Rejected(DropReason.DUPLICATE, "same rendered conversation as an earlier line")
        seen_texts.add(digest)
    except Rejected as rejected:
        return DroppedRecord(line=line.number, task_id=conversation.task_id, sample=conversation.sample,
                             reason=rejected.reason, detail=rejected.detail)
    except TrainerError as error:
        raise TrainerError(f"{report.source}:{line.number}: {error}") from None
    payload: dict[str, Any] = {"text": text} if report.format == "text" else {"messages": messages}
    if report.format == "chat" and tools:
        payload["tools"] = tools
    calls = sum(len(message.get("tool_calls") or []) for message in messages)
    thoughts = count_reasoning(report.reasoning.applied, original, text)
    return Kept(split_of(conversation.task_id, report.split_ratios), payload, length, line=line.number,
                 task_id=conversation.task_id, sample=conversation.sample, tool_calls=calls, verdict=verdict,
                 reasoning=thoughts, grounded=grounded(conversation))
