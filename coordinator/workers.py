"""The run's Ray worker actors: started, watched, replaced, stopped.

Each worker writes its own log to RUN_DIR/logs/<actor>.log (worker/actor.py); Ray's copy of its
output stays in Ray's session folder and is not streamed to the coordinator's terminal.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill.shared.settings import Settings

log = logging.getLogger(__name__)
LOGS_DIR = "logs"


def run_log_dir(run_dir: Path) -> Path:
    """The run's logs: each worker's (written on the node it runs on) and launched teachers'."""
    return run_dir.resolve() / LOGS_DIR


class WorkerPool:
    """The run's Ray actors; an actor Ray could not bring back is replaced."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        from distill.worker.actor import GenerationWorker, WorkerSpec

        self._actor_class: Any = GenerationWorker  # a Ray actor class: .options() and .remote() come from @ray.remote
        per_worker = max(1, -(-settings.conversations_in_flight() // settings.workers))
        self.spec_json = WorkerSpec(
            run=settings.run,
            redis_url=redis_url,
            workspace=str(settings.workspace.resolve()),
            teachers=settings.teachers,
            policy=settings.policy,
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_s,
            limits=settings.limits,
            system_prompt=settings.system_prompt,
            custom_tools=settings.custom_tools,
            mcp_servers=settings.mcp_servers,
            slots=per_worker,
            max_attempts=settings.max_attempts,
            visibility_timeout_s=settings.visibility_timeout_s,
            retry_backoff_s=settings.retry_backoff_s,
            judge=settings.judge,
            judge_rubric=settings.judge.rubric() if settings.judge else None,
            log_dir=str(run_log_dir(settings.run_dir())),
            secrets=settings.secrets,
        ).model_dump_json()
        self.log_dir = run_log_dir(settings.run_dir())
        self.run = settings.run
        # Keys travel to the workers as an actor argument only (never in the spec, records or logs).
        endpoints = [*settings.teachers, *([settings.judge] if settings.judge else [])]
        self.secrets = {t.api_key_env: t.api_key() for t in endpoints if t.api_key_env}
        for server in settings.mcp_servers:
            self.secrets.update(server.referenced_env())
        self.actors: list[Any] = []
        self.reports: list[dict[str, Any]] = []
        self.refs: list[Any] = []
        for index in range(settings.workers):
            self._launch(index)

    def _launch(self, index: int) -> None:
        options: dict[str, Any] = {"name": f"{self.run}-worker-{index}", "scheduling_strategy": _placement(index)}
        actor = self._actor_class.options(**options).remote(self.spec_json, f"worker-{index}", self.secrets)
        ref = actor.run.remote()
        if index < len(self.actors):
            self.actors[index], self.refs[index] = actor, ref
        else:
            self.actors.append(actor)
            self.refs.append(ref)

    def check(self) -> None:
        import ray

        ready, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=0)
        for ref in ready:
            index = self.refs.index(ref)
            try:
                ray.get(ref)
            except Exception as error:  # noqa: BLE001 - the actor is gone for good: start another
                log.warning("worker-%d is gone (%s); starting another. Its log: %s", index,
                            str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__,
                            self.log_dir / f"worker-{index}.log")
                self._launch(index)

    def stop(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        import ray

        reports = []
        ready, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=timeout_s)
        for index, ref in enumerate(self.refs):
            if ref not in ready:
                continue
            try:
                reports.append(ray.get(ref))
            except Exception as error:  # noqa: BLE001 - one lost report must not hide the others
                log.warning("worker-%d ended with %s; its log: %s", index, type(error).__name__,
                            self.log_dir / f"worker-{index}.log")
        for actor in self.actors:
            with contextlib.suppress(Exception):  # already gone is fine: the goal is "not running"
                ray.kill(actor, no_restart=True)
        self.reports = reports
        return reports


def _placement(index: int) -> Any:
    """Worker `index` goes to node `index mod N` of the alive nodes that offer CPUs.

    Ray's SPREAD (and even soft node affinity) is best effort: three 0-CPU actors on three nodes
    often leave a node empty. Hard affinity is exact; when its node dies the actor fails with
    ActorUnschedulableError and `check()` relaunches it here, on a node that is alive.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(node["NodeID"] for node in ray.nodes()
                   if node.get("Alive") and float(node.get("Resources", {}).get("CPU", 0)) > 0)
    if len(nodes) < 2:
        return "SPREAD"
    return NodeAffinitySchedulingStrategy(node_id=nodes[index % len(nodes)], soft=False)


@contextlib.contextmanager
def running_workers(settings: Settings, redis_url: str) -> Iterator[WorkerPool]:
    import ray

    started_ray = False
    if not ray.is_initialized():
        ray.init(
            address=settings.ray_address,
            namespace="distill",
            include_dashboard=False,
            logging_level=logging.ERROR,
            log_to_driver=False,
            configure_logging=True,
        )
        started_ray = True
    pool = WorkerPool(settings, redis_url)
    stopped_cleanly = False
    try:
        yield pool
        stopped_cleanly = True
    finally:
        # On an error the workers may never see the stop key (Redis gone): don't wait for them.
        pool.stop(timeout_s=60.0 if stopped_cleanly else 0.0)
        if started_ray:
            ray.shutdown()
