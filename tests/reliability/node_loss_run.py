"""A run that loses a whole Ray node, in its own process (a process joins one Ray cluster only).

Usage: python tests/reliability/node_loss_run.py WORKDIR WORKSPACE RESULT_JSON
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

PROMPTS = 24


def main() -> int:
    workdir, workspace, result_path = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    # A private Ray temp dir: Cluster() records its address there, and no other process on the
    # machine running a bare ray.init() may join this throwaway cluster.
    # (Short, under /tmp: Ray's socket paths must stay within AF_UNIX's 107 bytes.)
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rn-", dir="/tmp")
    from conftest import write_prompts
    from ray.cluster_utils import Cluster

    from distill.coordinator.collector import CONVERSATIONS_FILE
    from distill.coordinator.redis_server import EmbeddedRedis
    from distill.coordinator.run import generate
    from distill.shared.settings import Settings, TeacherConfig
    from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig

    node_args = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    victims = [cluster.add_node(**node_args) for _ in range(2)]
    cluster.wait_for_nodes()
    redis_server = EmbeddedRedis(workdir / "redis")
    teacher = SimTeacher(SimTeacherConfig(latency_s=0.3))
    outcome: dict = {}
    try:
        url = redis_server.start()
        teacher.start()
        settings = Settings(run="node-loss", out_dir=workdir / "runs", workspace=workspace, redis_url=url,
                            ray_address=cluster.address, concurrency=6, workers=3, visibility_timeout_s=3.0,
                            teachers=[TeacherConfig(name="sim", base_url=teacher.base_url, model="sim")])
        prompts = write_prompts(workdir / "p.jsonl", PROMPTS)

        def run() -> None:
            try:
                outcome["complete"] = generate(settings, prompts).complete
            except Exception as error:  # noqa: BLE001 - reported to the test
                outcome["error"] = repr(error)

        runner = threading.Thread(target=run)
        runner.start()
        written = settings.run_dir() / CONVERSATIONS_FILE
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (written.exists() and written.read_text().count("\n") >= 4):
            time.sleep(0.05)
        outcome["records_before_loss"] = written.read_text().count("\n") if written.exists() else 0
        cluster.remove_node(victims[0])
        runner.join(240)
        outcome["finished"] = not runner.is_alive()
        outcome["run_dir"] = str(settings.run_dir())
    finally:
        teacher.stop()
        redis_server.stop()
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)
    result_path.write_text(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
