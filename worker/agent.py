"""One conversation: a pydantic-ai agent against one teacher, with real tools, captured as a record."""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic_ai
from pydantic_ai import Agent, RunContext, Tool, UsageLimits, capture_run_messages
from pydantic_ai.exceptions import (
    ModelAPIError,
    ModelHTTPError,
    UnexpectedModelBehavior,
    UsageLimitExceeded,
)
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models.openai import OpenAIChatModel
from pydantic_ai.providers.openai import OpenAIProvider
from pydantic_ai.settings import ModelSettings

from distill.shared.connection import redact_url
from distill.shared.mcp_config import McpServerConfig
from distill.shared.records import (
    Conversation,
    PromptTask,
    TeacherInfo,
    Timings,
    ToolOutcome,
    Usage,
    WorkerInfo,
    utcnow,
)
from distill.shared.secrets import SecretTags
from distill.shared.settings import TeacherConfig
from distill.shared.verdicts import WorkspaceFiles, reference_verdict
from distill.worker.capture import raw_history, reasoning_tokens, to_chat_messages, to_model_messages
from distill.worker.mcp_servers import McpServerSet, McpTool
from distill.worker.teacher_http import Exchanges, LeanOpenAI, Slot, current_exchanges
from distill.worker.tool_pool import ToolInfraError, ToolPool
from distill.worker.tool_schemas import openai_tool_schemas
from distill.worker.toolcore import ToolCore

# pydantic-ai prints a first-run banner on a terminal when a program run from a source tree starts
# an agent; distill owns its output (it landed in the middle of the demo's evaluation stage).
pydantic_ai.BANNER_ENABLED = False

# 4xx answers that a retry elsewhere or later can cure; any other 4xx is the request's fault.
RETRYABLE_STATUS = {408, 409, 425, 429}


class ConversationFailed(Exception):
    """The conversation could not be captured. `retryable` says whether another attempt may help."""

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        error_type: str,
        partial: list[dict[str, Any]],
        retry_after_s: float | None = None,
        requests: int = 0,
        teacher_fault: bool = True,
    ):
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.error_type = error_type
        self.partial = partial
        self.retry_after_s = retry_after_s
        self.requests = requests
        # False when our own machinery failed (the tools): the teacher's breaker must not learn from it.
        self.teacher_fault = teacher_fault


class TeacherUnavailable(ConversationFailed):
    """The endpoint failed (connection, timeout, 5xx, 429): retry, possibly elsewhere."""


def local_worker_info(actor: str = "local") -> WorkerInfo:
    return WorkerInfo(node=socket.gethostname(), actor=actor, pid=os.getpid())


@dataclass
class ToolDeps:
    """What one conversation's system prompt and tools read from pydantic-ai's RunContext."""

    system_prompt: str
    tools: ToolPool
    # The outcome of each answered tool call, by tool_call_id (the record keeps it per tool message).
    outcomes: dict[str, ToolOutcome] = field(default_factory=dict)
    # The conversation's secret tags: a tool answer's markers become `[REDACTED kind #n]` here.
    secrets: SecretTags = field(default_factory=SecretTags)


def build_tools(core: ToolCore) -> list[Tool[ToolDeps]]:
    """The core's offered tools as async pydantic-ai tools that run in the tool pool.

    The schema the teacher sees comes from each schema function's signature and docstring, exactly
    as if pydantic-ai ran that function itself.
    """
    return [Tool(_pooled(name, function), takes_ctx=True, max_retries=2) for name, function in core.offered.items()]


def _pooled(name: str, function: Callable[..., Any]) -> Callable[..., Awaitable[str]]:
    """An async stand-in for `function` with its name, docs and parameters, run in a tool process."""
    signature = inspect.signature(function)

    async def call(ctx: RunContext[ToolDeps], *args: Any, **kwargs: Any) -> str:
        return await _answered(ctx, name, dict(signature.bind(*args, **kwargs).arguments))

    functools.update_wrapper(call, function)
    call.__name__ = name
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    call.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[context, *signature.parameters.values()], return_annotation=str
    )
    return call


