"""A multi-node run on one machine, in its own process (tests/test_multinode.py starts it).

A process can join only one Ray cluster, and the test session already has one, so this script
builds its own: `ray.cluster_utils.Cluster` with a head and two worker nodes, an embedded Redis
and two simulated teachers ("local", capped at 2, and "cloud", with an API key variable). It runs
`distill doctor` against the cluster, then `coordinator.run.generate` with policy local-first,
and writes a JSON summary for the test to check.

Redis's MONITOR feed records every lease the workers take and give back, in the order the server
executed them (the lease script's own ZCARD / ZADD lines included), so the summary can say exactly
how many leases the local teacher held whenever the cloud teacher was given one.

Usage: python tests/multinode_run.py WORKDIR WORKSPACE SUMMARY_JSON
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

LOCAL_CAP = 2
PROMPTS = 30
WORKERS = 3
KEY_ENV = "DISTILL_MULTINODE_CLOUD_KEY"


def lease_log(url: str, events: list[dict], ready: threading.Event) -> None:
    from distill.shared.connection import connect

    client = connect(url)
    try:
        with client.monitor() as monitor:
            ready.set()
            for event in monitor.listen():
                events.append(event)
    except Exception:  # noqa: BLE001 - the server stops at the end of the run
        return


def replay_leases(events: list[dict], local_key: str, cloud_key: str) -> dict:
    """Walk the server's command log: who held which lease when, and what each attempt saw.

    Leases are per request; a conversation's first one (id prefix START) is where it started, so
    cloud grants count those: later requests of a cloud conversation stay on the cloud.
    """
    from distill.worker.pool import START

    held: dict[str, dict[str, float]] = {local_key: {}, cloud_key: {}}
    local_attempts = local_refusals = cloud_grants = 0
    peak_local = 0
    local_at_cloud_grants: list[int] = []
    prefix_ok = True  # every cloud grant was preceded (in server order) by one more local refusal
    pending_local_attempt = False
    for event in events:
        words = str(event.get("command", "")).split()
        if len(words) < 2:
            continue
        verb, key = words[0].upper(), words[1]
        if key not in held:
            continue
        from_script = event.get("client_type") == "lua"
        if from_script and verb == "ZCARD":
            if pending_local_attempt:
                local_refusals += 1
            pending_local_attempt = key == local_key
            if key == local_key:
                local_attempts += 1
            continue
        if from_script and verb == "ZADD":
            if key == local_key:
                pending_local_attempt = False
            elif words[3].startswith(START):
                if pending_local_attempt:
                    local_refusals += 1
                    pending_local_attempt = False
                cloud_grants += 1
                local_at_cloud_grants.append(len(held[local_key]))
                prefix_ok = prefix_ok and cloud_grants <= local_refusals
            held[key][words[3]] = float(words[2])
        elif verb == "ZADD" and "XX" in (w.upper() for w in words):  # a renewal
            member, score = words[-1], float(words[-2])
            if member in held[key]:
                held[key][member] = score
        elif verb == "ZREM":
            for member in words[2:]:
                held[key].pop(member, None)
        elif verb == "ZREMRANGEBYSCORE" and words[3] not in ("-inf",):
            limit = float(words[3])
            for member, score in list(held[key].items()):
                if score <= limit:
                    held[key].pop(member)
        peak_local = max(peak_local, len(held[local_key]))
    return {
        "local_attempts": local_attempts,
        "local_refusals": local_refusals,
        "cloud_grants": cloud_grants,
        "peak_local_leases": peak_local,
        "local_leases_at_cloud_grants": local_at_cloud_grants,
        "every_cloud_grant_after_a_local_refusal": prefix_ok,
        "events": len(events),
    }


def main() -> int:
    workdir, workspace, summary_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    os.environ[KEY_ENV] = "sk-multinode-test-key"

    import ray
    from conftest import write_prompts
    from ray.cluster_utils import Cluster

    from distill.coordinator.doctor import run_doctor
    from distill.coordinator.redis_server import EmbeddedRedis
    from distill.coordinator.run import generate
    from distill.shared.keys import endpoint_leases_key
    from distill.shared.records import Conversation
    from distill.shared.settings import Settings, TeacherConfig
    from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig

    started = time.monotonic()
    timings: dict[str, float] = {}
    node_args = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    redis_server = EmbeddedRedis(workdir / "redis")
    local = SimTeacher(SimTeacherConfig(latency_s=0.4, model="sim-local"))
    cloud = SimTeacher(SimTeacherConfig(latency_s=0.2, model="sim-cloud"))
    try:
        for _ in range(2):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        timings["cluster_s"] = time.monotonic() - started
        url = redis_server.start()
        local.start()
        cloud.start()
        teachers = [
            TeacherConfig(name="local", base_url=local.base_url, model="sim-local", max_concurrency=LOCAL_CAP),
            TeacherConfig(name="cloud", kind="cloud", base_url=cloud.base_url, model="sim-cloud", max_concurrency=4,
                          api_key_env=KEY_ENV),
        ]
        settings = Settings(run="multinode", out_dir=workdir / "runs", workspace=workspace, redis_url=url,
                            ray_address=cluster.address, teachers=teachers, policy="local-first",
                            concurrency=6, workers=WORKERS, retry_backoff_s=0.05)

        mark = time.monotonic()
        doctor = [check.model_dump() for check in run_doctor(settings)]
        timings["doctor_s"] = time.monotonic() - mark

        events: list[dict] = []
        ready = threading.Event()
        threading.Thread(target=lease_log, args=(url, events, ready), daemon=True).start()
        ready.wait(10)

        prompts = write_prompts(workdir / "prompts.jsonl", PROMPTS)
        mark = time.monotonic()
        # The run joins the cluster itself (settings.ray_address), as `--ray-address` does.
        result = generate(settings, prompts)
        timings["generate_s"] = time.monotonic() - mark
        assert not ray.is_initialized(), "generate leaves the cluster it joined"
        time.sleep(0.3)  # let MONITOR deliver the last releases

        # Diagnostics: which nodes were alive and where Ray placed the worker actors.
        ray.init(address=cluster.address, namespace="distill-multinode", logging_level="ERROR", log_to_driver=False)
        nodes = {node["NodeID"]: node for node in ray.nodes() if node["Alive"]}
        actor_nodes = {}
        with contextlib.suppress(Exception):
            for info in ray._private.state.actors().values():
                if str(info.get("Name", "")).startswith("multinode-worker-"):
                    actor_nodes[info["Name"]] = (info.get("Address") or {}).get("NodeID", "")
        ray.shutdown()

        records = [Conversation.model_validate_json(line)
                   for line in (settings.run_dir() / "conversations.jsonl").read_text().splitlines() if line.strip()]
        summary = {
            "head_node_id": cluster.head_node.node_id,
            "worker_node_ids": sorted(node.node_id for node in cluster.worker_nodes),
            "alive_node_ids": sorted(nodes),
            "records": len(records),
            "task_ids": sorted(record.task_id for record in records),
            "record_node_ids": sorted({record.worker.ray_node_id or "" for record in records}),
            "records_per_node": {node_id: sum(1 for r in records if r.worker.ray_node_id == node_id) for node_id in nodes},
            "records_per_endpoint": {name: sum(1 for r in records if r.teacher.endpoint == name) for name in ("local", "cloud")},
            "actor_nodes": actor_nodes,
            "actors": sorted({(record.worker.actor, record.worker.ray_node_id or "") for record in records}),
            "conversations": result.conversations,
            "dead": result.dead,
            "policy": result.policy,
            "local": local.snapshot(),
            "cloud": cloud.snapshot(),
            "leases": replay_leases(list(events),
                                    endpoint_leases_key(local.base_url, "sim-local"),
                                    endpoint_leases_key(cloud.base_url, "sim-cloud")),
            "doctor": doctor,
            "timings": timings,
        }
    finally:
        local.stop()
        cloud.stop()
        redis_server.stop()
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
    summary["timings"]["total_s"] = time.monotonic() - started
    summary_path.write_text(json.dumps(summary, indent=2, default=list))
    return 0


if __name__ == "__main__":
    sys.exit(main())
