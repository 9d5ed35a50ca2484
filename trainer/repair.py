"""`distill repair`: replay every tool call of a dataset with the real tools, so each result is real.

The datasets users already have are the broken ones: tool results written as placeholders
(`[Tool execution completed]`), None or nothing at all. Repair runs each call again against a
workspace, with the same sandboxed tools (built-in and `custom_tools`) and the same argument
checks a generation run uses, and writes plain chat lines (`{"id", "messages", "tools"}`) that
`distill convert` reads. Each call ends as one of:

- replaced: the old result was a placeholder, None, empty or missing; it now holds the real one;
- kept: the old result was real, and today's run gives the same text;
- changed: the old result was real but today's differs (the workspace moved on). The assistant
  turns after it were written against the old result, so a new result is never paired with them:
  by default (`on_changed="keep"`) the original result stays; with `on_changed="cut"` today's
  result is written and the conversation is cut right after that turn's results, so a teacher
  can continue it (`continuation_prompts`). The line says which (`changed_calls`,
  `changed_results`) and the call is listed in the report either way;
- failed: the call cannot be replayed (unknown tool, arguments that are not a JSON object or fail
  the tool's schema) or no real answer was had (the time limit hit, the tool process died); the
  whole conversation is dropped with the reason. A tool that raises answers with its error, as in
  a generation run.

Assistant turns after a replaced result were written while looking at the placeholder; repair
keeps them as they are (see the README's "Bring your own conversations").
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.shared.mcp_config import McpServerConfig
from distill.shared.records import Record, ToolOutcome, is_placeholder, utcnow
from distill.shared.secrets import Redactor, SecretsConfig, SecretTags, new_key
from distill.shared.settings import GenerationLimits
from distill.trainer.chat_lines import ArgumentsNotObject, Trajectory, arguments_object
from distill.trainer.conversation_files import conversations_path, read_conversations
from distill.trainer.errors import TrainerError
from distill.trainer.schema_check import argument_errors, tool_schemas

log = logging.getLogger(__name__)

# Key of a repaired line that lists the calls whose placeholder was replaced; readers ignore it.
REPLACED_KEY = "replaced_calls"
# Keys of a repaired line with changed results: their call ids, and what repair did ("kept_original"
# or "cut": today's result written and the later turns removed).
CHANGED_KEY = "changed_calls"
CHANGED_HANDLING_KEY = "changed_results"
OnChanged = Literal["keep", "cut"]


class CallOutcome(StrEnum):
    REPLACED = "replaced"
    KEPT = "kept"
    CHANGED = "changed"
    FAILED = "failed"


class CallNote(BaseModel):
    """One call worth a look in the report: a failure (its record dropped) or a changed result."""

    model_config = ConfigDict(extra="forbid")

    line: int
    task_id: str
    call_id: str
    tool: str
    outcome: CallOutcome
    detail: str


class RepairReport(Record):
    """What `distill repair` did; written beside the output as <out>.report.json."""

    source: str
    workspace: str
    out: str
    on_changed: OnChanged = "keep"
    records: int = 0
    # Conversations cut after a changed result (on_changed="cut").
    cut: int = 0
    written: int = 0
    dropped: int = 0
    invalid_lines: int = 0
    calls: dict[CallOutcome, int] = Field(default_factory=lambda: {o: 0 for o in CallOutcome})
    notes: list[CallNote] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)


class _Failed(Exception):
    def __init__(self, call_id: str, tool: str, detail: str) -> None:
        super().__init__(detail)
        self.call_id, self.tool, self.detail = call_id, tool, detail


class ToolBox:
    """The run's tool core on one workspace, replayed in a tool process: the same schemas, argument
    checks, time limit, output cap and outcomes as a generation run (worker/toolcore.py)."""

    def __init__(self, workspace: Path, custom_tools: Sequence[str] = (), limits: GenerationLimits | None = None,
                 mcp_servers: Sequence[McpServerConfig] = ()) -> None:
        from distill.worker.mcp_servers import McpServerSet
        from distill.worker.tool_pool import ToolPool
        from distill.worker.toolcore import check_tools

        self.core = check_tools(workspace, custom_tools, limits or GenerationLimits())
        # One call at a time: one tool process, driven by an event loop of its own.
        self._pool = ToolPool(self.core, processes=1)
        self._loop = asyncio.Runner()
        self.schemas = self.core.schemas
        if mcp_servers:
            # The servers' tools replay through the same pool, limits and outcomes as in generation.
            servers = McpServerSet(list(mcp_servers))
            try:
                self._loop.run(servers.start(taken=list(self.core.offered)))
            except BaseException:
                self.close()
                raise
            self._pool.mcp = servers
            self.schemas = [*self.schemas, *servers.schemas()]
        self.parameters = tool_schemas(self.schemas)
        # The secret tags of the conversation being replayed (`_replayed` starts a table for each).
        self.tags = SecretTags()
        # For the text the dataset brought along (prompts, answers, results kept as they were):
        # today's results are redacted in the tool process, the rest here, before anything is written.
        self._redactor = Redactor(SecretsConfig(), new_key())

    def redact(self, text: str) -> str:
        """`text` with every secret value replaced by this conversation's tag for it."""
        return self.tags.apply(self._redactor.redact(text)[0])

    def run(self, name: str, arguments: dict[str, Any]) -> tuple[ToolOutcome, str]:
        """The tool's real answer and its outcome (`ok` or `tool_error`); raises _Failed when the call
        cannot be replayed."""
        from distill.worker.tool_pool import ToolInfraError

        if name not in self.parameters:
            raise _Failed("", name, f"unknown tool {name!r} (this workspace has {', '.join(sorted(self.parameters))})")
        problems = argument_errors(self.parameters[name], arguments)
        if problems:
            raise _Failed("", name, f"{name}: {problems[0]}")
        try:
            answer = self._loop.run(self._pool.call(name, arguments))
        except ToolInfraError as failure:
            # No real answer was had (time limit, a crashed tool process): nothing may be written for it.
            raise _Failed("", name, str(failure)) from None
        return answer.outcome, self.tags.apply(answer.text)

    def close(self) -> None:
        if self._pool.mcp is not None:
            self._loop.run(self._pool.mcp.close())
        self._pool.close()
        self._loop.close()


