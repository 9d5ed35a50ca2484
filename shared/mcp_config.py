"""MCP servers a run offers tools from: the `[[mcp_servers]]` tables and the `--mcp` flag.

A server is either a stdio command (with args, env and a working directory) or a streamable-HTTP
URL (with headers). Values written as `${VAR}` are read from the environment only where the
server is started (`resolved_env`, `resolved_headers`); the config itself, and so everything
that is written from it (the worker spec, records, manifests, logs), only ever holds `${VAR}`.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from distill.shared.errors import DistillError

# `${NAME}`: the only form read from the environment (a bare `$NAME` is left as written).
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


class McpSetupError(DistillError):
    """An MCP server that cannot be started or used as declared (one line, naming the server)."""


class McpServerConfig(BaseModel):
    """One MCP server whose tools the teacher is offered (prefixed with `prefix`)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    # stdio: the command to start, with its arguments, extra environment and working directory.
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    # The server's working directory; unset: the one distill was started in.
    cwd: str | None = None
    # streamable HTTP: the endpoint, and headers sent with every request.
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # Put before each of the server's tool names; unset, "<name>_". "" offers the names as they are.
    prefix: str | None = None
    # Only these of the server's tools are offered (names as the server gives them); unset: every
    # tool the server marks read-only (`readOnlyHint`), or every tool with read_only = false.
    tools: list[str] | None = None
    # The built-in tools only read; a tool that writes (git_commit, git_checkout) would change what
    # every other conversation of the run sees. Unset `tools` offers only the read-only ones.
    read_only: bool = True
    # Seconds to start the server and list its tools.
    startup_timeout_s: float = Field(default=30.0, gt=0)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use a letter, then letters, digits, '-' or '_'")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError(f"mcp server {self.name!r}: give either `command` (stdio) or `url` (streamable HTTP)")
        if self.url is not None and (self.args or self.env or self.cwd):
            raise ValueError(f"mcp server {self.name!r}: args, env and cwd are for a stdio `command`, not a `url`")
        if self.command is not None and self.headers:
            raise ValueError(f"mcp server {self.name!r}: headers are for a `url`, not a stdio `command`")
        if self.command is not None:
            # Relative paths (cwd, `--repository .`) mean where distill was started, not wherever a
            # worker process happens to run: the folder is fixed here, where the config is read.
            self.cwd = os.path.abspath(self.cwd or os.getcwd())
        return self

    @property
    def tool_prefix(self) -> str:
        return f"{self.name}_" if self.prefix is None else self.prefix

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def resolved_env(self) -> dict[str, str]:
        """The extra environment with `${VAR}` read now; McpSetupError names a missing variable."""
        return {key: self._expand(value, f"env {key}") for key, value in self.env.items()}

    def resolved_headers(self) -> dict[str, str]:
        return {key: self._expand(value, f"header {key}") for key, value in self.headers.items()}

    def referenced_env(self, *, missing_ok: bool = False) -> dict[str, str]:
        """The variables this server's `${VAR}` values read, as set here (they travel to the workers
        as the teachers' keys do, never in the spec); McpSetupError names one that is not set."""
        names = {match for value in [*self.env.values(), *self.headers.values()] for match in ENV_REFERENCE.findall(value)}
        missing = sorted(name for name in names if name not in os.environ)
        if missing and not missing_ok:
            raise McpSetupError(f"mcp server {self.name!r}: environment variable {missing[0]} is not set")
        return {name: os.environ[name] for name in sorted(names) if name in os.environ}

    def describe(self) -> str:
        """The server as the user declared it (with `${VAR}` unexpanded), for tables and logs."""
        if self.url is not None:
            return self.url
        return shlex.join([self.command or "", *self.args])

    def _expand(self, value: str, where: str) -> str:
        def read(match: re.Match[str]) -> str:
            variable = match.group(1)
            found = os.environ.get(variable)
            if found is None:
                raise McpSetupError(f"mcp server {self.name!r}: {where}: environment variable {variable} is not set")
            return found

        return ENV_REFERENCE.sub(read, value)


def parse_mcp_flag(flag: str) -> McpServerConfig:
    """`--mcp NAME=COMMAND ARGS...` (stdio) or `--mcp NAME=URL` (streamable HTTP)."""
    name, sep, rest = flag.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise McpSetupError(f"--mcp {flag!r}: use NAME=COMMAND [ARGS...] or NAME=URL")
    fields: dict[str, Any] = {"name": name.strip()}
    rest = rest.strip()
    if rest.startswith(("http://", "https://")):
        fields["url"] = rest
    else:
        try:
            command, *args = shlex.split(rest)
        except ValueError as error:
            raise McpSetupError(f"--mcp {flag!r}: {error}") from None
        fields.update(command=command, args=args)
    try:
        return McpServerConfig(**fields)
    except ValueError as error:
        raise McpSetupError(f"--mcp {flag!r}: {_first_reason(error)}") from None


def _first_reason(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        problem = errors()[0]
        return str(problem["msg"]).removeprefix("Value error, ")
    return str(error)


def unique_servers(servers: list[McpServerConfig]) -> list[McpServerConfig]:
    names = [server.name for server in servers]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"mcp server names must be unique; repeated: {', '.join(repeated)}")
    return servers
