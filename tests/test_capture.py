"""worker/capture.py: the record's core invariant, driven by a real pydantic-ai Agent.

Every tool call in a record is answered by exactly one tool message with the same `tool_call_id`,
after the call, carrying what the tool really returned (or what the teacher was really told about
its bad call); calls that never ran are not data. The teacher is pydantic-ai's `FunctionModel`
(a scripted model inside a real agent run); the tools read real files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic_ai import Agent, ModelRetry, UnexpectedModelBehavior, UsageLimitExceeded, capture_run_messages
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    SystemPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import UsageLimits

from distill.shared.records import ChatMessage
from distill.worker.capture import Captured, to_chat_messages, to_model_messages

Script = list[list[ToolCallPart | TextPart | ThinkingPart]]


def scripted(turns: Script) -> FunctionModel:
    """A teacher that answers request i with turns[i] (the last turn repeats)."""

    def respond(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        asked = sum(isinstance(m, ModelResponse) for m in messages)
        return ModelResponse(parts=list(turns[min(asked, len(turns) - 1)]))

    return FunctionModel(respond)


def agent_over(workspace: Path, turns: Script, retries: int = 1) -> Agent[None, str]:
    agent = Agent(scripted(turns), system_prompt="Answer with the tools.", retries=retries)

    @agent.tool_plain
    def read(path: str) -> str:
        """A real read of a real file."""
        return (workspace / path).read_text(encoding="utf-8")

    @agent.tool_plain
    def busy() -> str:
        raise ModelRetry("the index is rebuilding, call again")

    return agent


def assert_paired(messages: list[ChatMessage]) -> dict[str, ChatMessage]:
    """Every call has exactly one answer, after it, by id; every answer answers an earlier call."""
    called: dict[str, str] = {}
    answers: dict[str, ChatMessage] = {}
    for message in messages:
        for call in message.tool_calls or []:
            assert call.id not in called, f"call id {call.id} used twice"
            called[call.id] = call.function.name
        if message.role == "tool":
            assert message.tool_call_id in called, f"{message.tool_call_id} answers no earlier call"
            assert message.tool_call_id not in answers, f"{message.tool_call_id} answered twice"
            assert message.name == called[message.tool_call_id]
            answers[message.tool_call_id] = message
    assert set(answers) == set(called), f"unanswered: {set(called) - set(answers)}"
    return answers


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "a.py").write_text("def alpha():\n    return 1\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("def beta():\n    return 2\n", encoding="utf-8")
    return tmp_path


def run(agent: Agent[None, str]) -> Captured:
    result = agent.run_sync("Where is beta defined?")
    return to_chat_messages(result.all_messages())


def test_parallel_calls_to_one_tool_get_their_own_real_results(workspace: Path) -> None:
    # Same tool, same turn: only the id tells the answers apart (never the name or the position).
    captured = run(agent_over(workspace, [
        [ToolCallPart("read", {"path": "b.py"}, tool_call_id="c-b"), ToolCallPart("read", {"path": "a.py"}, tool_call_id="c-a")],
        [TextPart("beta is defined in b.py")],
    ]))

    answers = assert_paired(captured.messages)
    assert answers["c-a"].content == (workspace / "a.py").read_text()
    assert answers["c-b"].content == (workspace / "b.py").read_text()
    assert all(a.outcome == "ok" for a in answers.values())
    assert [m.role for m in captured.messages] == ["system", "user", "assistant", "tool", "tool", "assistant"]
    assert captured.tool_calls == 2 and captured.invalid_tool_calls == 0 and captured.dropped_unanswered_calls == 0
    assert captured.final_text == "beta is defined in b.py"


def test_unknown_tool_bad_arguments_and_retry_are_paired_with_what_the_teacher_was_told(workspace: Path) -> None:
    captured = run(agent_over(workspace, [
        [
            ThinkingPart("which file?"),
            ToolCallPart("grep_everything", {"q": "beta"}, tool_call_id="c-unknown"),
            ToolCallPart("read", {"path": 3}, tool_call_id="c-badargs"),
            ToolCallPart("busy", {}, tool_call_id="c-retry"),
            ToolCallPart("read", {"path": "b.py"}, tool_call_id="c-ok"),
        ],
        [TextPart("b.py")],
    ]))

    answers = assert_paired(captured.messages)
    assert "grep_everything" in (answers["c-unknown"].content or "")
    assert "valid string" in (answers["c-badargs"].content or "")
    assert "rebuilding" in (answers["c-retry"].content or "")
    assert {k: a.outcome for k, a in answers.items()} == {
        "c-unknown": "tool_error", "c-badargs": "tool_error", "c-retry": "tool_error", "c-ok": "ok"}
    assert answers["c-ok"].content == (workspace / "b.py").read_text()
    assert captured.tool_calls == 4 and captured.invalid_tool_calls == 3


def test_outcomes_from_the_tools_label_their_calls_by_id(workspace: Path) -> None:
    result = agent_over(workspace, [
        [ToolCallPart("read", {"path": "a.py"}, tool_call_id="c1"), ToolCallPart("read", {"path": "b.py"}, tool_call_id="c2")],
        [TextPart("b.py")],
    ]).run_sync("Where is beta defined?")

    captured = to_chat_messages(result.all_messages(), {"c2": "tool_error"})

    answers = assert_paired(captured.messages)
    assert answers["c1"].outcome == "ok" and answers["c2"].outcome == "tool_error"


def test_calls_the_loop_guard_stopped_are_dropped_not_left_dangling(workspace: Path) -> None:
    agent = agent_over(workspace, [
        [ToolCallPart("read", {"path": "a.py"}, tool_call_id="c1")],
        [TextPart("let me look again"), ToolCallPart("read", {"path": "b.py"}, tool_call_id="c2"),
         ToolCallPart("read", {"path": "a.py"}, tool_call_id="c3")],
    ])
    with capture_run_messages() as history, pytest.raises(UsageLimitExceeded):
        agent.run_sync("Where is beta defined?", usage_limits=UsageLimits(tool_calls_limit=2))

    captured = to_chat_messages(list(history))

    assert_paired(captured.messages)
    assert captured.dropped_unanswered_calls == 2
    assert captured.tool_calls == 1
    # The turn keeps its text; its calls that never ran are gone.
    assert captured.messages[-1].role == "assistant" and captured.messages[-1].content == "let me look again"
    assert captured.messages[-1].tool_calls is None
    assert captured.final_text == "let me look again"


def test_a_run_that_exhausts_its_retries_keeps_only_answered_calls(workspace: Path) -> None:
    agent = agent_over(workspace, [[ToolCallPart("read", {"path": 7}, tool_call_id="c-try1")],
                                   [ToolCallPart("read", {"path": 8}, tool_call_id="c-try2")]], retries=1)
    with capture_run_messages() as history, pytest.raises(UnexpectedModelBehavior):
        agent.run_sync("Where is beta defined?")

    captured = to_chat_messages(list(history))

    answers = assert_paired(captured.messages)
    # The first bad call was answered (the teacher saw why); the second ended the run unanswered.
    assert list(answers) == ["c-try1"] and answers["c-try1"].outcome == "tool_error"
    assert captured.dropped_unanswered_calls == 1
    assert captured.final_text is None


def test_retry_prompt_parts_pair_by_id_and_one_without_a_tool_is_a_user_turn() -> None:
    # The retry-prompt shape (older pydantic-ai, output validation): built by hand, since the
    # current agent answers tool problems with tool-return parts.
    history: list[ModelMessage] = [
        ModelRequest(parts=[SystemPromptPart("sys"), UserPromptPart("q")]),
        ModelResponse(parts=[ToolCallPart("read", {"path": "x"}, tool_call_id="r1")]),
        ModelRequest(parts=[RetryPromptPart("no such file", tool_name="read", tool_call_id="r1")]),
        ModelResponse(parts=[TextPart("not JSON")]),
        ModelRequest(parts=[RetryPromptPart("answer in JSON")]),
        ModelResponse(parts=[TextPart("{}")]),
    ]

    captured = to_chat_messages(history)

    answers = assert_paired(captured.messages)
    assert answers["r1"].outcome == "tool_error" and "no such file" in (answers["r1"].content or "")
    assert [m.role for m in captured.messages] == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert captured.invalid_tool_calls == 1


def test_a_result_with_no_matching_call_is_not_paired_by_position() -> None:
    # Adversarial: the result's id names no call. Position would pair it; the id does not.
    history: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart("q")]),
        ModelResponse(parts=[ToolCallPart("read", {"path": "x"}, tool_call_id="mine")]),
        ModelRequest(parts=[ToolReturnPart("read", "someone else's result", tool_call_id="theirs")]),
        ModelResponse(parts=[TextPart("done")]),
    ]

    captured = to_chat_messages(history)

    assert captured.dropped_unanswered_calls == 1
    assert not any(m.tool_calls for m in captured.messages)


def test_garbled_arguments_are_kept_verbatim() -> None:
    history: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart("q")]),
        ModelResponse(parts=[ToolCallPart("read", '{"path": "a.py"', tool_call_id="g1")]),
        ModelRequest(parts=[ToolReturnPart("read", "error", tool_call_id="g1")]),
    ]

    call = next(c for m in to_chat_messages(history).messages for c in m.tool_calls or [])

    assert call.function.arguments == {"_raw": '{"path": "a.py"'}


def test_a_continued_conversation_rebuilds_the_same_pairs(workspace: Path) -> None:
    first = run(agent_over(workspace, [
        [ToolCallPart("read", {"path": "a.py"}, tool_call_id="k1"), ToolCallPart("read", {"path": "b.py"}, tool_call_id="k2")],
        [TextPart("b.py")],
    ]))
    turns = first.messages[2:-1]  # the history a continuation carries: calls and their results

    rebuilt = to_chat_messages(to_model_messages("sys", "q", turns))

    assert rebuilt.messages[2:] == turns
    assert_paired(rebuilt.messages)


@pytest.mark.parametrize("broken", [
    lambda m: m.append(ChatMessage(role="tool", tool_call_id="c-b", name="read", content="twice")),
    lambda m: m.pop(3),
])
def test_the_pairing_check_itself_fails_on_broken_records(workspace: Path, broken: Callable[[list[ChatMessage]], object]) -> None:
    captured = run(agent_over(workspace, [
        [ToolCallPart("read", {"path": "b.py"}, tool_call_id="c-b"), ToolCallPart("read", {"path": "a.py"}, tool_call_id="c-a")],
        [TextPart("b.py")],
    ]))
    messages = list(captured.messages)
    broken(messages)

    with pytest.raises(AssertionError):
        assert_paired(messages)


def test_parts_that_are_neither_calls_nor_results_leave_the_pairs_intact(workspace: Path) -> None:
    # An empty reply makes pydantic-ai send a retry-feedback part; thinking parts come and go.
    captured = run(agent_over(workspace, [
        [],
        [ThinkingPart("b.py, surely"), ToolCallPart("read", {"path": "b.py"}, tool_call_id="t1")],
        [ThinkingPart("yes"), TextPart("b.py")],
    ]))

    answers = assert_paired(captured.messages)
    assert answers["t1"].content == (workspace / "b.py").read_text()
    assert captured.final_text == "b.py"
    assert [m.role for m in captured.messages][-3:] == ["assistant", "tool", "assistant"]


def test_a_call_id_reused_across_turns_gets_a_name_of_its_own() -> None:
    # Adversarial: a server that numbers calls per turn sends "call_0" every time.
    history: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart("q")]),
        ModelResponse(parts=[ToolCallPart("read", {"path": "a.py"}, tool_call_id="call_0")]),
        ModelRequest(parts=[ToolReturnPart("read", "def alpha(): ...", tool_call_id="call_0")]),
        ModelResponse(parts=[ToolCallPart("read", {"path": "b.py"}, tool_call_id="call_0")]),
        ModelRequest(parts=[ToolReturnPart("read", "def beta(): ...", tool_call_id="call_0")]),
        ModelResponse(parts=[TextPart("b.py")]),
    ]

    captured = to_chat_messages(history)

    answers = assert_paired(captured.messages)
    calls = [c for m in captured.messages for c in m.tool_calls or []]
    assert [c.id for c in calls] == ["call_0", "call_0~2"]
    assert answers["call_0"].content == "def alpha(): ..." and answers["call_0~2"].content == "def beta(): ..."
    assert captured.tool_calls == 2 and captured.dropped_unanswered_calls == 0


def test_feedback_on_a_visible_reply_is_kept_and_on_an_empty_one_dropped() -> None:
    from pydantic_ai.messages import RetryFeedbackPart, RetryInfo

    def feedback() -> RetryFeedbackPart:
        return RetryFeedbackPart(content="Please return text.", retry=RetryInfo(cause="no_output"))

    history: list[ModelMessage] = [
        ModelRequest(parts=[UserPromptPart("q")]),
        ModelResponse(parts=[]),
        ModelRequest(parts=[feedback()]),
        ModelResponse(parts=[TextPart("a half answer")]),
        ModelRequest(parts=[feedback()]),
        ModelResponse(parts=[TextPart("b.py")]),
    ]

    messages = to_chat_messages(history).messages

    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2].content is not None and "Please return text." in messages[2].content