def repair(
    source: Path,
    workspace: Path,
    out: Path,
    *,
    custom_tools: Sequence[str] = (),
    on_changed: OnChanged = "keep",
    skip_invalid: bool = False,
    limits: GenerationLimits | None = None,
    on_progress: Callable[[int, int, int], Any] | None = None,
    mcp_servers: Sequence[McpServerConfig] = (),
) -> RepairReport:
    """Replay every tool call of SOURCE (a run folder, distill records or plain chat lines) in WORKSPACE.

    Writes OUT (plain chat lines) and OUT.report.json; returns the report. Bad lines raise
    TrainerError (`file:line: field X: reason`) unless `skip_invalid`. `on_progress` is called
    after each line with (bytes read, written, dropped).
    """
    path = conversations_path(source)
    if not Path(workspace).is_dir():
        raise TrainerError(f"{workspace}: workspace directory not found")
    tools = ToolBox(Path(workspace), custom_tools, limits, mcp_servers)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if on_changed not in ("keep", "cut"):
        raise TrainerError(f"on_changed must be 'keep' or 'cut', not {on_changed!r}")
    report = RepairReport(source=str(path), workspace=str(workspace), out=str(out), on_changed=on_changed)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for line in read_conversations(path):
                report.records += 1
                written = _repair_line(line, tools, report, skip_invalid)
                if written is not None:
                    handle.write(json.dumps(written, ensure_ascii=False) + "\n")
                    report.written += 1
                if on_progress is not None:
                    on_progress(line.end_offset, report.written, report.dropped + report.invalid_lines)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        tools.close()
    partial.replace(out)
    report_path(out).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return report


def report_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}.report.json")


