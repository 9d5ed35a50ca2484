"""One generation measurement in a fresh process (Ray joins one cluster per process).

    python -m bench.generation '{"concurrency": 8, "latency_s": 0.2, "seconds_per_token": 0.04, "prompts": 500}'

prints a JSON object. The simulated teacher takes `latency_s + seconds_per_token * tokens` per
request and records when each request started and ended, so the figures come from the teacher's
side of the wire:

- ideal_rps: C / mean service time (C / latency for a fixed latency), the most any client can get.
- efficiency: busy slot-seconds / (C x window) over the saturated window, which runs from the first
  request to the moment the last prompt reached the teacher. After that no orchestrator can fill
  the slots (there is no work left), so the tail is reported apart, as efficiency_whole_run.
- CPU per request for every process on the box: workers, coordinator, Redis, the simulated teacher
  and the rest (Ray's own daemons), so a shortfall can be pinned on its cause.

BENCH_TRACE_OUT=path.json writes the teacher's per-request (start, end, opens) trace, to look at
in-flight over time (that is how the lockstep waves of a jitter-free teacher were found).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import psutil

from bench.simproc import sim_teacher_process, stats
from bench.workspace import workspace_for
from distill.coordinator.redis_server import EmbeddedRedis
from distill.shared.connection import connect
from distill.shared.settings import GenerationLimits, Settings, TeacherConfig


def write_prompts(path: Path, count: int) -> Path:
    topics = ["Collector", "EmbeddedRedis", "requeue_orphans", "WorkerSpec", "RunKeys", "check_prompts"]
    with path.open("w") as handle:
        for index in range(count):
            handle.write(json.dumps({"id": f"b{index:07d}", "prompt": f"Where is {topics[index % 6]} defined? #{index}"}) + "\n")
    return path


def trace(url: str) -> list[tuple[float, float, bool]]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/trace", timeout=30) as response:
        return [tuple(row) for row in json.loads(response.read())]


def saturation(rows: list[tuple[float, float, bool]], slots: int) -> tuple[float, float]:
    """(busy fraction of the teacher's slots, window seconds) from first request to last prompt start."""
    start = min(row[0] for row in rows)
    end = max(row[0] for row in rows if row[2])
    window = end - start
    if window <= 0:
        return 1.0, 0.0
    busy = sum(max(0.0, min(b, end) - max(a, start)) for a, b, _ in rows)
    return busy / (slots * window), window


def redis_cpu_s(client) -> float:  # type: ignore[no-untyped-def]
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def box_cpu_s() -> float:
    times = psutil.cpu_times()
    return times.user + times.system + getattr(times, "nice", 0.0)


class CpuSampler:
    """Box and coordinator CPU sampled every 50 ms, so a figure covers the traffic span only.

    Start-up (Ray, the workers' imports, enqueue) is paid once per run; charged to requests it would
    swamp the per-request figure of a short run.
    """

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), box_cpu_s(), time.process_time()))
            self._stop.wait(0.05)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.time(), box_cpu_s(), time.process_time()))

    def between(self, start: float, end: float) -> tuple[float, float]:
        """(box CPU s, coordinator CPU s) spent between two wall-clock times."""
        def at(moment: float, column: int) -> float:
            for (t0, *v0), (t1, *v1) in zip(self.samples, self.samples[1:], strict=False):
                if t0 <= moment <= t1:
                    share = (moment - t0) / (t1 - t0) if t1 > t0 else 0.0
                    return v0[column] + share * (v1[column] - v0[column])
            return (self.samples[0] if moment < self.samples[0][0] else self.samples[-1])[column + 1]

        return at(end, 0) - at(start, 0), at(end, 1) - at(start, 1)


