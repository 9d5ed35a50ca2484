"""How distill's processes reach each other: the Redis client, loopback ports, URLs safe to show."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

from distill.shared.retry import async_client_retry, client_retry


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def redact_url(url: str) -> str:
    """The URL with any password replaced, for logs, manifests and status output."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def connect(url: str) -> redis.Redis:
    """A client that answers str, with a socket timeout so a vanished server is an error, not a hang.

    Commands retry a brief outage themselves (distill.shared.retry); a longer one is the caller's.
    """
    return redis.Redis.from_url(
        url, decode_responses=True, socket_timeout=30, socket_connect_timeout=10, health_check_interval=30,
        retry=client_retry(),
    )


def connect_async(url: str, **options: Any) -> redis.asyncio.Redis:
    """`connect` for asyncio (the workers, `distill verify`); `options` override the defaults."""
    settings: dict[str, Any] = dict(decode_responses=True, socket_timeout=30, socket_connect_timeout=10,
                                    health_check_interval=30, retry=async_client_retry())
    return redis.asyncio.Redis.from_url(url, **{**settings, **options})
