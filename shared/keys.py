"""Every Redis key distill uses, in one place. A run's keys share the `distill:{run}:` prefix.

The braces are a Redis Cluster hash tag: all of one run's keys land on one slot, so the
transactions that publish a result and acknowledge its task stay legal on a cluster too.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

TASKS_GROUP = "workers"
RESULTS_GROUP = "coordinator"
KIND_FIELD = "kind"
DATA_FIELD = "data"


# Between a prompt id and its sample number in a task key. Prompt ids may not hold control
# characters (shared/prompts.py), so no id can spell another prompt's sample.
SAMPLE_SEPARATOR = "\x1f"


def task_key(task_id: str, sample: int = 0) -> str:
    """What runs exactly once: one sample of one prompt. Sample 0 is the bare prompt id, as it was
    before several samples per prompt existed, so older runs resume unchanged."""
    return task_id if sample == 0 else f"{task_id}{SAMPLE_SEPARATOR}{sample}"


def endpoint_leases_key(base_url: str, model: str) -> str:
    """Sorted set of request leases on one endpoint, shared by every run that uses it."""
    digest = hashlib.sha256(f"{base_url}|{model}".encode()).hexdigest()[:16]
    return f"distill:endpoint:{digest}:leases"


def endpoint_freed_key(leases_key: str) -> str:
    """List that says a lease on the endpoint went back: workers waiting for a slot block on it."""
    return leases_key.removesuffix(":leases") + ":freed"


def tool_calls_field(tool: str, outcome: str) -> str:
    """Field of `RunKeys.tool_calls`: executions of one tool that ended with one outcome."""
    return f"{tool}|{outcome}"


def tool_time_field(tool: str, seconds: float) -> str:
    """Field of `RunKeys.tool_times`: a histogram bucket of one tool's execution time.

    Buckets are 2**(k/10) ms wide (about 7 %), so percentiles come from a small hash of counters
    that workers add to, whatever the number of calls.
    """
    milliseconds = max(seconds * 1000, 0.01)
    return f"{tool}|{round(10 * math.log2(milliseconds))}"


def tool_time_ms(bucket: int) -> float:
    """The execution time a `tool_time_field` bucket stands for."""
    return 2 ** (bucket / 10)


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
        """Hash prompt id -> content digest: one id, one content, across reruns. A prompt's entry
        also marks its sample 0 as queued."""
        return f"{self.prefix}:digests"

    @property
    def enqueued(self) -> str:
        """Set of task keys of samples 1.. ever put on the tasks stream (idempotent enqueue)."""
        return f"{self.prefix}:enqueued"

    @property
    def done(self) -> str:
        """Set of task keys (`task_key`) whose record is on disk (rebuilt from the files on start)."""
        return f"{self.prefix}:done"

    @property
    def attempts(self) -> str:
        """Hash task key -> attempts started."""
        return f"{self.prefix}:attempts"

    @property
    def last_error(self) -> str:
        """Hash task key -> the last attempt's error, for the dead letter."""
        return f"{self.prefix}:last_error"

    @property
    def last_endpoint(self) -> str:
        """Hash task key -> the endpoint its last failed attempt used (the retry avoids it)."""
        return f"{self.prefix}:last_endpoint"

    @property
    def stats(self) -> str:
        """Hash of live counters (tokens, requests, in flight) shown by progress and status."""
        return f"{self.prefix}:stats"

    @property
    def tool_calls(self) -> str:
        """Hash `tool|outcome` -> executions (every attempt, infrastructure errors included)."""
        return f"{self.prefix}:tool_calls"

    @property
    def tool_times(self) -> str:
        """Hash `tool|bucket` -> executions whose time falls in the bucket (see tool_time_field)."""
        return f"{self.prefix}:tool_times"

    @property
    def tool_processes(self) -> str:
        """Hash worker consumer name -> its tool processes (the run's tool capacity is their sum)."""
        return f"{self.prefix}:tool_processes"

    @property
    def stop(self) -> str:
        """Set by the coordinator when every prompt has ended: workers drain and return."""
        return f"{self.prefix}:stop"

    @property
    def lock(self) -> str:
        """host:pid of the coordinator running the run, with a short TTL it keeps renewing."""
        return f"{self.prefix}:lock"

    def check_scratch(self, token: str) -> str:
        """Hash id -> digest:line of one check of a prompts file (deleted when the check ends)."""
        return f"{self.prefix}:check:{token}"

    def endpoint_stats(self, name: str) -> str:
        """Hash of one endpoint's counters in this run (requests, errors, tokens, latency)."""
        return f"{self.prefix}:endpoint:{name}"
