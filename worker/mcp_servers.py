"""Tools from MCP servers: one set of live server sessions per worker, kept for the worker's life.

Each declared server (shared/mcp_config.py) is started once, over stdio or streamable HTTP (the
`mcp` package's client), and its tools are offered under a prefix with the server's own names,
descriptions and JSON schemas. Calls of every conversation share the worker's sessions.

Outcomes, as for the built-in tools (ToolOutcome in shared/records.py):
- `ok`: the server's answer; its text and structured content are kept, images and other binary
  parts are replaced by a short note (a student reads text).
- `tool_error`: the server answered `isError`, or refused the call as invalid (a JSON-RPC error
  about the request, such as unknown arguments): its own words, seen by the teacher.
- `infra_error`: the connection closed, the server died, the call ran past the time limit, or the
  server could not be (re)started. Never the tool's answer: the tool pool retries it and, when it
  keeps failing, the conversation starts again. A dead server is restarted; a call past the time
  limit restarts its server too, since that is the only way to stop a call an MCP server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from distill.shared.mcp_config import McpServerConfig, McpSetupError
from distill.shared.records import ToolOutcome

log = logging.getLogger(__name__)

# JSON-RPC error codes that mean the call itself was wrong (the teacher's arguments), not the server.
_REQUEST_FAULTS = {-32602, -32601}  # INVALID_PARAMS, METHOD_NOT_FOUND


@dataclass(frozen=True)
class McpTool:
    """One tool a server offers, as the teacher sees it (`name`, with its prefix) and as the server does."""

    name: str
    server: str
    remote_name: str
    description: str
    parameters: dict[str, Any]

    def schema(self) -> dict[str, Any]:
        return {"type": "function",
                "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class McpAnswer:
    outcome: ToolOutcome
    text: str
    seconds: float


class McpServer:
    """One server's live session in this worker; started again when it dies."""

    def __init__(self, config: McpServerConfig, *, errlog: Path | None = None) -> None:
        self.config = config
        self.errlog = errlog
        self.tools: list[McpTool] = []
        # Tools the server has that are not offered because they are not marked read-only.
        self.left_out: list[str] = []
        self.starts = 0
        self._session: Any = None
        self._generation = 0
        self._stop: asyncio.Event | None = None
        self._runner: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the server and list its tools; McpSetupError says why it could not."""
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        await self._stop_runner()
        ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._runner = asyncio.create_task(self._hold(ready, self._stop), name=f"mcp-{self.config.name}")
        try:
            self._session, listed = await asyncio.wait_for(asyncio.shield(ready), self.config.startup_timeout_s)
        except McpSetupError:
            raise
        except TimeoutError:
            await self._stop_runner()
            raise McpSetupError(f"mcp server {self.config.name!r} ({self.config.describe()}) did not answer within "
                                f"{self.config.startup_timeout_s:g}s") from None
        except Exception as error:  # noqa: BLE001 - spawning and the handshake fail in many ways; all mean "can't start"
            await self._stop_runner()
            raise McpSetupError(f"mcp server {self.config.name!r} ({self.config.describe()}) cannot start: "
                                f"{_reason(error)}") from None
        try:
            self.tools = self._offered(listed)
        except McpSetupError:
            await self._stop_runner()
            raise
        self._generation += 1
        self.starts += 1

    async def _hold(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        """Open the session and keep it open until told to stop; the transport's contexts live in this task."""
        from mcp import ClientSession

        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport(stack))
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                listed = await _list_all_tools(session)
                if not ready.done():
                    ready.set_result((session, listed))
                await stop.wait()
        except BaseException as error:  # noqa: BLE001 - reported to whoever waits for the start
            if not ready.done():
                ready.set_exception(error if isinstance(error, Exception) else RuntimeError(repr(error)))
            elif not isinstance(error, asyncio.CancelledError):
                log.warning("mcp server %s: session ended: %s", self.config.name, _reason(error))

    def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        from mcp import StdioServerParameters, stdio_client

        config = self.config
        if config.command is not None:
            params = StdioServerParameters(command=config.command, args=config.args, env=config.resolved_env() or None,
                                           cwd=config.cwd)
            return stdio_client(params, errlog=self._errlog(stack))
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        assert config.url is not None
        client = httpx2.AsyncClient(headers=config.resolved_headers(), timeout=httpx2.Timeout(30.0, read=300.0))
        return streamable_http_client(config.url, http_client=client)

    def _errlog(self, stack: contextlib.AsyncExitStack) -> TextIO:
        """The server's stderr: a log file beside the worker's, or nowhere (never our terminal).

        A server may print its environment; the values read for its `${VAR}`s are replaced by
        `***` on the way to the file, so the run folder never holds them.
        """
        if self.errlog is None:
            return stack.enter_context(open(os.devnull, "w", encoding="utf-8"))
        self.errlog.parent.mkdir(parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        copier = threading.Thread(target=_copy_redacted, args=(read_end, self.errlog, self.config.referenced_env()),
                                  name=f"mcp-{self.config.name}-stderr", daemon=True)
        copier.start()
        # Our copy of the write end closes with the session; the copier ends when the server's does too.
        return stack.enter_context(os.fdopen(write_end, "w", encoding="utf-8"))

    def _offered(self, listed: list[Any]) -> list[McpTool]:
        config = self.config
        by_name = {tool.name: tool for tool in listed}
        wanted = config.tools if config.tools is not None else list(by_name)
        if config.tools is None and config.read_only:
            wanted = [name for name in by_name if _read_only(by_name[name])]
            self.left_out = [name for name in by_name if name not in wanted]
        missing = [name for name in wanted if name not in by_name]
        if missing:
            raise McpSetupError(f"mcp server {config.name!r} has no tool {', '.join(map(repr, missing))}; "
                                f"it offers {', '.join(sorted(by_name)) or 'none'}")
        return [McpTool(name=config.tool_prefix + name, server=config.name, remote_name=name,
                        description=by_name[name].description or "", parameters=dict(by_name[name].input_schema))
                for name in wanted]

    async def call(self, tool: McpTool, arguments: dict[str, Any], timeout_s: float) -> McpAnswer:
        """One call; never raises for the server's or the connection's failures."""
        started = time.perf_counter()
        generation, session = self._generation, self._session
        if session is None:
            return await self._failed(generation, started, "the server is not running")
        from mcp import MCPError

        try:
            result = await asyncio.wait_for(session.call_tool(tool.remote_name, arguments), timeout_s)
        except TimeoutError:
            return await self._failed(generation, started, f"time limit of {timeout_s:g}s hit")
        except MCPError as error:
            if error.code in _REQUEST_FAULTS:
                return McpAnswer("tool_error", f"error: {error.message}", time.perf_counter() - started)
            return await self._failed(generation, started, f"the server failed: {error.message}")
        except Exception as error:  # noqa: BLE001 - any transport failure is ours, never the tool's answer
            return await self._failed(generation, started, f"the connection failed: {_reason(error)}")
        outcome: ToolOutcome = "tool_error" if result.is_error else "ok"
        return McpAnswer(outcome, result_text(result), time.perf_counter() - started)

    async def _failed(self, generation: int, started: float, reason: str) -> McpAnswer:
        """An infra error; the server is started again unless a concurrent failure already did."""
        async with self._lock:
            if generation == self._generation:
                log.warning("mcp server %s: %s; restarting it", self.config.name, reason)
                try:
                    await self._start()
                except McpSetupError as error:
                    self._session = None
                    reason += f"; restart failed: {error}"
        return McpAnswer("infra_error", reason, time.perf_counter() - started)

    async def _stop_runner(self) -> None:
        runner, stop = self._runner, self._stop
        self._runner = self._stop = self._session = None
        if runner is None:
            return
        if stop is not None:
            stop.set()
        try:
            await asyncio.wait_for(runner, 10)
        except (TimeoutError, asyncio.CancelledError):
            runner.cancel()
        except Exception as error:  # noqa: BLE001 - a session that ends badly is ended all the same
            log.debug("mcp server %s: session closed with %s", self.config.name, _reason(error))

    async def close(self) -> None:
        async with self._lock:
            await self._stop_runner()


class McpServerSet:
    """A worker's MCP servers and the tools they offer, by offered (prefixed) name."""

    def __init__(self, configs: list[McpServerConfig], *, log_dir: Path | None = None, worker: str = "worker") -> None:
        self.servers = [McpServer(config, errlog=log_dir / f"mcp-{config.name}-{worker}.log" if log_dir else None)
                        for config in configs]
        self.tools: dict[str, McpTool] = {}
        self._server_of: dict[str, McpServer] = {}

    async def start(self, taken: list[str] | tuple[str, ...] = ()) -> None:
        """Start every server; McpSetupError (the others stopped) when one can't start or a name clashes."""
        try:
            for server in self.servers:
                await server.start()
        except McpSetupError:
            await self.close()
            raise
        names = list(taken)
        for server in self.servers:
            for tool in server.tools:
                if tool.name in names:
                    await self.close()
                    raise McpSetupError(f"mcp server {server.config.name!r}: tool name {tool.name!r} is taken; "
                                        f"set a `prefix` for the server")
                names.append(tool.name)
                self.tools[tool.name] = tool
                self._server_of[tool.name] = server

    def schemas(self) -> list[dict[str, Any]]:
        return [tool.schema() for tool in self.tools.values()]

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> McpAnswer:
        return await self._server_of[name].call(self.tools[name], arguments, timeout_s)

    def starts(self) -> dict[str, int]:
        """How many times each server was started (1 + its restarts)."""
        return {server.config.name: server.starts for server in self.servers}

    async def close(self) -> None:
        for server in self.servers:
            await server.close()


def _copy_redacted(read_end: int, path: Path, secrets: dict[str, str]) -> None:
    values = sorted((value for value in secrets.values() if value), key=len, reverse=True)
    with os.fdopen(read_end, "r", encoding="utf-8", errors="replace") as source, path.open("a", encoding="utf-8") as log_file:
        for line in source:
            for value in values:
                line = line.replace(value, "***")
            log_file.write(line)
            log_file.flush()


def _read_only(tool: Any) -> bool:
    annotations = getattr(tool, "annotations", None)
    return bool(annotations is not None and getattr(annotations, "read_only_hint", None))


def result_text(result: Any) -> str:
    """What the teacher reads of a CallToolResult: text parts, structured content, notes for the rest."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            resource = block.resource
            text = getattr(resource, "text", None)
            parts.append(text if text is not None else
                         f"[binary resource {resource.uri} ({getattr(resource, 'mime_type', None) or 'unknown type'}) not shown]")
        elif kind == "resource_link":
            parts.append(f"[resource link: {block.uri}]")
        else:
            mime = getattr(block, "mime_type", None) or "unknown type"
            size = len(getattr(block, "data", "") or "") * 3 // 4
            parts.append(f"[{kind or 'binary'} content ({mime}, about {size} bytes) not shown]")
    structured = getattr(result, "structured_content", None)
    if structured is not None and not _said(structured, parts):
        parts.append(json.dumps(structured, ensure_ascii=False))
    return "\n".join(parts) if parts else "(no content)"


def _said(structured: Any, parts: list[str]) -> bool:
    """Whether the text parts already say what the structured content holds.

    Servers send the same JSON as text too (the spec asks them to), and MCP SDK servers wrap a
    plain return value as `{"result": value}` beside its text: either way, say it once.
    """
    values = [structured]
    if isinstance(structured, dict) and set(structured) == {"result"}:
        values.append(structured["result"])
    for part in parts:
        for value in values:
            if part == value or _json_equal(part, value):
                return True
    return False


def _json_equal(text: str, value: Any) -> bool:
    try:
        return bool(json.loads(text) == value)
    except ValueError:
        return False


async def _list_all_tools(session: Any) -> list[Any]:
    from mcp import types

    tools: list[Any] = []
    cursor = None
    while True:
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _reason(error: BaseException) -> str:
    """One line for an error, looking inside the exception groups anyio wraps transport failures in."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) < 300 else text[:300] + "..."


async def probe_server(config: McpServerConfig) -> McpServer:
    """Start one server, list the tools it would offer, and stop it (doctor); the stopped server
    keeps its `tools` and `left_out`."""
    server = McpServer(config)
    try:
        await server.start()
        return server
    finally:
        await server.close()


def check_servers(configs: list[McpServerConfig], taken: list[str]) -> dict[str, list[McpTool]]:
    """The run's preflight: every server starts and no offered name clashes, or one McpSetupError."""

    async def probe() -> dict[str, list[McpTool]]:
        servers = McpServerSet(configs)
        await servers.start(taken)
        try:
            return {server.config.name: server.tools for server in servers.servers}
        finally:
            await servers.close()

    return asyncio.run(probe())