def measure(concurrency: int, latency_s: float, prompts: int, nodes: int = 1, workers: int | None = None,
            seconds_per_token: float = 0.0, length_jitter: float = 0.0, in_flight: int | None = None,
            workspace: str = "fixed", tool_rounds: int = 2) -> dict:
    import ray

    from distill.coordinator.run import generate

    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        root = Path(scratch)
        if nodes > 1:
            from ray.cluster_utils import Cluster

            node_args = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
            cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
            for _ in range(nodes - 1):
                cluster.add_node(**node_args)
            cluster.wait_for_nodes()
            stack.callback(cluster.shutdown)
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        stack.callback(ray.shutdown)
        server = EmbeddedRedis(root / "redis")
        url = server.start()
        stack.callback(server.stop)
        teachers = []
        for index in range(nodes):
            teacher_url = stack.enter_context(sim_teacher_process(latency_s, seconds_per_token=seconds_per_token,
                                                                        length_jitter=length_jitter,
                                                                        tool_rounds=tool_rounds))
            teachers.append(TeacherConfig(name=f"sim{index}", base_url=teacher_url, model="sim",
                                          max_concurrency=concurrency, timeout_s=120))
        settings = Settings(
            run="bench", out_dir=root / "runs", workspace=workspace_for(workspace, root), redis_url=url,
            # Conversations in flight: distill's default (the slots plus a quarter) unless given.
            teachers=teachers, policy="spread", concurrency=in_flight,
            workers=workers or max(nodes, 2 if concurrency >= 64 else 1),
            limits=GenerationLimits(max_tool_calls=8),
        )
        client = connect(url)
        prompts_file = write_prompts(root / "p.jsonl", prompts)
        commands_before = int(client.info("stats")["total_commands_processed"])
        redis_before = redis_cpu_s(client)
        teacher_before = sum(stats(t.base_url)["process_cpu_s"] for t in teachers)
        with CpuSampler() as sampler:
            result = generate(settings, prompts_file)
        redis_cpu = redis_cpu_s(client) - redis_before
        commands = int(client.info("stats")["total_commands_processed"]) - commands_before
        teacher_stats = [stats(t.base_url) for t in teachers]
        traces = [trace(t.base_url) for t in teachers]
    if os.environ.get("BENCH_TRACE_OUT"):
        Path(os.environ["BENCH_TRACE_OUT"]).write_text(json.dumps(traces))
    teacher_cpu = sum(s["process_cpu_s"] for s in teacher_stats) - teacher_before
    requests = sum(s["completed"] for s in teacher_stats)
    first = min(s["first_request_at"] for s in teacher_stats)
    span = max(s["last_response_at"] for s in teacher_stats) - first
    box_cpu, coordinator_cpu = sampler.between(first, first + span)
    mean_service = sum(s["service_s"] for s in teacher_stats) / max(1, requests)
    ideal = concurrency * nodes / mean_service
    windows = [saturation(rows, concurrency) for rows in traces]
    busy = sum(fraction * window for fraction, window in windows)
    efficiency = busy / max(1e-9, sum(window for _, window in windows))
    worker_cpu = sum(r.get("cpu_s", 0.0) for r in result.worker_reports)
    tool_cpu = sum(r.get("tool_cpu_s", 0.0) for r in result.worker_reports)
    conversations = result.conversations

    def per_request(seconds: float) -> float:
        return round(1000 * seconds / max(1, requests), 3)

    return {
        "concurrency": concurrency,
        "latency_s": latency_s,
        "seconds_per_token": seconds_per_token,
        "length_jitter": length_jitter,
        "mean_service_s": round(mean_service, 4),
        "nodes": nodes,
        "workers": settings.workers,
        "conversations_in_flight": settings.conversations_in_flight(),
        "prompts": prompts,
        "conversations": conversations,
        "dead": result.dead,
        "requests": requests,
        "span_s": round(span, 3),
        "achieved_rps": round(requests / span, 2),
        "ideal_rps": round(ideal, 2),
        "efficiency": round(efficiency, 4),
        "saturated_window_s": round(sum(window for _, window in windows), 2),
        "efficiency_whole_run": round(requests / span / ideal, 4),
        "peak_in_flight": [s["peak_in_flight"] for s in teacher_stats],
        # CPU figures cover the traffic span; workers' own clocks start when they start working.
        "coordinator_cpu_ms_per_conversation": round(1000 * coordinator_cpu / max(1, conversations), 3),
        "worker_cpu_ms_per_conversation": round(1000 * worker_cpu / max(1, conversations), 3),
        # The workers' tool processes (tools run apart from the agent loop since issue 13).
        "tool_cpu_ms_per_request": per_request(tool_cpu),
        "workspace": workspace,
        "tool_rounds": tool_rounds,
        "tool_processes": result.tool_processes,
        "tool_calls": {tool: {o: n[o] for o in ("ok", "tool_error", "infra_error")} for tool, n in result.tools.items()},
        "tool_p95_ms": {tool: n["p95_ms"] for tool, n in result.tools.items()},
        "tool_infra_errors": sum(n["infra_error"] for n in result.tools.values()),
        "redis_commands_per_conversation": round(commands / max(1, conversations), 2),
        "cpu_ms_per_request": {
            "workers": per_request(worker_cpu),
            "coordinator": per_request(coordinator_cpu),
            "redis": per_request(redis_cpu),
            "sim_teacher": per_request(teacher_cpu),
            "tools": per_request(tool_cpu),
            "other": per_request(max(0.0, box_cpu - worker_cpu - tool_cpu - coordinator_cpu - redis_cpu - teacher_cpu)),
        },
        "box_cpu_busy": round(box_cpu / (span * (psutil.cpu_count() or 1)), 3),
        "coordinator_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(result.elapsed_s, 2),
    }


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
