"""What a `distill doctor` check is (a line: what was found, and how to fix it), and the network
helpers that several checks share."""

from __future__ import annotations

import socket
from typing import Any

from pydantic import BaseModel

TCP_TIMEOUT_S = 3.0


class Check(BaseModel):
    name: str
    ok: bool
    required: bool = True
    detail: str
    hint: str | None = None

    @property
    def failed_required(self) -> bool:
        return self.required and not self.ok


def first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def host_port(address: str) -> tuple[str, int] | None:
    text = address.split("://", 1)[-1].rsplit("@", 1)[-1].split("/", 1)[0]
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def tcp_problem(address: str) -> str | None:
    """None when host:port accepts a TCP connection; otherwise why not. `auto` is not checked."""
    if address == "auto":
        return None
    parsed = host_port(address)
    if parsed is None:
        return "not HOST:PORT"
    try:
        with socket.create_connection(parsed, timeout=TCP_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{parsed[0]}:{parsed[1]} does not accept connections ({error.strerror or type(error).__name__})"
