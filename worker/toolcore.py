"""One tool core: a run's tools, built once from (workspace, custom tools, limits).

Every surface that runs a tool call goes through it: the worker's tool pool (worker/tool_pool.py)
and with it `distill eval` and `distill repair`, so the time limits, the output cap and the
outcome rules are the same everywhere. The core says what is offered (`offered`, `schemas`) and
answers a call (`answer`, run inside a tool process). Tools come from sources, each a family with
its own names: the built-in tools on the workspace and the user's custom tools; a source of
tools from MCP servers plugs in beside them.

Outcomes (ToolOutcome in shared/records.py): `ok` is a real answer, including "no matches" and
"no files found"; `tool_error` is the tool saying the input is wrong (no such file, bad regex,
a path outside the workspace, arguments the tool does not take, a custom tool that raised);
`infra_error` is ours (a walk cut short by the time limit, out of memory), never shown to the
teacher: the pool retries it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from distill.shared.records import ToolOutcome
from distill.shared.secrets import SecretsConfig
from distill.shared.settings import BUILTIN_TOOLS, GenerationLimits
from distill.worker.custom_tools import ToolSetupError, load_custom_tools
from distill.worker.file_tools import list_dir, read_file
from distill.worker.globs import find_files
from distill.worker.grep_engine import grep
from distill.worker.sandbox import ToolError, ToolLimits, Workspace
from distill.worker.tool_schemas import BUILTIN_SCHEMAS, briefly, openai_tool_schemas


class ToolAnswer(NamedTuple):
    """How one tool call ended, and the text the teacher sees (for `ok` and `tool_error`)."""

    outcome: ToolOutcome
    text: str


class ToolUnavailable(Exception):
    """A source's own machinery failed (a server gone, a transport broken): no answer was had, so the
    call is an `infra_error`, retried and never shown, not the tool's answer."""


@dataclass(frozen=True)
class Ran:
    """A source's answer: its text, and whether a walk stopped at the time limit (incomplete)."""

    text: str
    timed_out: bool = False


class ToolSource(Protocol):
    """One family of tools the core dispatches to by name.

    `offered` maps each name to the function whose signature and docstring are its schema;
    `run` answers a call, raises ToolError for an answer that says the input is wrong, and
    ToolUnavailable when its machinery failed.
    """

    offered: dict[str, Callable[..., Any]]

    def run(self, name: str, arguments: dict[str, Any]) -> Ran: ...


_BUILTIN_RUNNERS: dict[str, Callable[..., Ran]] = {
    "grep": lambda ws, **arguments: Ran(*grep(ws, **arguments)),
    "find_files": lambda ws, **arguments: Ran(*find_files(ws, **arguments)),
    "read_file": lambda ws, **arguments: Ran(read_file(ws, **arguments)),
    "list_dir": lambda ws, **arguments: Ran(list_dir(ws, **arguments)),
}
assert set(_BUILTIN_RUNNERS) == set(BUILTIN_TOOLS), "one runner per shared/settings.py BuiltinTool"


class BuiltinTools:
    """The read-only tools on the workspace that `limits.builtin_tools` offers."""

    def __init__(self, workspace: Workspace, limits: GenerationLimits) -> None:
        self.workspace = workspace
        brief = limits.tool_docs == "brief"
        self.offered: dict[str, Callable[..., Any]] = {
            name: briefly(BUILTIN_SCHEMAS[name]) if brief else BUILTIN_SCHEMAS[name]
            for name in BUILTIN_TOOLS if name in limits.builtin_tools
        }

    def run(self, name: str, arguments: dict[str, Any]) -> Ran:
        return _BUILTIN_RUNNERS[name](self.workspace, **arguments)


class CustomTools:
    """The user's functions; one that raises answers with its error, as a built-in tool does."""

    def __init__(self, specs: Sequence[str], taken: Sequence[str]) -> None:
        self.offered: dict[str, Callable[..., Any]] = load_custom_tools(specs, taken)

    def run(self, name: str, arguments: dict[str, Any]) -> Ran:
        return Ran(str(self.offered[name](**arguments)))


