"""Reasoning teachers: thinking is captured apart from the answer, whichever shape the server uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from distill.shared.reasoning import split_thinking
from distill.shared.records import ChatMessage, Conversation, PromptTask
from distill.shared.settings import GenerationLimits, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.worker.agent import run_conversation
from distill.worker.tools import Workspace


@pytest.fixture()
def workspace(tmp_path: Path) -> Workspace:
    (tmp_path / "collector.py").write_text("class Collector:\n    pass\n")
    return Workspace(tmp_path)


def captured(workspace: Workspace, reasoning: str) -> Conversation:
    teacher = SimTeacher(SimTeacherConfig(reasoning=reasoning))  # type: ignore[arg-type]
    url = teacher.start()
    try:
        task = PromptTask(task_id="t0", run="r", prompt="Where is Collector defined?")
        return asyncio.run(run_conversation(task, TeacherConfig(base_url=url, model="sim"), workspace,
                                            GenerationLimits(), system_prompt="You help."))
    finally:
        teacher.stop()


@pytest.mark.parametrize("shape", ["field", "tags"])
def test_a_reasoning_teacher_ends_as_a_record_whose_answers_hold_no_thinking(workspace: Workspace, shape: str) -> None:
    record = captured(workspace, shape)
    assert record.status == "final_answer"
    turns = [m for m in record.messages if m.role == "assistant"]
    assert len(turns) == 3
    for turn in turns:
        assert turn.reasoning is not None and turn.reasoning.startswith("The user wants an answer")
        assert "<think>" not in (turn.content or "") and "</think>" not in (turn.content or "")
        assert "The user wants" not in (turn.content or "")
    # No blank lines left where the <think> block was.
    assert record.final_answer is not None and record.final_answer.startswith("Answer to")
    assert "I should call" in turns[0].reasoning and "I have what I need" in turns[-1].reasoning
    # The record survives its own file format.
    assert Conversation.model_validate_json(record.model_dump_json()).messages == record.messages
    # The server's count (completion_tokens_details) says how much of the output was reasoning.
    assert 0 < record.usage.reasoning_tokens < record.usage.output_tokens


def test_a_teacher_that_does_not_think_leaves_no_reasoning(workspace: Workspace) -> None:
    record = captured(workspace, "none")
    assert all(m.reasoning is None for m in record.messages)
    assert record.usage.reasoning_tokens == 0


@pytest.mark.parametrize(
    ("text", "reasoning", "answer"),
    [
        ("<think>\nlook first\n</think>\n\nFound 2 matching lines.", "look first", "Found 2 matching lines."),
        # The opening tag was in the prompt (Qwen3 / DeepSeek-R1 generation prompts).
        ("look first\n</think>\n\nFound 2.", "look first", "Found 2."),
        ("  <think>x</think>answer", "x", "answer"),
        # Stopped while thinking: all of it is reasoning, there is no answer.
        ("<think>still going", "still going", None),
        ("<think>\n\n</think>\n\nHi", None, "Hi"),
        # Look-alikes: a tag quoted inside an answer is the answer's text.
        ("Use <think>...</think> tags to reason.", None, "Use <think>...</think> tags to reason."),
        ("The answer. <think>late</think>", None, "The answer. <think>late</think>"),
        ("plain answer", None, "plain answer"),
        (None, None, None),
    ],
)
def test_split_thinking(text: str | None, reasoning: str | None, answer: str | None) -> None:
    assert split_thinking(text) == (reasoning, answer)


def test_older_records_load_unchanged_and_only_assistants_carry_reasoning() -> None:
    assert ChatMessage.model_validate({"role": "assistant", "content": "hi"}).reasoning is None
    with pytest.raises(ValueError, match="only assistant messages carry reasoning"):
        ChatMessage(role="user", content="hi", reasoning="no")
