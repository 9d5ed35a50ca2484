"""The teacher pool: which endpoint runs the next conversation, and how many may run at once.

- Global caps: a conversation holds a lease on its endpoint, kept in Redis as a sorted set of
  lease ids scored by expiry. Every worker on every machine takes leases from the same set, so
  the requests in flight to one endpoint never exceed its `max_concurrency` in total. A worker
  that dies without returning its lease loses it when the lease expires (it is renewed while the
  conversation runs).
- Policies: `local-first` fills local endpoints and lets cloud ones take the overflow (offload);
  `spread` weighs endpoints by free capacity; `local-only` / `cloud-only` never touch the others.
- Health: a circuit breaker per endpoint opens after consecutive failures (or a 429's
  Retry-After) and lets one trial conversation through once its cool-down has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
import redis.asyncio as aioredis

from shared.keys import endpoint_leases_key
from shared.settings import Policy, TeacherConfig

LEASE_TTL_S = 30.0

# KEYS: leases; ARGV: now, expiry, lease id, cap. Returns 1 when the lease was granted.
ACQUIRE_SCRIPT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
  redis.call('EXPIRE', KEYS[1], 3600)
  return 1
end
return 0
"""


@dataclass
class Breaker:
    failures_to_open: int = 3
    cooldown_s: float = 10.0
    consecutive_failures: int = 0
    open_until: float = 0.0
    trial_in_flight: bool = False

    def allows(self, now: float) -> bool:
        if self.consecutive_failures < self.failures_to_open and now >= self.open_until:
            return True
        # Half-open: once the cool-down is over, one conversation tries the endpoint.
        return now >= self.open_until and not self.trial_in_flight

    def on_start(self, now: float) -> None:
        if self.consecutive_failures >= self.failures_to_open or now < self.open_until:
            self.trial_in_flight = True

    def on_success(self) -> None:
        self.consecutive_failures = 0
        self.open_until = 0.0
        self.trial_in_flight = False

    def on_failure(self, now: float, retry_after_s: float | None = None) -> None:
        self.trial_in_flight = False
        self.consecutive_failures += 1
        if retry_after_s:
            self.open_until = max(self.open_until, now + retry_after_s)
        elif self.consecutive_failures >= self.failures_to_open:
            self.open_until = now + self.cooldown_s


@dataclass
class Lease:
    teacher: TeacherConfig
    lease_id: str
    key: str
    outcome: str = "unknown"


@dataclass
class EndpointPool:
    teachers: Sequence[TeacherConfig]
    redis: aioredis.Redis
    policy: Policy = "local-first"
    breaker_failures: int = 3
    breaker_cooldown_s: float = 10.0
    breakers: dict[str, Breaker] = field(default_factory=dict)

    def __post_init__(self) -> None:
        eligible = self.eligible()
        if not eligible:
            raise ValueError(f"policy {self.policy} leaves no teacher to use")
        for teacher in self.teachers:
            self.breakers[teacher.name] = Breaker(self.breaker_failures, self.breaker_cooldown_s)
        self._acquire = self.redis.register_script(ACQUIRE_SCRIPT)

    def eligible(self) -> list[TeacherConfig]:
        if self.policy == "local-only":
            return [t for t in self.teachers if t.kind == "local"]
        if self.policy == "cloud-only":
            return [t for t in self.teachers if t.kind == "cloud"]
        return list(self.teachers)

    def _candidates(self, avoid: set[str]) -> list[TeacherConfig]:
        now = time.monotonic()
        usable = [t for t in self.eligible() if self.breakers[t.name].allows(now)]
        preferred = [t for t in usable if t.name not in avoid] or usable
        if self.policy == "local-first":
            # Local before cloud, then by priority (higher first); ties keep config order.
            return sorted(preferred, key=lambda t: (t.kind != "local", -t.priority))
        if self.policy == "spread":
            weights = [t.max_concurrency for t in preferred]
            ordered: list[TeacherConfig] = []
            pool = list(zip(preferred, weights))
            while pool:
                pick = random.choices(range(len(pool)), weights=[w for _, w in pool])[0]
                ordered.append(pool.pop(pick)[0])
            return ordered
        return sorted(preferred, key=lambda t: -t.priority)

    async def _try_acquire(self, teacher: TeacherConfig) -> Lease | None:
        key = endpoint_leases_key(teacher.base_url, teacher.model)
        lease_id = secrets.token_hex(8)
        now = time.time()
        granted = await self._acquire(keys=[key], args=[now, now + LEASE_TTL_S, lease_id, teacher.max_concurrency])
        return Lease(teacher, lease_id, key) if granted else None

    @contextlib.asynccontextmanager
    async def lease(self, avoid: set[str] | None = None, wait_s: float = 3600.0) -> AsyncIterator[Lease]:
        """Wait for a free slot on the best endpoint the policy allows, and hold it."""
        deadline = time.monotonic() + wait_s
        delay = 0.02
        lease: Lease | None = None
        while lease is None:
            for teacher in self._candidates(avoid or set()):
                lease = await self._try_acquire(teacher)
                if lease is not None:
                    break
            if lease is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("no teacher had a free slot")
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(0.5, delay * 1.5)
        breaker = self.breakers[lease.teacher.name]
        breaker.on_start(time.monotonic())
        renew = asyncio.create_task(self._renew(lease))
        try:
            yield lease
        finally:
            renew.cancel()
            if lease.outcome == "unknown":
                breaker.trial_in_flight = False
            await self.redis.zrem(lease.key, lease.lease_id)

    async def _renew(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            with contextlib.suppress(Exception):
                await self.redis.zadd(lease.key, {lease.lease_id: time.time() + LEASE_TTL_S}, xx=True)

    def record_success(self, lease: Lease) -> None:
        lease.outcome = "ok"
        self.breakers[lease.teacher.name].on_success()

    def record_failure(self, lease: Lease, retry_after_s: float | None = None) -> None:
        lease.outcome = "failed"
        self.breakers[lease.teacher.name].on_failure(time.monotonic(), retry_after_s)
