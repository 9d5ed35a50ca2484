"""The worker's Chat Completions transport under pydantic-ai, against the simulated teacher.

The pipeline and fault suites drive it end to end; these pin down what it owes pydantic-ai and the
record: the body that goes out, the tool block kept as sent, and failures typed as the openai SDK
types them (so retry rules and Retry-After work unchanged).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from distill.shared.records import PromptTask
from distill.shared.settings import TeacherConfig
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.worker.agent import Conversations, TeacherUnavailable, run_conversation
from distill.worker.toolcore import ToolCore


class RecordingTeacher(SimTeacher):
    """The simulated teacher, keeping every request body it was sent."""

    def __init__(self, config: SimTeacherConfig) -> None:
        super().__init__(config)
        self.bodies: list[dict[str, Any]] = []

    def script(self, body: dict[str, Any], *, malformed: bool = False) -> tuple[dict[str, Any], str]:
        self.bodies.append(body)
        return super().script(body, malformed=malformed)


@pytest.fixture()
def workspace(tmp_path: Path) -> ToolCore:
    (tmp_path / "collector.py").write_text("class Collector:\n    pass\n")
    return ToolCore(tmp_path)


def task(index: int = 0) -> PromptTask:
    return PromptTask(task_id=f"t{index}", run="r", prompt=f"Where is Collector defined? #{index}")


def test_one_worker_client_serves_many_conversations_and_records_tools_as_sent(workspace: ToolCore) -> None:
    teacher = RecordingTeacher(SimTeacherConfig())
    url = teacher.start()
    config = TeacherConfig(base_url=url, model="sim", max_tokens=77, extra_body={"top_k": 5})

    async def many() -> list[Any]:
        conversations = Conversations(workspace, system_prompt="You help.")
        try:
            return await asyncio.gather(*(conversations.run(task(i), config) for i in range(6)))
        finally:
            await conversations.aclose()

    try:
        records = asyncio.run(many())
    finally:
        teacher.stop()
    assert [r.status for r in records] == ["final_answer"] * 6
    assert all(r.usage.requests == 3 and r.usage.tool_calls == 2 for r in records)
    # Every result is the real tool output, not a placeholder.
    tool_results = [m.content for r in records for m in r.messages if m.role == "tool"]
    assert len(tool_results) == 12 and any("collector.py:1:" in (text or "") for text in tool_results)
    body = teacher.bodies[0]
    assert body["model"] == "sim" and body["top_k"] == 5
    assert body.get("max_completion_tokens", body.get("max_tokens")) == 77
    assert "stream" not in body and "extra_body" not in body and "timeout" not in body
    # The record's tool block is byte-for-byte what went over the wire.
    assert all(json.dumps(r.tools) == json.dumps(body["tools"]) for r in records)


def failure_from(workspace: ToolCore, **config: Any) -> TeacherUnavailable:
    """The failure one conversation ends with against a teacher configured to fail."""
    teacher = SimTeacher(SimTeacherConfig(**config))
    url = teacher.start()
    try:
        with pytest.raises(TeacherUnavailable) as failure:
            asyncio.run(run_conversation(task(), TeacherConfig(base_url=url, model="sim"), workspace,
                                         system_prompt="You help."))
    finally:
        teacher.stop()
    return failure.value


def test_rate_limit_is_retryable_with_the_servers_retry_after(workspace: ToolCore) -> None:
    failure = failure_from(workspace, rate_limit_rate=1.0, retry_after_s=7)
    assert failure.retryable and failure.retry_after_s == 7
    assert "429" in failure.reason


def test_a_dropped_connection_is_retryable(workspace: ToolCore) -> None:
    failure = failure_from(workspace, drop_rate=1.0)
    assert failure.retryable and failure.error_type == "ModelConnectionError"
