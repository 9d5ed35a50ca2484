"""Every Redis key distill uses, in one place. A run's keys share the `distill:{run}:` prefix.

The braces are a Redis Cluster hash tag: all of one run's keys land on one slot, so the
transactions that publish a result and acknowledge its task stay legal on a cluster too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

TASKS_GROUP = "workers"
RESULTS_GROUP = "coordinator"
KIND_FIELD = "kind"
DATA_FIELD = "data"


def endpoint_leases_key(base_url: str, model: str) -> str:
    """Sorted set of request leases on one endpoint, shared by every run that uses it."""
    digest = hashlib.sha256(f"{base_url}|{model}".encode()).hexdigest()[:16]
    return f"distill:endpoint:{digest}:leases"


def endpoint_freed_key(leases_key: str) -> str:
    """List that says a lease on the endpoint went back: workers waiting for a slot block on it."""
    return leases_key.removesuffix(":leases") + ":freed"


@dataclass(frozen=True)
class RunKeys:
    run: str

    @property
    def prefix(self) -> str:
        return f"distill:{{{self.run}}}"

    @property
    def tasks(self) -> str:
        """Stream of PromptTask JSON; consumer group TASKS_GROUP."""
        return f"{self.prefix}:tasks"

    @property
    def results(self) -> str:
        """Stream of finished conversations and dead letters; consumer group RESULTS_GROUP."""
        return f"{self.prefix}:results"

    @property
    def dead(self) -> str:
        """Stream of dead letters, kept for inspection beside the dead.jsonl file."""
        return f"{self.prefix}:dead"

    @property
    def prompt_digests(self) -> str:
        """Hash task_id -> content digest: one id, one content, across reruns."""
        return f"{self.prefix}:digests"

    @property
    def enqueued(self) -> str:
        """Set of task ids ever put on the tasks stream (idempotent enqueue)."""
        return f"{self.prefix}:enqueued"

    @property
    def done(self) -> str:
        """Set of task ids whose record is on disk (rebuilt from the files on start)."""
        return f"{self.prefix}:done"

    @property
    def attempts(self) -> str:
        """Hash task_id -> attempts started."""
        return f"{self.prefix}:attempts"

    @property
    def last_error(self) -> str:
        """Hash task_id -> the last attempt's error, for the dead letter."""
        return f"{self.prefix}:last_error"

    @property
    def last_endpoint(self) -> str:
        """Hash task_id -> the endpoint its last failed attempt used (the retry avoids it)."""
        return f"{self.prefix}:last_endpoint"

    @property
    def stats(self) -> str:
        """Hash of live counters (tokens, requests, in flight) shown by progress and status."""
        return f"{self.prefix}:stats"

    @property
    def stop(self) -> str:
        """Set by the coordinator when every prompt has ended: workers drain and return."""
        return f"{self.prefix}:stop"

    @property
    def meta(self) -> str:
        """Hash with the run's totals (prompts enqueued, invalid lines)."""
        return f"{self.prefix}:meta"

    def endpoint_stats(self, name: str) -> str:
        """Hash of one endpoint's counters in this run (requests, errors, tokens, latency)."""
        return f"{self.prefix}:endpoint:{name}"

    @property
    def endpoints(self) -> str:
        """Set of endpoint names that have stats in this run."""
        return f"{self.prefix}:endpoints"
