"""The run's numbers, read from Redis and the output files: progress, summary and status share them."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import redis

from distill.shared.jsonl import count_lines
from distill.shared.keys import TASKS_GROUP, RunKeys, endpoint_leases_key, tool_time_ms
from distill.shared.records import CONVERSATIONS_FILE, DEAD_FILE, utcnow
from distill.shared.settings import TeacherConfig


def endpoint_stats(client: redis.Redis, keys: RunKeys, teachers: list[TeacherConfig]) -> dict[str, dict[str, Any]]:
    """Per-endpoint numbers: requests, in flight, errors, tokens, mean latency, estimated cost."""
    stats: dict[str, dict[str, Any]] = {}
    for teacher in teachers:
        raw = client.hgetall(keys.endpoint_stats(teacher.name))
        requests = int(raw.get("requests", 0))
        tokens_in, tokens_out = int(raw.get("input_tokens", 0)), int(raw.get("output_tokens", 0))
        cost = None
        if teacher.price_in_per_mtok is not None or teacher.price_out_per_mtok is not None:
            cost = (tokens_in * (teacher.price_in_per_mtok or 0) + tokens_out * (teacher.price_out_per_mtok or 0)) / 1e6
        stats[teacher.name] = {
            "kind": teacher.kind,
            "conversations": int(raw.get("conversations", 0)),
            "requests": requests,
            "in_flight": int(client.zcount(endpoint_leases_key(teacher.base_url, teacher.model), time.time(), "+inf")),
            "errors": int(raw.get("errors", 0)),
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "mean_latency_s": round(float(raw.get("teacher_s", 0.0)) / requests, 4) if requests else None,
            "cost_usd": round(cost, 6) if cost is not None else None,
        }
    return stats


OUTCOMES = ("ok", "tool_error", "infra_error")


def tool_stats(client: redis.Redis, keys: RunKeys) -> dict[str, dict[str, Any]]:
    """Per tool: executions by outcome, and p50/p95 execution time in ms (from the workers' histograms)."""
    stats: dict[str, dict[str, Any]] = {}
    for field, count in client.hgetall(keys.tool_calls).items():
        tool, _, outcome = field.rpartition("|")
        entry = stats.setdefault(tool, {**{o: 0 for o in OUTCOMES}, "p50_ms": None, "p95_ms": None})
        entry[outcome] = entry.get(outcome, 0) + int(count)
    histograms: dict[str, list[tuple[int, int]]] = {}
    for field, count in client.hgetall(keys.tool_times).items():
        tool, _, bucket = field.rpartition("|")
        histograms.setdefault(tool, []).append((int(bucket), int(count)))
    for tool, buckets in histograms.items():
        entry = stats.setdefault(tool, {**{o: 0 for o in OUTCOMES}, "p50_ms": None, "p95_ms": None})
        entry["p50_ms"], entry["p95_ms"] = (round(percentile(buckets, q), 2) for q in (0.5, 0.95))
    return dict(sorted(stats.items()))


def percentile(buckets: list[tuple[int, int]], share: float) -> float:
    """The time below which `share` of the executions fall, to a bucket's width."""
    total = sum(count for _, count in buckets)
    seen = 0
    for bucket, count in sorted(buckets):
        seen += count
        if seen >= share * total:
            return tool_time_ms(bucket)
    return tool_time_ms(max(bucket for bucket, _ in buckets))


def infra_errors(tools: dict[str, dict[str, Any]]) -> int:
    return sum(entry.get("infra_error", 0) for entry in tools.values())


def snapshot(
    client: redis.Redis,
    keys: RunKeys,
    total: int,
    counts: dict[str, int] | None,
    teachers: list[TeacherConfig],
    *,
    finished: bool,
) -> dict[str, Any]:
    pending = client.xpending(keys.tasks, TASKS_GROUP)["pending"] if client.exists(keys.tasks) else 0
    done = int(client.scard(keys.done))
    dead = int(client.xlen(keys.dead)) if counts is None else counts["dead"]
    return {
        "run": keys.run,
        "total": total,
        "done": done if counts is None else counts["conversations"] + counts["dead"],
        "dead": dead,
        "in_flight": int(pending),
        "queued": int(client.xlen(keys.tasks)) - int(pending) if client.exists(keys.tasks) else 0,
        "retries": int(client.hget(keys.stats, "retries") or 0),
        "endpoints": endpoint_stats(client, keys, teachers),
        "tool_processes": sum(int(n) for n in client.hvals(keys.tool_processes)),
        "tools": tool_stats(client, keys),
        "coordinator_pid": os.getpid(),
        "coordinator_host": socket.gethostname(),
        "finished": finished,
        "updated_at": utcnow().isoformat(),
    }


def count_records(run_dir: Path) -> dict[str, int]:
    return {"conversations": count_lines(run_dir / CONVERSATIONS_FILE), "dead": count_lines(run_dir / DEAD_FILE)}