async def _answered(ctx: RunContext[ToolDeps], name: str, arguments: dict[str, Any]) -> str:
    """One call through the tool pool: its outcome kept for the record, the secret markers in its
    answer turned into this conversation's tags."""
    run = await ctx.deps.tools.call(name, arguments)
    if ctx.tool_call_id:
        ctx.deps.outcomes[ctx.tool_call_id] = run.outcome
    return ctx.deps.secrets.apply(run.text)


def mcp_tools(servers: McpServerSet) -> list[Tool[ToolDeps]]:
    """The servers' tools, offered with the server's own names (prefixed), descriptions and schemas."""
    return [_mcp_tool(tool) for tool in servers.tools.values()]


def _mcp_tool(tool: McpTool) -> Tool[ToolDeps]:
    async def call(ctx: RunContext[ToolDeps], **arguments: Any) -> str:
        # The server validates the arguments against its own schema (a refusal is its tool_error).
        return await _answered(ctx, tool.name, arguments)

    offered: Tool[ToolDeps] = Tool.from_schema(call, name=tool.name, description=tool.description,
                                               json_schema=tool.parameters, takes_ctx=True)
    offered.max_retries = 2
    return offered


@dataclass
class TeacherClient:
    """One teacher's pydantic-ai model over a long-lived connection pool (see worker/teacher_http.py)."""

    model: OpenAIChatModel
    http: LeanOpenAI

    @property
    def sent_tools(self) -> list[dict[str, Any]] | None:
        """The tool block exactly as it went to the teacher.

        pydantic-ai reshapes tool schemas on the way out (key order, `strict`); the record must hold
        what the teacher saw, so the student trains on the same prompt it is served with.
        """
        return self.http.sent_tools

    async def aclose(self) -> None:
        await self.http.aclose()


def teacher_client(teacher: TeacherConfig) -> TeacherClient:
    # Retries are distill's (attempts, backoff, failover), so the client itself never retries.
    http = LeanOpenAI(base_url=teacher.base_url, api_key=teacher.api_key(), timeout_s=teacher.timeout_s)
    return TeacherClient(OpenAIChatModel(teacher.model, provider=OpenAIProvider(openai_client=http)), http)


