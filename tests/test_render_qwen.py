"""Rendering with the student's Qwen2.5 template, and the per-turn loss mask."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trainer_fixtures import SYSTEM, TOOLS, call, tiny_model  # noqa: F401 - fixture

from distill.trainer.errors import TrainerError
from distill.trainer.render import chat_messages, load_tokenizer, render_masked, render_text

MESSAGES = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "Where is parse defined? ✓"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            call("c1", "grep", {"pattern": "def parse", "path": "."}),
            call("c2", "read_file", {"path": "config.py"}),
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "config.py:3: def parse():"},
    {"role": "tool", "tool_call_id": "c2", "content": "import tomllib\n\ndef parse():\n    ..."},
    {"role": "assistant", "content": "Let me check the tests too.", "tool_calls": [call("c3", "grep", {"pattern": "parse("})]},
    {"role": "tool", "tool_call_id": "c3", "content": "tests/test_config.py:5: parse()"},
    {"role": "assistant", "content": "In config.py, line 3; tests call it. 完成"},
]


def tools_block() -> str:
    return "\n".join(json.dumps(tool, ensure_ascii=False) for tool in TOOLS)


EXPECTED = (
    "<|im_start|>system\n" + SYSTEM + "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    + tools_block()
    + "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\nWhere is parse defined? ✓<|im_end|>\n"
    "<|im_start|>assistant\n"
    '<tool_call>\n{"name": "grep", "arguments": {"pattern": "def parse", "path": "."}}\n</tool_call>\n'
    '<tool_call>\n{"name": "read_file", "arguments": {"path": "config.py"}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\nconfig.py:3: def parse():\n</tool_response>\n"
    "<tool_response>\nimport tomllib\n\ndef parse():\n    ...\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\nLet me check the tests too.\n"
    '<tool_call>\n{"name": "grep", "arguments": {"pattern": "parse("}}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\n<tool_response>\ntests/test_config.py:5: parse()\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\nIn config.py, line 3; tests call it. 完成<|im_end|>\n"
)


def test_qwen25_template_renders_tool_calls_and_merged_tool_results(tiny_model: Path) -> None:
    tokenizer = load_tokenizer(tiny_model)
    assert render_text(tokenizer, chat_messages(MESSAGES), TOOLS) == EXPECTED


def test_mask_covers_every_assistant_turn_with_its_end_token(tiny_model: Path) -> None:
    tokenizer = load_tokenizer(tiny_model)
    masked = render_masked(tokenizer, chat_messages(MESSAGES), TOOLS)
    assert masked.text == EXPECTED
    assert len(masked.tokens) == len(masked.mask)
    assert masked.trained_text(tokenizer) == [
        '<tool_call>\n{"name": "grep", "arguments": {"pattern": "def parse", "path": "."}}\n</tool_call>\n'
        '<tool_call>\n{"name": "read_file", "arguments": {"path": "config.py"}}\n</tool_call><|im_end|>',
        'Let me check the tests too.\n<tool_call>\n{"name": "grep", "arguments": {"pattern": "parse("}}\n</tool_call><|im_end|>',
        "In config.py, line 3; tests call it. 完成<|im_end|>",
    ]
    # The masked tokens decode back to the untouched text: nothing is lost at span edges.
    assert tokenizer._tokenizer.decode(masked.tokens, skip_special_tokens=False) == EXPECTED


def test_string_arguments_would_be_double_encoded(tiny_model: Path) -> None:
    """Why convert turns JSON-string arguments into objects (mlx-examples issue 1053)."""
    tokenizer = load_tokenizer(tiny_model)
    as_string = [dict(m) for m in MESSAGES[:3]]
    as_string[2] = {"role": "assistant", "content": None, "tool_calls": [call("c1", "grep", '{"pattern": "x"}')]}
    text = render_text(tokenizer, chat_messages(as_string), TOOLS)
    assert '"arguments": "{\\"pattern\\": \\"x\\"}"' in text


def test_a_template_whose_generation_prompt_never_opens_a_turn_is_refused(tmp_path: Path) -> None:
    from tiny_model import build_tiny_model

    # Looks like ChatML, but turns are written as "model" while the generation prompt says
    # "assistant": where a turn starts cannot be found, so no mask is exact.
    template = (
        "{%- for m in messages %}<|im_start|>{{ 'model' if m.role == 'assistant' else m.role }}\n"
        "{{ m.content }}<|im_end|>\n{%- endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
    )
    model = build_tiny_model(tmp_path / "m", chat_template=template)
    tokenizer = load_tokenizer(model)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    with pytest.raises(TrainerError, match="cannot find where assistant message 1 starts"):
        render_masked(tokenizer, messages)


# Message texts: any printable text incl. non-ASCII, newlines inside, never starting with
# whitespace (a leading newline would merge with the template's own newline into one token that
# straddles the turn boundary; such a token stays unmasked, see render_masked).
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="<>") | st.sampled_from("\n\t"),
    min_size=1,
    max_size=40,
).filter(lambda text: not text[0].isspace() and unicodedata.normalize("NFC", text) == text)
# (The tokenizer NFC-normalizes, e.g. U+F900 becomes U+8C48: only text that survives that
# unchanged can be compared character for character after decoding.)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(turns=st.lists(st.tuples(TEXT, st.booleans(), TEXT, TEXT), min_size=1, max_size=3), answer=TEXT)
def test_mask_is_exactly_the_assistant_turns_for_any_text(tiny_model: Path, turns: list, answer: str) -> None:
    tokenizer = load_tokenizer(tiny_model)
    messages: list[dict] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "question"}]
    expected = []
    for index, (thought, with_text, argument, result) in enumerate(turns):
        content = thought if with_text else ""
        arguments = {"pattern": argument}
        messages.append({"role": "assistant", "content": content, "tool_calls": [call(f"c{index}", "grep", arguments)]})
        messages.append({"role": "tool", "tool_call_id": f"c{index}", "content": result})
        rendered_call = f'<tool_call>\n{{"name": "grep", "arguments": {json.dumps(arguments, ensure_ascii=False)}}}\n</tool_call>'
        expected.append((content + "\n" if content else "") + rendered_call + "<|im_end|>")
    messages.append({"role": "assistant", "content": answer})
    expected.append(answer + "<|im_end|>")
    masked = render_masked(tokenizer, chat_messages(messages), TOOLS)
    assert masked.trained_text(tokenizer) == expected
