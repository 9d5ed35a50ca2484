"""The teacher pool: which endpoint runs the next conversation, and how many requests may run at once.

- Global caps: every request to a teacher holds a lease on its endpoint, kept in Redis as a sorted
  set of lease ids scored by expiry. Every worker on every machine takes leases from the same set,
  so the requests in flight to one endpoint never exceed its `max_concurrency` in total. A worker
  that dies without returning its lease loses it when the lease expires (it is renewed while held).
- A lease is held for one request, not a whole conversation, so a teacher slot never sits idle
  while a conversation runs its tools; more conversations than slots keep a teacher busy.
- A conversation stays on the teacher it started on (one teacher's answers per record). Within a
  worker a returned lease goes straight to the next of its requests waiting for that teacher,
  with no Redis round trip; it goes back to Redis only when none waits.
- Policies decide where a conversation starts: `local-first` fills local endpoints and lets cloud
  ones take the overflow (offload); `spread` weighs endpoints by their caps; `local-only` /
  `cloud-only` never touch the others. Every start is a grant of the Redis lease script, so
  "offload only while local is full" holds exactly.
- Health: a circuit breaker per endpoint opens after consecutive failed conversations (or a 429's
  Retry-After) and lets one trial conversation through once its cool-down has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import redis.asyncio as aioredis
import tenacity
from redis.exceptions import RedisError

from distill.shared.keys import endpoint_freed_key, endpoint_leases_key
from distill.shared.retry import backoff
from distill.shared.settings import Policy, TeacherConfig, eligible_teachers

log = logging.getLogger(__name__)

T = TypeVar("T")

LEASE_TTL_S = 30.0
# A worker whose requests wait for a slot blocks on the endpoint's "freed" list, which every worker
# pushes to when it gives a lease back to Redis; at most this long, so an expired lease (a dead
# worker's) is noticed too.
WATCH_S = 1.0
# Notifications kept while no one waits. One: a notification that outlives its slot (a starting
# conversation took it directly) costs each watcher that starts later a futile lease attempt.
FREED_KEPT = 1
# A conversation waiting to start: woken by this worker's releases, else it retries this often.
POLL_FIRST_S = 0.01
POLL_MAX_S = 0.5
# The lease id says what it was granted for ("s": a conversation's start, "r": a later request),
# so the command log of a run shows where conversations started.
START, REQUEST = "s", "r"

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


# KEYS: leases, freed; ARGV: lease id, notifications kept. One round trip, as a bare ZREM was.
RELEASE_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[2], '1')
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[2], 3600)
return 1
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
    """One slot on one endpoint, granted by Redis and renewed until it goes back there."""

    teacher: TeacherConfig
    lease_id: str
    key: str
    renewal: asyncio.Task[None] | None = None

    @property
    def freed_key(self) -> str:
        return endpoint_freed_key(self.key)


@dataclass
class Seat:
    """A conversation's place on the teacher it started on; `request()` holds a slot per request."""

    pool: EndpointPool
    teacher: TeacherConfig
    held: Lease | None
    outcome: str = "unknown"

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        lease, self.held = self.held, None
        if lease is None:
            lease = await self.pool.slot(self.teacher)
        try:
            yield
        finally:
            await self.pool.give_back(lease)


