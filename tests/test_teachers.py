"""The teacher pool: global caps, offload, local-only, failover, breaker, config errors."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, write_prompts
from test_pipeline import assert_exactly_once

from distill.coordinator.run import generate
from distill.shared.settings import Settings, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.worker.pool import Breaker


def started(**config) -> SimTeacher:  # type: ignore[no-untyped-def]
    teacher = SimTeacher(SimTeacherConfig(**config))
    teacher.start()
    return teacher


def run_with(tmp_path, run_name, redis_url, workspace, teachers, count, **extra):  # type: ignore[no-untyped-def]
    settings = Settings(run=run_name, out_dir=tmp_path / "runs", workspace=workspace, redis_url=redis_url,
                        teachers=teachers, **extra)
    result = generate(settings, write_prompts(tmp_path / "prompts.jsonl", count))
    assert_exactly_once(settings.run_dir(), {f"q{i:05d}" for i in range(count)})
    return result


def test_endpoint_cap_holds_across_two_actors(tmp_path, ray_session, redis_url, code_workspace, run_name):
    teacher = started(latency_s=0.25)
    try:
        result = run_with(tmp_path, run_name, redis_url, code_workspace,
                          [TeacherConfig(name="local", base_url=teacher.base_url, model="m", max_concurrency=3)],
                          24, concurrency=12, workers=2)
        peak = teacher.snapshot()["peak_in_flight"]
    finally:
        teacher.stop()
    assert result.conversations == 24
    assert 2 <= peak <= 3, f"peak {peak} with a cap of 3"
    assert result.endpoints["local"]["requests"] == 24 * 3


def test_local_first_offloads_only_the_overflow_to_cloud(tmp_path, ray_session, redis_url, code_workspace, run_name, monkeypatch):
    monkeypatch.setenv("SIM_CLOUD_KEY", "sk-test-offload")
    local, cloud = started(latency_s=0.3), started(latency_s=0.3)
    try:
        result = run_with(tmp_path, run_name, redis_url, code_workspace, [
            TeacherConfig(name="local", base_url=local.base_url, model="m", max_concurrency=2),
            TeacherConfig(name="cloud", kind="cloud", base_url=cloud.base_url, model="m", max_concurrency=4,
                          api_key_env="SIM_CLOUD_KEY", price_in_per_mtok=1.0, price_out_per_mtok=2.0),
        ], 24, concurrency=6)
        local_stats, cloud_stats = local.snapshot(), cloud.snapshot()
    finally:
        local.stop()
        cloud.stop()
    assert local_stats["peak_in_flight"] <= 2 and cloud_stats["peak_in_flight"] <= 4
    assert local_stats["requests"] > 0 and cloud_stats["requests"] > 0
    assert result.endpoints["cloud"]["cost_usd"] > 0
    assert result.endpoints["local"]["cost_usd"] is None


def test_local_only_never_sends_a_request_to_the_cloud(tmp_path, ray_session, redis_url, code_workspace, run_name, monkeypatch):
    monkeypatch.setenv("SIM_CLOUD_KEY", "sk-test-local-only")
    local, cloud = started(latency_s=0.1), started()
    try:
        result = run_with(tmp_path, run_name, redis_url, code_workspace, [
            TeacherConfig(name="local", base_url=local.base_url, model="m", max_concurrency=1),
            TeacherConfig(name="cloud", kind="cloud", base_url=cloud.base_url, model="m", api_key_env="SIM_CLOUD_KEY"),
        ], 6, concurrency=6, policy="local-only")
        cloud_requests = cloud.snapshot()["requests"]
    finally:
        local.stop()
        cloud.stop()
    assert result.conversations == 6
    assert cloud_requests == 0


def test_cloud_without_its_key_falls_back_to_local_only(tmp_path, ray_session, redis_url, code_workspace, run_name, monkeypatch):
    monkeypatch.delenv("SIM_MISSING_KEY", raising=False)
    local, cloud = started(), started()
    try:
        result = run_with(tmp_path, run_name, redis_url, code_workspace, [
            TeacherConfig(name="local", base_url=local.base_url, model="m"),
            TeacherConfig(name="cloud", kind="cloud", base_url=cloud.base_url, model="m", api_key_env="SIM_MISSING_KEY"),
        ], 4)
        cloud_requests = cloud.snapshot()["requests"]
    finally:
        local.stop()
        cloud.stop()
    assert result.policy == "local-only" and cloud_requests == 0


def test_failing_endpoint_fails_over_and_its_breaker_stops_traffic(tmp_path, ray_session, redis_url, code_workspace, run_name, monkeypatch):
    monkeypatch.setenv("SIM_CLOUD_KEY", "sk-test-failover")
    broken, healthy = started(fail_rate=1.0), started(latency_s=0.05)
    try:
        result = run_with(tmp_path, run_name, redis_url, code_workspace, [
            TeacherConfig(name="broken", base_url=broken.base_url, model="m", max_concurrency=4),
            TeacherConfig(name="healthy", kind="cloud", base_url=healthy.base_url, model="m", api_key_env="SIM_CLOUD_KEY"),
        ], 20, concurrency=4, retry_backoff_s=0.01, breaker_failures=2, breaker_cooldown_s=60)
        broken_requests = broken.snapshot()["requests"]
    finally:
        broken.stop()
        healthy.stop()
    assert result.conversations == 20 and result.dead == 0
    # Without the breaker every one of the 20 prompts would try the broken local endpoint first.
    assert broken_requests <= 6, broken_requests
    assert result.endpoints["broken"]["errors"] == broken_requests


def test_breaker_opens_then_lets_one_trial_through_and_closes():
    breaker = Breaker(failures_to_open=2, cooldown_s=5.0)
    assert breaker.allows(0.0)
    breaker.on_failure(0.0)
    assert breaker.allows(0.1)
    breaker.on_failure(0.2)
    assert not breaker.allows(1.0), "open during the cool-down"
    assert breaker.allows(5.3), "half-open after the cool-down"
    breaker.on_start(5.3)
    assert not breaker.allows(5.4), "only one trial at a time"
    breaker.on_success()
    assert breaker.allows(5.5) and breaker.consecutive_failures == 0


def test_retry_after_keeps_the_breaker_open_that_long():
    breaker = Breaker(failures_to_open=5, cooldown_s=1.0)
    breaker.on_failure(10.0, retry_after_s=7.0)
    assert not breaker.allows(16.0) and breaker.allows(17.1)


def run_cli(tmp_path, config_text: str, *extra: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    config = tmp_path / "distill.toml"
    config.write_text(config_text)
    prompts = write_prompts(tmp_path / "p.jsonl", 1)
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "distill", "generate", str(prompts), "--config", str(config), "--run", "cfg",
         "--out-dir", str(tmp_path / "runs"), "--no-progress", *extra],
        capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path,
    )


def test_bad_configs_give_one_clear_line_each(tmp_path):
    teacher = '[[teachers]]\nname = "t"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
    cases = {
        "unknown key": ("colour = 1\n" + teacher, "distill.toml: field colour: unknown key"),
        "zero concurrency": (teacher + "max_concurrency = 0\n", "field teachers.0.max_concurrency: Input should be greater than 0"),
        "missing key variable": (teacher + 'api_key_env = "DISTILL_TEST_NOPE"\n', "environment variable DISTILL_TEST_NOPE is not set"),
        "unreachable cloud only": (teacher.replace('model = "m"', 'model = "m"\nkind = "cloud"'), "no teacher is usable"),
        "not toml": ("[[teachers]\n", "distill.toml: Expected"),
    }
    for name, (text, expected) in cases.items():
        done = run_cli(tmp_path, text)
        assert done.returncode == 2, (name, done.stderr)
        assert expected in done.stderr, (name, done.stderr)
        assert "Traceback" not in done.stderr, name


def test_a_slot_is_held_per_request_and_handed_straight_to_the_next(redis_url, run_name):
    """Cap 1: a conversation running its tools holds no slot; a waiting request gets the same lease."""
    import asyncio

    import redis.asyncio as aioredis

    from distill.shared.keys import endpoint_leases_key
    from distill.worker.pool import EndpointPool

    teacher = TeacherConfig(name="t", base_url=f"http://127.0.0.1:9/{run_name}/v1", model="m", max_concurrency=1)
    key = endpoint_leases_key(teacher.base_url, teacher.model)

    async def scenario() -> dict:
        client = aioredis.Redis.from_url(redis_url, decode_responses=True)
        pool = EndpointPool([teacher], client)
        seen: dict = {}
        try:
            async with pool.seat() as first:
                async with first.request():
                    seen["first"] = await client.zrange(key, 0, -1)
                # `first` is between requests (its tools run): a second conversation starts at once.
                async with asyncio.timeout(2), pool.seat() as second:
                    waiting = asyncio.create_task(_one_request(first))
                    async with second.request():
                        seen["second"] = await client.zrange(key, 0, -1)
                        await asyncio.sleep(0.05)
                        seen["queued"] = len(pool.waiting["t"])
                    seen["handed"] = await waiting
                # A request given up while it waits (a conversation's timeout) leaks nothing.
                async with first.request():
                    doomed = asyncio.create_task(_one_request(first))
                    await asyncio.sleep(0.05)
                    doomed.cancel()
                await asyncio.gather(doomed, return_exceptions=True)
                seen["after"] = await client.zrange(key, 0, -1)
        finally:
            await client.aclose()
        return seen

    async def _one_request(seat) -> list[str]:  # type: ignore[no-untyped-def]
        async with seat.request():
            return await seat.pool.redis.zrange(key, 0, -1)

    seen = asyncio.run(scenario())
    assert len(seen["first"]) == 1 and seen["first"][0].startswith("s"), seen
    assert len(seen["second"]) == 1 and seen["second"] != seen["first"], seen
    assert seen["queued"] == 1, "the cap held: the second request waited"
    assert seen["handed"] == seen["second"], "handed over in the worker, no new lease"
    assert seen["after"] == [], seen


def test_a_slot_freed_by_another_worker_wakes_the_waiting_one(redis_url, run_name, monkeypatch):
    """Two workers' pools, cap 1: the waiting worker blocks on Redis and is woken by the release."""
    import asyncio

    import redis.asyncio as aioredis

    from distill.shared.keys import endpoint_leases_key
    from distill.worker import pool as pool_module
    from distill.worker.pool import EndpointPool

    # Far longer than the test may take: only the release's notification can wake the waiter.
    monkeypatch.setattr(pool_module, "WATCH_S", 60.0)
    teacher = TeacherConfig(name="t", base_url=f"http://127.0.0.1:9/{run_name}/v1", model="m", max_concurrency=1)

    async def scenario() -> tuple[int, list[str]]:
        clients = [aioredis.Redis.from_url(redis_url, decode_responses=True) for _ in range(2)]
        here, there = (EndpointPool([teacher], client) for client in clients)
        try:
            async with here.seat() as holder:
                async with holder.request():
                    waiting = asyncio.create_task(_request_in(there, teacher))
                    await asyncio.sleep(0.2)
                    blocked = len(there.waiting["t"])
                # Nothing waits in `here`: the lease goes back to Redis, and `there` is told.
                async with asyncio.timeout(20):
                    await waiting
            left = await clients[0].zrange(endpoint_leases_key(teacher.base_url, teacher.model), 0, -1)
        finally:
            for client in clients:
                await client.aclose()
        return blocked, left

    async def _request_in(pool, teacher):  # type: ignore[no-untyped-def]
        lease = await pool.slot(teacher)
        await pool.give_back(lease)

    blocked, left = asyncio.run(scenario())
    assert blocked == 1, "the other worker's request waited for the slot"
    assert left == [], left
