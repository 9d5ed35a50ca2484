"""Loss masks for the chat templates students use, each as its model folder ships it.

For every family one short conversation is rendered with the real template (tests/templates/)
and tiny tokenizer that has the family's special tokens; the trained tokens must be exactly the
assistant turns, token by token, against a hand-written expectation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distill.trainer.errors import TrainerError
from distill.trainer.render import encode, hf_tokenizer, load_tokenizer, render_masked
from distill.trainer.thinking import template_thinks, with_reasoning
from tiny_model import build_tiny_model

TOOLS = [{"type": "function", "function": {"name": "grep", "description": "Search files.",
          "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}}, "required": ["pattern"]}}}]
CALL = {"id": "call00001", "type": "function", "function": {"name": "grep", "arguments": {"pattern": "Collector"}}}


def tool_conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Where is Collector?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL], "reasoning_content": "Search for it."},
        {"role": "tool", "tool_call_id": "call00001", "name": "grep", "content": "a.py:1:class Collector:"},
        {"role": "assistant", "content": "Found it in a.py.", "reasoning_content": "It is in a.py."},
    ]


def chat_conversation() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Hello?"},
        {"role": "assistant", "content": "Hi there.", "reasoning_content": "Greet back."},
        {"role": "user", "content": "Where is Collector?"},
        {"role": "assistant", "content": "Found it in a.py.", "reasoning_content": "It is in a.py."},
    ]


QWEN_CALL = '<tool_call>\n{"name": "grep", "arguments": {"pattern": "Collector"}}\n</tool_call><|im_end|>'
# family -> (conversation, trained spans with reasoning dropped, trained spans with reasoning kept)
EXPECTED: dict[str, tuple[Any, list[str], list[str]]] = {
    "qwen25": (tool_conversation, [QWEN_CALL, "Found it in a.py.<|im_end|>"],
               # No thinking in the template: kept reasoning opens the content; a tool-call turn
               # with no other content shows it too.
               ["<think>\nSearch for it.\n</think>\n\n\n" + QWEN_CALL,
                "<think>\nIt is in a.py.\n</think>\n\nFound it in a.py.<|im_end|>"]),
    "qwen3": (tool_conversation,
              # Non-thinking: earlier turns plain, the last one with Qwen3's empty thinking block.
              [QWEN_CALL, "<think>\n\n</think>\n\nFound it in a.py.<|im_end|>"],
              ["<think>\nSearch for it.\n</think>\n\n" + QWEN_CALL,
               "<think>\nIt is in a.py.\n</think>\n\nFound it in a.py.<|im_end|>"]),
    "llama3": (tool_conversation,
               ['{"name": "grep", "parameters": {"pattern": "Collector"}}<|eot_id|>', "Found it in a.py.<|eot_id|>"],
               # Llama renders no content on a tool-call turn, so that turn's reasoning is not shown.
               ['{"name": "grep", "parameters": {"pattern": "Collector"}}<|eot_id|>',
                "<think>\nIt is in a.py.\n</think>\n\nFound it in a.py.<|eot_id|>"]),
    "mistral": (tool_conversation,
                ['[TOOL_CALLS] [{"name": "grep", "arguments": {"pattern": "Collector"}, "id": "call00001"}]</s>',
                 " Found it in a.py.</s>"],
                ['[TOOL_CALLS] [{"name": "grep", "arguments": {"pattern": "Collector"}, "id": "call00001"}]</s>',
                 " <think>\nIt is in a.py.\n</think>\n\nFound it in a.py.</s>"]),
    "gemma3": (chat_conversation, ["Hi there.<end_of_turn>", "Found it in a.py.<end_of_turn>"],
               ["<think>\nGreet back.\n</think>\n\nHi there.<end_of_turn>",
                "<think>\nIt is in a.py.\n</think>\n\nFound it in a.py.<end_of_turn>"]),
    "smollm2": (chat_conversation, ["Hi there.<|im_end|>", "Found it in a.py.<|im_end|>"],
                ["<think>\nGreet back.\n</think>\n\nHi there.<|im_end|>",
                 "<think>\nIt is in a.py.\n</think>\n\nFound it in a.py.<|im_end|>"]),
}


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("families")
    return {family: load_tokenizer(build_tiny_model(root / family, family=family, num_layers=1, hidden_size=32,
                                                    intermediate_size=64))
            for family in EXPECTED}


@pytest.mark.parametrize("keep", [False, True], ids=["drop", "keep"])
@pytest.mark.parametrize("family", list(EXPECTED))
def test_trained_tokens_are_exactly_the_assistant_turns(students: dict[str, Any], family: str, keep: bool) -> None:
    tokenizer = students[family]
    conversation, dropped, kept = EXPECTED[family]
    messages = with_reasoning(conversation(), "keep" if keep else "drop", template_thinks(tokenizer))
    tools = TOOLS if conversation is tool_conversation else None
    masked = render_masked(tokenizer, messages, tools)
    expected = kept if keep else dropped
    assert masked.trained_text(tokenizer) == expected
    # Token by token: the trained ids are the expected texts' own tokens, in order.
    trained = [token for token, on in zip(masked.tokens, masked.mask) if on]
    assert trained == [token for text in expected for token in encode(tokenizer, text)]
    # And nothing else is: the untrained text holds every user, system and tool message (Mistral
    # v0.3's template shows the system message only when the conversation ends on a user turn).
    untrained = hf_tokenizer(tokenizer).decode([t for t, on in zip(masked.tokens, masked.mask) if not on])
    for message in messages:
        if message["role"] != "assistant" and not (family == "mistral" and message["role"] == "system"):
            assert message["content"] in untrained


def test_only_thinking_templates_read_reasoning_content(students: dict[str, Any]) -> None:
    assert {family for family, tokenizer in students.items() if template_thinks(tokenizer)} == {"qwen3"}


def test_qwen3_hides_reasoning_of_turns_before_the_last_query(students: dict[str, Any]) -> None:
    tokenizer = students["qwen3"]
    masked = render_masked(tokenizer, with_reasoning(chat_conversation(), "keep", True))
    # The first answer precedes the last user query: Qwen3 renders it without its thinking.
    assert masked.trained_text(tokenizer) == ["Hi there.<|im_end|>",
                                              "<think>\nIt is in a.py.\n</think>\n\nFound it in a.py.<|im_end|>"]


def test_a_template_with_no_boundary_before_the_answer_is_refused(tmp_path: Path) -> None:
    # Looks like ChatML, but nothing separates the user's text from the answer: no exact mask.
    template = ("{% for m in messages %}{% if m.role == 'assistant' %}{{ m.content + '<|im_end|>' }}"
                "{% else %}{{ '<|im_start|>' + m.role + '\\n' + m.content }}{% endif %}{% endfor %}")
    tokenizer = load_tokenizer(build_tiny_model(tmp_path / "m", chat_template=template, num_layers=1,
                                                hidden_size=32, intermediate_size=64))
    with pytest.raises(TrainerError, match="no boundary before assistant message 1"):
        render_masked(tokenizer, chat_conversation())


def test_a_turn_quoting_the_end_marker_is_refused(students: dict[str, Any]) -> None:
    messages = chat_conversation()
    messages[1]["content"] = "Type <|im_end|> to stop."
    with pytest.raises(TrainerError, match="assistant message 1"):
        render_masked(students["smollm2"], messages)


def test_a_user_message_quoting_the_lead_in_is_not_taken_for_the_turn(students: dict[str, Any]) -> None:
    messages = chat_conversation()
    messages[2]["content"] = "Why does <|im_end|>\n<|im_start|>assistant\n appear? Where is Collector?"
    masked = render_masked(students["smollm2"], messages)
    assert masked.trained_text(students["smollm2"]) == ["Hi there.<|im_end|>", "Found it in a.py.<|im_end|>"]


def test_convert_stops_on_a_template_it_cannot_mask(tmp_path: Path) -> None:
    from trainer_fixtures import conversation, write_jsonl

    from distill.trainer.convert import convert

    template = ("{% for m in messages %}{% if m.role == 'assistant' %}{{ (m.content or '') + '<|im_end|>' }}"
                "{% else %}{{ '<|im_start|>' + m.role + '\\n' + (m.content or '') }}{% endif %}{% endfor %}")
    model = build_tiny_model(tmp_path / "m", chat_template=template, num_layers=1, hidden_size=32, intermediate_size=64)
    data = write_jsonl(tmp_path / "run" / "conversations.jsonl", [conversation("t-1")])
    with pytest.raises(TrainerError, match=r"conversations.jsonl:1: the chat template marks no boundary before "
                                           r"assistant message 2"):
        convert(data, model, tmp_path / "out")
    # The text format trains on every token: nothing to mask, so it converts.
    assert convert(data, model, tmp_path / "text", format="text").kept == 1


def test_a_template_that_drops_tool_calls_is_refused(students: dict[str, Any]) -> None:
    # SmolLM2's template renders only `content`: a tool-call turn would train as an empty turn.
    with pytest.raises(TrainerError, match=r"does not render the tool calls of assistant message 2 \(grep\)"):
        render_masked(students["smollm2"], tool_conversation(), TOOLS)