class Conversations:
    """Runs conversations for one worker: one agent, its tools, tool processes and teacher clients.

    Building pydantic-ai `Tool`s (a JSON schema from each signature) and an `Agent` per conversation
    cost about 1 ms of CPU per request in the profile; none of it depends on the prompt, so it is
    made once per worker. What differs per conversation (its system prompt, the outcomes of its
    tool calls) travels in `ToolDeps`; the model is given per run, so every conversation still
    gets its own request counter and teacher-time clock.
    """

    def __init__(
        self,
        core: ToolCore,
        *,
        system_prompt: str,
        worker: WorkerInfo | None = None,
        tool_processes: int | None = None,
    ) -> None:
        limits = self.limits = core.limits
        self.system_prompt = system_prompt
        self.worker = worker or local_worker_info()
        self.tools = build_tools(core)
        self.tool_schemas = core.schemas
        self.tool_pool = ToolPool(core, processes=tool_processes)
        self.usage_limits = UsageLimits(request_limit=limits.max_requests, tool_calls_limit=limits.max_tool_calls)
        self.agent = _agent(self.tools)
        self._clients: dict[str, TeacherClient] = {}
        self.workspace_root = core.workspace.root
        self._files: WorkspaceFiles | None = None
        self.mcp: McpServerSet | None = None

    async def workspace_files(self) -> WorkspaceFiles:
        """The workspace's files, listed once: what a file answer is checked against."""
        if self._files is None:
            self._files = await asyncio.to_thread(WorkspaceFiles.of, self.workspace_root)
        return self._files

    async def start_mcp(self, configs: Sequence[McpServerConfig], *, log_dir: Path | None = None,
                        worker: str = "worker") -> None:
        """Start MCP servers for these conversations' life and offer their tools beside the others
        (McpSetupError when one can't start or a tool name is taken)."""
        servers = McpServerSet(list(configs), log_dir=log_dir, worker=worker)
        await servers.start(taken=[tool.name for tool in self.tools])
        self.add_mcp(servers)

    def add_mcp(self, servers: McpServerSet) -> None:
        """Offer the tools of started MCP servers too; they are closed with the conversations."""
        self.mcp = self.tool_pool.mcp = servers
        self.tools = self.tools + mcp_tools(servers)
        self.tool_schemas = openai_tool_schemas(self.tools)
        self.agent = _agent(self.tools)

    def client(self, teacher: TeacherConfig) -> TeacherClient:
        client = self._clients.get(teacher.name)
        if client is None:
            client = self._clients[teacher.name] = teacher_client(teacher)
        return client

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()
        self.tool_pool.close()
        if self.mcp is not None:
            await self.mcp.close()

    async def run(
        self, task: PromptTask, teacher: TeacherConfig, *, attempt: int = 1, slot: Slot | None = None
    ) -> Conversation:
        """Run the agent on one prompt and return the captured conversation.

        `slot`, when given, is held around every request to the teacher (the global cap).

        Raises TeacherUnavailable when the endpoint fails and ConversationFailed when the teacher
        refuses the request; a loop guard trip or a misbehaving model still gives a record.
        """
        limits = self.limits
        client = self.client(teacher)
        exchanges = Exchanges(slot)
        # Tags already in the task (a prompt redacted at enqueue, a continued history) count, and
        # new ones are numbered after them.
        quoted = [task.prompt, task.system or "", *(m.content or "" for m in task.history)]
        deps = ToolDeps(system_prompt=task.system or self.system_prompt, tools=self.tool_pool, secrets=SecretTags(quoted))
        # A continued conversation (task.history) resumes from its last tool results: no new
        # prompt, and pydantic-ai's history carries the system prompt and the prompt itself.
        prompt: str | None = task.prompt
        resumed: list[ModelMessage] | None = None
        if task.history:
            prompt, resumed = None, to_model_messages(deps.system_prompt, task.prompt, task.history)
            deps.outcomes.update({m.tool_call_id: m.outcome or "ok" for m in task.history if m.tool_call_id})
        settings = ModelSettings(max_tokens=teacher.max_tokens)
        if teacher.temperature is not None:
            settings["temperature"] = teacher.temperature
        if teacher.extra_body:
            settings["extra_body"] = teacher.extra_body
        started_at, started = utcnow(), time.monotonic()
        status, error = "final_answer", None
        # The transport reads the conversation's slot and clock from the context (teacher_http.py).
        context = current_exchanges.set(exchanges)
        with capture_run_messages() as captured:
            try:
                result = await asyncio.wait_for(
                    self.agent.run(prompt, message_history=resumed, model=client.model, deps=deps,
                                   usage_limits=self.usage_limits, model_settings=settings),
                    timeout=limits.conversation_timeout_s,
                )
                history: list[ModelMessage] = result.all_messages()
            except UsageLimitExceeded as limit:
                history, status, error = list(captured), "tool_limit", str(limit)
            except UnexpectedModelBehavior as misbehaviour:
                history, status, error = list(captured), "error", f"{type(misbehaviour).__name__}: {misbehaviour}"
            except ModelAPIError as failure:
                raise classify_failure(failure, captured, exchanges.count) from None
            except ToolInfraError as failure:
                # No result was had, so none may be shown: the conversation starts again from the top.
                raise ConversationFailed(
                    str(failure),
                    retryable=True,
                    error_type="ToolInfraError",
                    partial=raw_history(list(captured)),
                    requests=exchanges.count,
                    teacher_fault=False,
                ) from None
            except TimeoutError:
                raise TeacherUnavailable(
                    f"conversation took longer than {limits.conversation_timeout_s:g}s",
                    retryable=True,
                    error_type="ConversationTimeout",
                    partial=raw_history(list(captured)),
                    requests=exchanges.count,
                ) from None
            finally:
                current_exchanges.reset(context)
        chat = to_chat_messages(history, deps.outcomes)
        if status == "final_answer" and chat.final_text is None:
            status, error = "error", "the teacher ended without a text answer"
        finished_at = utcnow()
        answer = chat.final_text if status == "final_answer" else None
        verdict = reference_verdict(task.expected, answer, prompt=task.prompt,
                                    files=await self.workspace_files() if task.expected is not None else None)
        return Conversation(
            task_id=task.task_id,
            sample=task.sample,
            run=task.run,
            prompt=task.prompt,
            status=status,  # type: ignore[arg-type]
            error=error,
            messages=chat.messages,
            tools=client.sent_tools or self.tool_schemas,
            teacher=TeacherInfo(endpoint=teacher.name, base_url=redact_url(teacher.base_url), model=teacher.model),
            usage=_usage(history, chat.tool_calls, chat.invalid_tool_calls),
            timings=Timings(
                started_at=started_at,
                finished_at=finished_at,
                duration_s=time.monotonic() - started,
                teacher_s=exchanges.seconds,
            ),
            attempt=attempt,
            worker=self.worker,
            metadata=task.metadata,
            raw_messages=raw_history(history),
            expected=task.expected,
            # The reference is checked where the conversation ends; without one the verdict stays
            # open (a judge may give it later).
            verdict=verdict,
            redactions=deps.secrets.count,
        )