def _repair_line(line: Any, tools: ToolBox, report: RepairReport, skip_invalid: bool) -> dict[str, Any] | None:
    if line.error is not None:
        if not skip_invalid:
            raise TrainerError(line.error)
        report.invalid_lines += 1
        return None
    trajectory: Trajectory = line.conversation
    outcomes: Counter[CallOutcome] = Counter()
    changes: list[CallNote] = []
    try:
        messages, replaced = _replayed(trajectory, tools, report.on_changed, outcomes, changes, line.number)
    except _Failed as failed:
        report.dropped += 1
        report.calls[CallOutcome.FAILED] += 1
        report.notes.append(CallNote(line=line.number, task_id=trajectory.task_id, call_id=failed.call_id,
                                     tool=failed.tool, outcome=CallOutcome.FAILED, detail=failed.detail[:300]))
        return None
    for outcome, count in outcomes.items():
        report.calls[outcome] += count
    report.notes.extend(changes)
    line_out = {"id": trajectory.task_id, "messages": messages, "tools": trajectory.tools or tools.schemas}
    if replaced:
        # Which results were placeholders: the turns after them may be stale (--continue-with).
        line_out[REPLACED_KEY] = replaced
    changed = [note.call_id for note in changes if note.outcome == CallOutcome.CHANGED]
    if changed:
        line_out[CHANGED_KEY] = changed
        line_out[CHANGED_HANDLING_KEY] = "cut" if report.on_changed == "cut" else "kept_original"
        report.cut += report.on_changed == "cut"
    return line_out


