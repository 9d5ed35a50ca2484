"""The one retry policy: how every distill process rides out a Redis outage, and with what backoff.

Two layers, one set of numbers (exponential backoff from FIRST_S, capped at MAX_S):
- every Redis client retries a failed command a few times itself (redis-py's `Retry` with
  `ExponentialBackoff`), so a dropped connection or a server back within a second goes unnoticed;
- a longer outage reaches the caller, who waits it out with tenacity (`outlast_redis`): a worker
  for as long as it takes, a worker publishing a finished conversation for a few minutes, the
  coordinator for `redis_outage_s`, reviving its embedded server between tries (coordinator/run.py).
Other restarts (a teacher server, a slot on a busy teacher) use `backoff()` with their own bounds.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
import redis.asyncio.retry
import redis.retry
import tenacity
from redis.backoff import ExponentialBackoff
from tenacity.wait import wait_base

FIRST_S = 0.2
MAX_S = 5.0
# Per command, inside the client: 0.2 + 0.4 + 0.8 s, then the caller's own patience takes over.
CLIENT_RETRIES = 3
# What "Redis is away" looks like; the asyncio client raises the same classes.
REDIS_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)


def backoff(first_s: float = FIRST_S, max_s: float = MAX_S) -> wait_base:
    """Exponential backoff with a little jitter, so workers that lost Redis together don't return together."""
    return tenacity.wait_exponential_jitter(initial=first_s, max=max_s, jitter=first_s)


def client_retry() -> redis.retry.Retry:
    """For sync clients (`distill.shared.connection.connect`)."""
    return redis.retry.Retry(ExponentialBackoff(cap=MAX_S, base=FIRST_S / 2), CLIENT_RETRIES)


def async_client_retry() -> redis.asyncio.retry.Retry:
    """For asyncio clients (the worker's)."""
    return redis.asyncio.retry.Retry(ExponentialBackoff(cap=MAX_S, base=FIRST_S / 2), CLIENT_RETRIES)


def _policy(
    patience_s: float | None, log: logging.Logger | None, also: tuple[type[BaseException], ...]
) -> dict[str, Any]:
    return dict(
        retry=tenacity.retry_if_exception_type(REDIS_DOWN + also),
        wait=backoff(),
        stop=tenacity.stop_never if patience_s is None else tenacity.stop_after_delay(patience_s),
        before_sleep=tenacity.before_sleep_log(log, logging.WARNING) if log is not None else None,
        reraise=True,
    )


def outlast_redis(
    patience_s: float | None, log: logging.Logger | None = None, also: tuple[type[BaseException], ...] = ()
) -> tenacity.Retrying:
    """Retry while Redis is away, for `patience_s` (None: forever); then the last error is raised.

    `also`: more exception types that mean "not back yet" (starting a server raises OSError).
    Use as `for attempt in outlast_redis(...): with attempt: ...`, or as a decorator.
    """
    return tenacity.Retrying(**_policy(patience_s, log, also))


def outlast_redis_async(
    patience_s: float | None, log: logging.Logger | None = None, also: tuple[type[BaseException], ...] = ()
) -> tenacity.AsyncRetrying:
    """`outlast_redis` for coroutines: `async for attempt in ...`, or as a decorator."""
    return tenacity.AsyncRetrying(**_policy(patience_s, log, also))