async def run_conversation(
    task: PromptTask,
    teacher: TeacherConfig,
    tools: ToolCore,
    *,
    system_prompt: str,
    attempt: int = 1,
    worker: WorkerInfo | None = None,
) -> Conversation:
    """One conversation on its own (tests, benchmarks); a worker keeps one `Conversations`."""
    # One conversation at a time needs one tool process.
    conversations = Conversations(tools, system_prompt=system_prompt, worker=worker,
                                  tool_processes=tools.limits.tool_processes or 1)
    try:
        return await conversations.run(task, teacher, attempt=attempt)
    finally:
        await conversations.aclose()


def _agent(tools: list[Tool[ToolDeps]]) -> Agent[ToolDeps, str]:
    agent: Agent[ToolDeps, str] = Agent(None, deps_type=ToolDeps, tools=tools, retries=2)
    agent.system_prompt(_system_prompt)
    return agent


def _system_prompt(ctx: RunContext[ToolDeps]) -> str:
    return ctx.deps.system_prompt


def classify_failure(failure: ModelAPIError, captured: list[ModelMessage], requests: int) -> ConversationFailed:
    partial = raw_history(list(captured))
    kind = type(failure).__name__
    retry_after = None
    if isinstance(failure, ModelHTTPError):
        retry_after = failure.retry_after
        if 400 <= failure.status_code < 500 and failure.status_code not in RETRYABLE_STATUS:
            return ConversationFailed(
                f"teacher refused the request: HTTP {failure.status_code}: {short_text(failure)}",
                retryable=False,
                error_type=kind,
                partial=partial,
                requests=requests,
            )
    return TeacherUnavailable(
        f"{kind}: {short_text(failure)}",
        retryable=True,
        error_type=kind,
        partial=partial,
        retry_after_s=retry_after,
        requests=requests,
    )


def short_text(failure: BaseException, limit: int = 300) -> str:
    text = " ".join(str(failure).split())
    return text if len(text) <= limit else text[:limit] + "..."


def _usage(history: list[ModelMessage], tool_calls: int, invalid: int) -> Usage:
    responses = [m for m in history if isinstance(m, ModelResponse)]
    return Usage(
        requests=len(responses),
        input_tokens=sum(r.usage.input_tokens or 0 for r in responses),
        output_tokens=sum(r.usage.output_tokens or 0 for r in responses),
        reasoning_tokens=sum(reasoning_tokens(r) for r in responses),
        tool_calls=tool_calls,
        invalid_tool_calls=invalid,
    )