def _replayed(
    trajectory: Trajectory,
    tools: ToolBox,
    on_changed: OnChanged,
    outcomes: Counter[CallOutcome],
    changes: list[CallNote],
    line: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The conversation with every call replayed (a call with no result message gets one), and the
    ids of the calls whose placeholder was replaced. With on_changed="cut", it ends after the
    results of the first turn whose result changed (calls after it are not replayed)."""
    messages: list[dict[str, Any]] = []
    results: dict[str, dict[str, Any]] = {}
    tools.tags = SecretTags(str(raw.content or "") for raw in trajectory.messages)
    for raw in trajectory.messages:
        dumped = raw.model_dump(exclude_none=True)
        if dumped["role"] == "tool":
            if dumped.get("tool_call_id") in results:
                continue  # a second answer to one call: the replay's single answer replaces both
            results[dumped.get("tool_call_id", "")] = dumped
        messages.append(dumped)
    answered = set(results)
    call_ids = {call["id"] for message in messages for call in message.get("tool_calls") or []}
    out: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "tool" and message.get("tool_call_id") not in call_ids:
            raise _Failed(message.get("tool_call_id", ""), message.get("name", "?"), "a tool result answers no call")
        out.append(message)
        for call in message.get("tool_calls") or []:
            if call["id"] not in answered:
                # No result at all (the seed's capture bug): the replay adds it right after the call.
                results[call["id"]] = {"role": "tool", "tool_call_id": call["id"], "content": None}
                out.append(results[call["id"]])
                answered.add(call["id"])
    replaced: list[str] = []
    for position, message in enumerate(out):
        cut = False
        for call in message.get("tool_calls") or []:
            outcome, note = _replay_call(call, results[call["id"]], tools, on_changed)
            outcomes[outcome] += 1
            if outcome == CallOutcome.REPLACED:
                replaced.append(call["id"])
            cut = cut or (outcome == CallOutcome.CHANGED and on_changed == "cut")
            if note is not None:
                changes.append(CallNote(line=line, task_id=trajectory.task_id, call_id=call["id"],
                                        tool=call["function"]["name"], outcome=outcome, detail=note))
        if cut:
            end = position + 1
            while end < len(out) and out[end]["role"] == "tool":
                end += 1
            out = out[:end]
            break
    for message in out:
        if isinstance(message.get("content"), str):
            message["content"] = tools.redact(message["content"])
    return out, replaced


def _replay_call(
    call: dict[str, Any], result: dict[str, Any], tools: ToolBox, on_changed: OnChanged
) -> tuple[CallOutcome, str | None]:
    """Replay one call into its result message: its outcome, and a note when a real result changed."""
    name = call["function"]["name"]
    try:
        arguments = arguments_object(name, call["function"].get("arguments"))
    except ArgumentsNotObject as problem:
        raise _Failed(call["id"], name, str(problem)) from None
    call["function"]["arguments"] = arguments  # objects, never strings (templates double-encode)
    try:
        outcome, today = tools.run(name, arguments)
    except _Failed as failed:
        raise _Failed(call["id"], name, failed.detail) from None
    old = result.get("content")
    result["name"] = name
    if old is None or not str(old).strip() or is_placeholder(str(old)):
        result["content"], result["outcome"] = today, outcome
        return CallOutcome.REPLACED, None
    # Today's text is redacted in the tool process: the old one is compared as it will be written.
    if tools.redact(str(old)).strip() == today.strip():
        result["outcome"] = outcome
        return CallOutcome.KEPT, None
    if on_changed == "cut":
        result["content"], result["outcome"] = today, outcome
        return CallOutcome.CHANGED, f"wrote today's result and cut the turns after it; today's starts {today[:120]!r}"
    return CallOutcome.CHANGED, ("kept the original result (the turns after it were written against it); "
                                 f"today's starts {today[:120]!r}")


# --- continuing from the first repaired result (--continue-with) -----------------------------


class Continuations(BaseModel):
    """What `continuation_prompts` wrote: one prompt line per repaired conversation to continue."""

    model_config = ConfigDict(extra="forbid")

    path: str
    written: int = 0
    # Conversations that had no placeholder (nothing stale to redo) or do not fit a prompt
    # (several user turns before the first repaired call), with the reason.
    skipped: list[tuple[str, str]] = Field(default_factory=list)


def continuation_prompts(repaired: Path, out: Path) -> Continuations:
    """Prompt lines that continue each repaired conversation from its first repaired result.

    Each line keeps the system prompt, the user prompt and the turns up to and including the
    results of the first assistant turn whose placeholder was replaced (`history`); what the
    assistant said after that was said while looking at a placeholder, so the teacher says it
    again. Ids are the repaired conversation's id plus "-continued": the same file gives the same
    prompts, so rerunning the same command resumes the run instead of repeating it.
    """
    from distill.shared.jsonl import iter_jsonl
    from distill.shared.records import ChatMessage, continuation_problem

    plan = Continuations(path=str(out))
    with out.open("w", encoding="utf-8") as handle:
        for number, data in iter_jsonl(repaired):
            if not isinstance(data, dict):
                raise TrainerError(str(data))
            conversation_id = str(data.get("id") or f"line-{number}")
            replaced = set(data.get(REPLACED_KEY) or ())
            if data.get(CHANGED_HANDLING_KEY) == "cut":  # cut after a changed result: continue from there too
                replaced |= set(data.get(CHANGED_KEY) or ())
            if not replaced:
                plan.skipped.append((conversation_id, "no placeholder or cut result: nothing to redo"))
                continue
            messages = [ChatMessage.model_validate(message) for message in data["messages"]]
            line = _continuation(conversation_id, messages, replaced, continuation_problem)
            if isinstance(line, str):
                plan.skipped.append((conversation_id, line))
                continue
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            plan.written += 1
    return plan


def _continuation(
    conversation_id: str, messages: list[Any], replaced: set[str], problem_of: Callable[[Any], str | None]
) -> dict[str, Any] | str:
    """The prompt line for one conversation, or why it has none."""
    system = messages[0].content if messages and messages[0].role == "system" else None
    rest = messages[1:] if system is not None else messages
    if not rest or rest[0].role != "user" or not (rest[0].content or "").strip():
        return "does not start with a user prompt"
    turns = rest[1:]
    first = next((i for i, m in enumerate(turns) if any(c.id in replaced for c in m.tool_calls or [])), None)
    if first is None:
        return "its replaced calls follow a second user turn"
    end = first + 1
    while end < len(turns) and turns[end].role == "tool":
        end += 1
    history = turns[:end]
    problem = problem_of(history)
    if problem is not None:
        return f"history up to the first repaired result: {problem}"
    return {
        "id": f"{conversation_id}-continued",
        "prompt": rest[0].content,
        "system": system,
        "history": [message.model_dump(mode="json", exclude_none=True) for message in history],
        "metadata": {"continues": conversation_id},
    }