class ToolCore:
    """A run's tools: built the same way in the coordinator's preflight, the worker, eval, repair
    and every tool process, so each of them offers and answers exactly alike."""

    def __init__(self, workspace: str | Path, custom_tools: Sequence[str] = (),
                 limits: GenerationLimits | None = None, *, sandbox: ToolLimits | None = None,
                 secrets: SecretsConfig | None = None) -> None:
        """`sandbox` replaces the tool limits `limits` sets, with the budgets no config sets (file
        size, files per walk): tests and benchmarks reach those edges with it. `secrets`: the run's
        `[secrets]` rules (the default: on)."""
        self.limits = limits or GenerationLimits()
        self.custom_tools = tuple(custom_tools)
        try:
            self.workspace = Workspace(workspace, sandbox or ToolLimits.of(self.limits, secrets))
        except ToolError as error:
            raise ToolSetupError(str(error)) from None
        builtins = BuiltinTools(self.workspace, self.limits)
        self.sources: list[ToolSource] = [builtins, CustomTools(self.custom_tools, list(builtins.offered))]
        self._source_of = {name: source for source in self.sources for name in source.offered}

    @property
    def offered(self) -> dict[str, Callable[..., Any]]:
        """Each offered tool's name and the function whose signature and docstring are its schema."""
        return {name: function for source in self.sources for name, function in source.offered.items()}

    @functools.cached_property
    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI tool block offered to the teacher; a custom tool pydantic-ai can't describe is refused."""
        # Imported here, not at the top: tool processes never need pydantic-ai.
        from pydantic_ai import Tool

        tools = []
        for name, function in self.offered.items():
            try:
                tools.append(Tool(function, name=name))
            except Exception as error:  # noqa: BLE001 - pydantic-ai raises several types for unusable signatures
                raise ToolSetupError(f"tool {name!r}: no JSON schema can be made from its signature: "
                                     f"{str(error).splitlines()[0]}") from None
        return openai_tool_schemas(tools)

    def answer(self, name: str, arguments: dict[str, Any]) -> ToolAnswer:
        """Run one call and say how it ended: the one place a tool call's result is produced and
        finished (the output cap), inside the tool process, before it leaves for the agent."""
        return self._finish(name, arguments, self._run(name, arguments))

    def _run(self, name: str, arguments: dict[str, Any]) -> ToolAnswer:
        source = self._source_of.get(name)
        try:
            if source is None:
                raise ToolError(f"unknown tool {name!r}")
            ran = source.run(name, arguments)
        except ToolError as error:
            return ToolAnswer("tool_error", f"error: {error}")
        except ToolUnavailable as error:
            return ToolAnswer("infra_error", str(error))
        except MemoryError:
            return ToolAnswer("infra_error", "out of memory")
        except Exception as error:  # noqa: BLE001 - a tool's crash (or wrong arguments) is the tool's answer
            return ToolAnswer("tool_error", f"error: {type(error).__name__}: {error}")
        if ran.timed_out:
            # Part of an answer is not the tool's answer: the machine ran out of time, so it is retried.
            return ToolAnswer("infra_error", f"time limit of {self.workspace.limits.timeout_s:g}s hit; the answer was incomplete")
        return ToolAnswer("ok", ran.text)

    def finish(self, name: str, arguments: dict[str, Any], answer: ToolAnswer) -> ToolAnswer:
        """`_finish` for an answer produced outside a tool process: an MCP server's, which runs in
        the worker's session with it (worker/tool_pool.py), so it is finished exactly alike."""
        return self._finish(name, arguments, answer)

    def _finish(self, name: str, arguments: dict[str, Any], answer: ToolAnswer) -> ToolAnswer:
        """What every answer passes through before it leaves the tool process, whatever its source
        (built-in, custom, or any source added later): the output cap. Post-processing that must
        hold for every tool belongs here, before the cap: secret redaction (issue 26). Built-in tools
        already redacted what they read (worker/sandbox.py Workspace.read); this is the last look
        for every source. The caller turns the markers into the conversation's tags
        (shared/secrets.py SecretTags)."""
        text = self.workspace.redactor.redact(answer.text)[0]
        return ToolAnswer(answer.outcome, self.workspace.cap(text))


def check_tools(workspace: str | Path, custom_tools: Sequence[str], limits: GenerationLimits) -> ToolCore:
    """The run's preflight: the tools a worker would build, built here first, so a bad custom tool
    spec or workspace is one clear error (ToolSetupError) before anything starts."""
    core = ToolCore(workspace, custom_tools, limits)
    _ = core.schemas
    return core
