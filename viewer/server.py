"""Serving the viewer: uvicorn on a loopback socket the caller binds first (so the URL is known)."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from distill.shared.errors import DistillError

# Loopback only: the pages show prompts, tool results and file contents from the workspace.
LOOPBACK = "127.0.0.1"


class ViewerError(DistillError):
    """The viewer cannot start (a port in use, nothing to show)."""


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port (0 picks a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((LOOPBACK, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ViewerError(f"port {port} on {LOOPBACK} is in use: pick another with --port (0 picks a free one)") from None
        raise ViewerError(f"cannot listen on {LOOPBACK}:{port}: {error.strerror}") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}/"


def check_paths(paths: list[Path]) -> list[Path]:
    missing = [str(path) for path in paths if not Path(path).exists()]
    if missing:
        raise ViewerError(f"no such file or folder: {', '.join(missing)}")
    return [Path(path) for path in paths]


def serve(app: Starlette, sock: socket.socket) -> None:
    """Answer requests on `sock` until interrupted (Ctrl+C)."""
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
