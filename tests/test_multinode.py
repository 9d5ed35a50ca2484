"""A multi-node run on one machine: a Ray head and two worker nodes, a local and a cloud teacher.

The scenario runs in a child process (tests/multinode_run.py): the test session's own Ray is
already initialised in this process, and a process can join only one cluster. The child gets a
private RAY_TMPDIR so its cluster address never leaks to other `ray.init()` calls on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile

import pytest
from conftest import REPO

SCRIPT = REPO / "tests" / "multinode_run.py"


@pytest.fixture(scope="module")
def multinode(tmp_path_factory: pytest.TempPathFactory, code_workspace) -> dict:  # type: ignore[no-untyped-def]
    workdir = tmp_path_factory.mktemp("multinode")
    summary_path = workdir / "summary.json"
    # Short: Ray's unix sockets live under it (107-byte limit on their paths).
    ray_tmp = tempfile.mkdtemp(prefix="dmn", dir="/tmp")
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONPATH": str(REPO), "RAY_ADDRESS": ""}
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(workdir), str(code_workspace), str(summary_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"the multi-node run did not finish in 240 s:\n{output[-4000:]}")
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert process.returncode == 0 and summary_path.exists(), output[-4000:]
    return json.loads(summary_path.read_text())


def test_every_prompt_ends_exactly_once(multinode: dict) -> None:
    assert multinode["conversations"] == 30 and multinode["dead"] == 0
    assert multinode["task_ids"] == sorted(f"q{i:05d}" for i in range(30))
    assert multinode["policy"] == "local-first"


def test_work_ran_on_every_node(multinode: dict) -> None:
    nodes = {multinode["head_node_id"], *multinode["worker_node_ids"]}
    assert len(nodes) == 3 and set(multinode["alive_node_ids"]) == nodes
    assert set(multinode["record_node_ids"]) == nodes, multinode["records_per_node"]
    assert all(count > 0 for count in multinode["records_per_node"].values()), multinode["records_per_node"]


def test_cloud_took_work_only_while_the_local_teacher_was_full(multinode: dict) -> None:
    leases = multinode["leases"]
    # Offload engaged: the cloud teacher served conversations, and both teachers saw requests.
    assert leases["cloud_grants"] > 0 and multinode["records_per_endpoint"]["cloud"] == leases["cloud_grants"]
    assert multinode["local"]["requests"] > 0 and multinode["cloud"]["requests"] > 0
    # Exact, from the Redis server's own command log: every conversation that started on the cloud
    # was granted its lease right after the lease script refused the local teacher because it held
    # its cap of 2, and the local teacher never held more than 2.
    assert leases["every_cloud_grant_after_a_local_refusal"], leases
    assert leases["local_refusals"] >= leases["cloud_grants"]
    assert leases["peak_local_leases"] == 2
    assert multinode["local"]["peak_in_flight"] <= 2


def test_doctor_sees_the_cluster(multinode: dict) -> None:
    checks = {check["name"]: check for check in multinode["doctor"]}
    assert all(check["ok"] for check in checks.values() if check["required"]), multinode["doctor"]
    assert "3 node(s) alive, 3 CPUs" in checks["ray"]["detail"]
    assert checks["ray nodes"]["ok"] and "3/3 node(s)" in checks["ray nodes"]["detail"]
    assert "sk-multinode-test-key" not in json.dumps(multinode["doctor"])
