"""The run's Ray worker actors: started, watched, replaced, stopped."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from distill.shared.settings import Settings


class WorkerPool:
    """The run's Ray actors; an actor Ray could not bring back is replaced."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        from distill.worker.actor import GenerationWorker, WorkerSpec

        self._actor_class = GenerationWorker
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
            slots=per_worker,
            max_attempts=settings.max_attempts,
            visibility_timeout_s=settings.visibility_timeout_s,
            retry_backoff_s=settings.retry_backoff_s,
            judge=settings.judge,
            judge_rubric=settings.judge.rubric() if settings.judge else None,
        ).model_dump_json()
        self.run = settings.run
        # Keys travel to the workers as an actor argument only (never in the spec, records or logs).
        endpoints = [*settings.teachers, *([settings.judge] if settings.judge else [])]
        self.secrets = {t.api_key_env: t.api_key() for t in endpoints if t.api_key_env}
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
            except Exception:  # noqa: BLE001 - the actor is gone for good: start another
                self._launch(index)

    def stop(self, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        import ray

        reports = []
        ready, _ = ray.wait(self.refs, num_returns=len(self.refs), timeout=timeout_s)
        for ref in ready:
            with contextlib.suppress(Exception):
                reports.append(ray.get(ref))
        for actor in self.actors:
            with contextlib.suppress(Exception):
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
            logging_level="ERROR",
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
