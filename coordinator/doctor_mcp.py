"""`distill doctor`'s MCP lines: each declared server started, its tools listed, then stopped."""

from __future__ import annotations

import asyncio

from distill.coordinator.checks import Check
from distill.shared.mcp_config import McpSetupError
from distill.shared.settings import Settings
from distill.worker.mcp_servers import McpTool

TOOLS_SHOWN = 12


def check_mcp_servers(settings: Settings) -> list[Check]:
    from distill.worker.mcp_servers import probe_server

    checks = []
    for config in settings.mcp_servers:
        name = f"mcp {config.name}"
        try:
            server = asyncio.run(probe_server(config))
        except McpSetupError as error:
            checks.append(Check(name=name, ok=False, detail=str(error),
                                hint="fix the server's command, url or environment in [[mcp_servers]] / --mcp"))
            continue
        detail = f"{config.transport} {config.describe()}: {len(server.tools)} tool(s): {_listed(server.tools) or 'none'}"
        if server.left_out:
            detail += f"; not offered (not marked read-only): {', '.join(server.left_out)}"
        checks.append(Check(name=name, ok=bool(server.tools), detail=detail,
                            hint=None if server.tools else "list the tools to offer in `tools`, or set read_only = false"))
    return checks


def _listed(tools: list[McpTool]) -> str:
    names = [tool.name for tool in tools]
    more = f", ... ({len(names) - TOOLS_SHOWN} more)" if len(names) > TOOLS_SHOWN else ""
    return ", ".join(names[:TOOLS_SHOWN]) + more
