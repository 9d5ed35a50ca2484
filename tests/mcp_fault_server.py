"""A small MCP server for the tests, with tools that fail in the ways real servers do.

Run as `python mcp_fault_server.py` (stdio) or `python mcp_fault_server.py http PORT` (streamable
HTTP on 127.0.0.1, answering only requests whose Authorization header is `Bearer $MCP_TEST_TOKEN`).
`die_once(marker)` exits the whole server while a call is in flight, the first time only (it
leaves `marker` behind); `hang` never answers in time.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

server = MCPServer("faults")
# A 1x1 PNG: what a screenshot tool returns, in miniature.
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360000002"
                      "0001e221bc330000000049454e44ae426082")


@server.tool()
def echo(text: str) -> str:
    """Say the text back."""
    return f"echo: {text}"


@server.tool()
def lookup(key: str) -> str:
    """Look a key up; an unknown key is refused with the tool's own error."""
    table = {"alpha": "1", "beta": "2"}
    if key not in table:
        raise ToolError(f"no such key: {key}")
    return table[key]


@server.tool()
async def hang(seconds: float = 3600.0) -> str:
    """Answer after `seconds`."""
    await asyncio.sleep(seconds)
    return "late"


@server.tool()
def die_once(marker: str) -> str:
    """The first call ends the server mid-call; later calls answer."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        os._exit(3)
    return f"survived; first server pid {path.read_text()}"


@server.tool(structured_output=False)
def picture() -> list[object]:
    """A caption and an image."""
    return ["a one-pixel picture", Image(data=PIXEL, format="png")]


def serve_http(port: int) -> None:
    import uvicorn
    from starlette.middleware.base import BaseHTTPMiddleware
    from starlette.responses import PlainTextResponse

    token = os.environ["MCP_TEST_TOKEN"]
    app = server.streamable_http_app()

    async def require_token(request, call_next):  # type: ignore[no-untyped-def]
        if request.headers.get("authorization") != f"Bearer {token}":
            return PlainTextResponse("missing or wrong token", status_code=401)
        return await call_next(request)

    app.add_middleware(BaseHTTPMiddleware, dispatch=require_token)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if os.environ.get("FAULT_SERVER_TOKEN"):
        # A server that logs its configuration, secrets and all, as some do.
        print(f"starting with token {os.environ['FAULT_SERVER_TOKEN']}", file=sys.stderr, flush=True)
    if sys.argv[1:2] == ["http"]:
        serve_http(int(sys.argv[2]))
    else:
        server.run()
