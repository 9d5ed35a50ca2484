"""Eval of a thinking model: its thinking is never its answer, and the tokens it spent are counted."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from distill.shared.records import Conversation, PromptTask
from distill.shared.settings import GenerationLimits, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.trainer.evaluate import _Agent, evaluate_endpoint, prompt_eval


def test_a_thinking_endpoint_is_judged_on_its_answer_alone(tmp_path: Path) -> None:
    (tmp_path / "collector.py").write_text("class Collector:\n    pass\n")
    # The sim teacher's thinking says "workspace"; its answers do not, except where scripted.
    teacher = SimTeacher(SimTeacherConfig(reasoning="tags", answers={"Where": ["It is in collector.py."],
                                                                     "Which": ["I cannot tell."]}))
    url = teacher.start()
    tasks = [PromptTask(task_id="a", run="eval", prompt="Where is Collector?", expected="collector.py"),
             PromptTask(task_id="b", run="eval", prompt="Which workspace is this?", expected="workspace")]
    agent = _Agent(tmp_path, GenerationLimits(), "You help.", (), 256, 30.0, None)
    try:
        result = evaluate_endpoint("teacher", TeacherConfig(base_url=url, model="sim"), tasks, agent)
    finally:
        teacher.stop()
    right, fooled = result.prompts
    assert (right.correct, right.answer) == (True, "It is in collector.py.")
    # "workspace" is only in the thinking: not an answer.
    assert fooled.correct is False and fooled.answer == "I cannot tell."
    assert all(p.reasoning_tokens > 0 for p in result.prompts)
    assert result.totals.reasoning_tokens == sum(p.reasoning_tokens for p in result.prompts)


def test_an_older_record_whose_answer_opens_with_thinking_is_judged_without_it() -> None:
    now = datetime.now(UTC)
    record = Conversation.model_validate({
        "task_id": "a", "run": "r", "prompt": "p", "status": "final_answer", "tools": [],
        "messages": [{"role": "user", "content": "p"},
                     {"role": "assistant", "content": "<think>It is 42.</think>\n\nI do not know."}],
        "teacher": {"endpoint": "e", "base_url": "http://x", "model": "m"}, "usage": {},
        "timings": {"started_at": now, "finished_at": now, "duration_s": 0}, "attempt": 1,
        "worker": {"node": "n", "actor": "a", "pid": 1}})
    result = prompt_eval(PromptTask(task_id="a", run="r", prompt="p", expected="42"), record)
    assert (result.correct, result.answer) == (False, "I do not know.")
