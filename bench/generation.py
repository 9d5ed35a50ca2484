"""One generation measurement in a fresh process (Ray joins one cluster per process).

    python -m bench.generation '{"concurrency": 8, "latency_s": 0.2, "prompts": 500, "nodes": 1}'

prints a JSON object: achieved requests/s against the ideal C / latency, CPU seconds of the
coordinator and of the workers per conversation, and Redis commands per conversation.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from bench.simproc import sim_teacher_process, stats
from shared.redis_server import EmbeddedRedis, connect
from shared.settings import GenerationLimits, Settings, TeacherConfig

REPO = Path(__file__).resolve().parents[1]


def write_prompts(path: Path, count: int) -> Path:
    topics = ["Collector", "EmbeddedRedis", "requeue_orphans", "WorkerSpec", "RunKeys", "check_prompts"]
    with path.open("w") as handle:
        for index in range(count):
            handle.write(json.dumps({"id": f"b{index:07d}", "prompt": f"Where is {topics[index % 6]} defined? #{index}"}) + "\n")
    return path


def measure(concurrency: int, latency_s: float, prompts: int, nodes: int = 1, workers: int | None = None) -> dict:
    import ray

    from coordinator.run import generate

    with tempfile.TemporaryDirectory() as scratch, contextlib.ExitStack() as stack:
        root = Path(scratch)
        cluster = None
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
            teacher_url = stack.enter_context(sim_teacher_process(latency_s))
            teachers.append(TeacherConfig(name=f"sim{index}", base_url=teacher_url, model="sim",
                                          max_concurrency=concurrency, timeout_s=120))
        settings = Settings(
            run="bench", out_dir=root / "runs", workspace=REPO, redis_url=url, teachers=teachers, policy="spread",
            concurrency=concurrency * nodes, workers=workers or max(nodes, 2 if concurrency >= 64 else 1),
            limits=GenerationLimits(max_tool_calls=8),
        )
        client = connect(url)
        commands_before = int(client.info("stats")["total_commands_processed"])
        cpu_before = time.process_time()
        result = generate(settings, write_prompts(root / "p.jsonl", prompts), show_progress=False)
        coordinator_cpu = time.process_time() - cpu_before
        commands = int(client.info("stats")["total_commands_processed"]) - commands_before
        teacher_stats = [stats(t.base_url) for t in teachers]
    requests = sum(s["completed"] for s in teacher_stats)
    span = max(s["last_response_at"] for s in teacher_stats) - min(s["first_request_at"] for s in teacher_stats)
    ideal = concurrency * nodes / latency_s
    achieved = requests / span
    conversations = result.conversations
    return {
        "concurrency": concurrency,
        "latency_s": latency_s,
        "nodes": nodes,
        "prompts": prompts,
        "conversations": conversations,
        "dead": result.dead,
        "requests": requests,
        "span_s": round(span, 3),
        "achieved_rps": round(achieved, 2),
        "ideal_rps": round(ideal, 2),
        "efficiency": round(achieved / ideal, 4),
        "peak_in_flight": [s["peak_in_flight"] for s in teacher_stats],
        "coordinator_cpu_ms_per_conversation": round(1000 * coordinator_cpu / max(1, conversations), 3),
        "worker_cpu_ms_per_conversation": round(
            1000 * sum(r.get("cpu_s", 0.0) for r in result.worker_reports) / max(1, conversations), 3
        ),
        "redis_commands_per_conversation": round(commands / max(1, conversations), 2),
        "coordinator_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "wall_s": round(result.elapsed_s, 2),
    }


if __name__ == "__main__":
    print(json.dumps(measure(**json.loads(sys.argv[1]))))