@dataclass
class EndpointPool:
    teachers: Sequence[TeacherConfig]
    redis: aioredis.Redis
    policy: Policy = "local-first"
    breaker_failures: int = 3
    breaker_cooldown_s: float = 10.0
    breakers: dict[str, Breaker] = field(default_factory=dict)
    # This worker's requests waiting for a slot, per teacher, first come first served.
    waiting: dict[str, deque[asyncio.Future[Lease]]] = field(default_factory=dict)
    # This worker's conversations waiting to start; one is woken each time a lease goes back to Redis.
    starting: deque[asyncio.Future[None]] = field(default_factory=deque)
    # Per teacher, while requests wait: the task that takes slots other workers free (see _watch).
    watchers: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    lease_keys: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        eligible = self.eligible()
        if not eligible:
            raise ValueError(f"policy {self.policy} leaves no teacher to use")
        for teacher in self.teachers:
            self.breakers[teacher.name] = Breaker(self.breaker_failures, self.breaker_cooldown_s)
            self.waiting[teacher.name] = deque()
            self.lease_keys[teacher.name] = endpoint_leases_key(teacher.base_url, teacher.model)
        self._acquire = self.redis.register_script(ACQUIRE_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)

    def eligible(self) -> list[TeacherConfig]:
        return eligible_teachers(self.teachers, self.policy)

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
            pool = list(zip(preferred, weights, strict=True))
            while pool:
                pick = random.choices(range(len(pool)), weights=[w for _, w in pool])[0]
                ordered.append(pool.pop(pick)[0])
            return ordered
        return sorted(preferred, key=lambda t: -t.priority)

    async def _try_acquire(self, teacher: TeacherConfig, purpose: str) -> Lease | None:
        key = self.lease_keys[teacher.name]
        lease_id = purpose + secrets.token_hex(8)
        now = time.time()
        granted = await self._acquire(keys=[key], args=[now, now + LEASE_TTL_S, lease_id, teacher.max_concurrency])
        if not granted:
            return None
        lease = Lease(teacher, lease_id, key)
        lease.renewal = asyncio.create_task(self._renew(lease))
        return lease

    @contextlib.asynccontextmanager
    async def seat(self, avoid: set[str] | None = None, wait_s: float = 3600.0) -> AsyncIterator[Seat]:
        """Start a conversation on the best endpoint the policy allows, holding its first slot."""
        # Until a slot is free: tries spaced by backoff, and woken early when this worker frees one.
        waiting = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_result(lambda lease: lease is None),
            wait=backoff(POLL_FIRST_S, POLL_MAX_S),
            stop=tenacity.stop_after_delay(wait_s),
            sleep=self._wait_to_start,
            retry_error_callback=_no_free_slot,
        )
        lease: Lease = await waiting(self._start_lease, avoid or set())
        breaker = self.breakers[lease.teacher.name]
        breaker.on_start(time.monotonic())
        seat = Seat(self, lease.teacher, lease)
        try:
            yield seat
        finally:
            if seat.held is not None:
                await self.give_back(seat.held)
            if seat.outcome == "unknown":
                breaker.trial_in_flight = False

    async def _start_lease(self, avoid: set[str]) -> Lease | None:
        for teacher in self._candidates(avoid):
            # Requests of running conversations come first: they free a conversation sooner.
            if not self.waiting[teacher.name]:
                lease = await self._try_acquire(teacher, START)
                if lease is not None:
                    return lease
        return None

    async def _wait_to_start(self, timeout_s: float) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.starting.append(woken)
        try:
            await asyncio.wait([woken], timeout=timeout_s)
        finally:
            with contextlib.suppress(ValueError):
                self.starting.remove(woken)

    async def slot(self, teacher: TeacherConfig) -> Lease:
        """A slot on `teacher` for one request: handed over by this worker, or granted by Redis."""
        queue = self.waiting[teacher.name]
        if not queue:
            lease = await self._try_acquire(teacher, REQUEST)
            if lease is not None:
                return lease
        handed: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        queue.append(handed)
        self._watch(teacher)
        try:
            return await handed
        except BaseException:
            # Cancelled (the conversation timed out) just as a lease was handed over: pass it on.
            if handed.done() and not handed.cancelled():
                await self.give_back(handed.result())
            raise
        finally:
            with contextlib.suppress(ValueError):
                queue.remove(handed)

    def _watch(self, teacher: TeacherConfig) -> None:
        if teacher.name not in self.watchers:
            watcher = asyncio.create_task(self._watching(teacher))
            self.watchers[teacher.name] = watcher
            watcher.add_done_callback(lambda _task: self.watchers.pop(teacher.name, None))

    async def _watching(self, teacher: TeacherConfig) -> None:
        """Takes slots that other workers give back for this worker's waiting requests.

        One blocking read per teacher and worker instead of every waiter polling: idle waiting costs
        Redis nothing, and a slot freed anywhere is taken within a round trip.
        """
        queue = self.waiting[teacher.name]
        freed = endpoint_freed_key(self.lease_keys[teacher.name])

        def waits() -> bool:
            return any(not handed.done() for handed in queue)

        while waits():
            try:
                await self.redis.blpop([freed], timeout=WATCH_S)
                lease = await self._try_acquire(teacher, REQUEST) if waits() else None
            except (RedisError, OSError) as error:
                log.warning("watching %s for free slots: %s; trying again in %.0f s", teacher.name, error, WATCH_S)
                await asyncio.sleep(WATCH_S)  # Redis away: the worker's loop waits for it too
                continue
            if lease is not None:
                await self.give_back(lease)

    async def give_back(self, lease: Lease) -> None:
        """To this worker's next request waiting for the teacher, else back to Redis."""
        if _wake_first(self.waiting[lease.teacher.name], lease):
            return
        if lease.renewal is not None:
            lease.renewal.cancel()
        await self._release(keys=[lease.key, lease.freed_key], args=[lease.lease_id, FREED_KEPT])
        _wake_first(self.starting, None)

    async def _renew(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL_S / 3)
            try:
                await self.redis.zadd(lease.key, {lease.lease_id: time.time() + LEASE_TTL_S}, xx=True)
            except Exception as error:  # noqa: BLE001 - the next renewal tries again; expiry only frees a slot
                log.warning("lease on %s not renewed: %s", lease.teacher.name, error)

    def record_success(self, seat: Seat) -> None:
        seat.outcome = "ok"
        self.breakers[seat.teacher.name].on_success()

    def record_failure(self, seat: Seat, retry_after_s: float | None = None) -> None:
        seat.outcome = "failed"
        self.breakers[seat.teacher.name].on_failure(time.monotonic(), retry_after_s)


def _no_free_slot(state: tenacity.RetryCallState) -> None:
    raise TimeoutError("no teacher had a free slot")


def _wake_first(waiters: deque[asyncio.Future[T]], value: T) -> bool:
    """Give `value` to the first waiter still waiting (others gave up); False if there is none."""
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(value)
            return True
    return False
