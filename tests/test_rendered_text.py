"""Rendered chat text (mlx-lm's `{"text"}` lines) read back into messages, for every template family."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny_model import build_tiny_model
from trainer_fixtures import read_jsonl, tiny_model, write_jsonl  # noqa: F401 - fixture

from distill.shared.errors import LineError
from distill.trainer.chat_lines import plain_trajectory
from distill.trainer.convert import convert
from distill.trainer.errors import TrainerError
from distill.trainer.render import chat_messages, load_tokenizer, render_text
from distill.trainer.rendered import NotThisFamily, parse_rendered
from distill.trainer.thinking import template_thinks, with_reasoning

PLACEHOLDER = "[Tool execution completed]"
TOOLS = [{"type": "function", "function": {"name": "grep", "description": "Search files.",
          "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}}, "required": ["pattern"]}}}]


def tool_conversation(result: str = "a.py:1:class Collector:") -> list[dict[str, Any]]:
    call = {"id": "call00001", "type": "function", "function": {"name": "grep", "arguments": {"pattern": "Collector"}}}
    return [
        {"role": "system", "content": "You help."},
        {"role": "user", "content": "Where is Collector?"},
        {"role": "assistant", "content": "", "tool_calls": [call], "reasoning_content": "Search for it."},
        {"role": "tool", "tool_call_id": "call00001", "name": "grep", "content": result},
        {"role": "assistant", "content": "Found it in a.py.", "reasoning_content": "It is in a.py."},
    ]


def chat_conversation() -> list[dict[str, Any]]:
    return [{"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi there."},
            {"role": "user", "content": "Where is Collector?"}, {"role": "assistant", "content": "In a.py."}]


FAMILIES = {"qwen25": True, "qwen3": True, "llama3": True, "mistral": True, "gemma3": False, "smollm2": False}


@pytest.fixture(scope="module")
def students(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("families")
    return {family: load_tokenizer(build_tiny_model(root / family, family=family, num_layers=1, hidden_size=32,
                                                    intermediate_size=64)) for family in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_rendered_text_reads_back_into_the_same_rendering(students: dict[str, Any], family: str) -> None:
    tokenizer = students[family]
    with_tools = FAMILIES[family]
    conversation = tool_conversation() if with_tools else chat_conversation()
    messages = with_reasoning(conversation, "keep", template_thinks(tokenizer)) if family == "qwen3" else [
        {k: v for k, v in m.items() if k != "reasoning_content"} for m in conversation]
    text = render_text(tokenizer, chat_messages(messages), TOOLS if with_tools else None)
    line = parse_rendered(text)
    # Read as convert reads it: a plain chat line (ids given by order where the text has none).
    trajectory = plain_trajectory("text.jsonl", 1, line)
    assert not isinstance(trajectory, LineError), trajectory
    again = chat_messages(m.model_dump(exclude_none=True) for m in trajectory.messages)
    assert render_text(tokenizer, again, line.get("tools")) == text
    if with_tools and family != "mistral":  # Mistral v0.3 shows no system message before a reply
        assert line["tools"] == TOOLS
    if family == "qwen3":
        assert [m.get("reasoning_content") for m in line["messages"] if m["role"] == "assistant"] == [
            "Search for it.", "It is in a.py."]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Hello, just prose.", "fits no known chat format"),
        # ChatML with prose after the last turn: not a rendered conversation.
        ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\ntrailing prose", "ChatML"),
        # A tool call that is not JSON.
        ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{grep}\n</tool_call><|im_end|>\n",
         "a tool call that is not JSON"),
        # An unknown role is not read as a user turn.
        ("<|im_start|>narrator\nhi<|im_end|>\n", "no ChatML turns"),
    ],
)
def test_text_that_fits_no_family_says_which_families_were_tried(text: str, problem: str) -> None:
    with pytest.raises(NotThisFamily) as raised:
        parse_rendered(text)
    message = str(raised.value)
    assert problem in message
    assert all(family in message for family in ("ChatML", "Llama 3", "Mistral", "Gemma 3"))


def test_convert_names_file_line_and_the_families_tried(tmp_path: Path, tiny_model: Path) -> None:
    data = write_jsonl(tmp_path / "text.jsonl", [{"text": "Hello, just prose."}])
    with pytest.raises(TrainerError, match=r"text.jsonl:1: field text: fits no known chat format \(tried ChatML"):
        convert(data, tiny_model, tmp_path / "out")


@pytest.fixture()
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "config.py").write_text("DEBUG = True\nTIMEOUT = 30\n")
    return root


def test_a_qwen_text_line_with_a_placeholder_is_repaired_and_converts_with_the_same_rendering(
    tmp_path: Path, workspace: Path, tiny_model: Path
) -> None:
    tokenizer = load_tokenizer(tiny_model)
    call = {"type": "function", "function": {"name": "grep", "arguments": {"pattern": "TIMEOUT =", "path": "pkg"}}}

    def conversation(result: str) -> list[dict[str, Any]]:
        return [{"role": "system", "content": "Answer questions about the code."},
                {"role": "user", "content": "Where is TIMEOUT defined?"},
                {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", **call}]},
                {"role": "tool", "tool_call_id": "c1", "content": result},
                {"role": "assistant", "content": "In pkg/config.py."}]

    # The tools section the dataset was rendered with: the workspace tools repair replays.
    probe = write_jsonl(tmp_path / "probe.jsonl", [{"messages": conversation(PLACEHOLDER)}])
    subprocess.run([sys.executable, "-m", "distill", "repair", str(probe), "--workspace", str(workspace),
                    "--out", str(tmp_path / "probe-out.jsonl")], check=True, capture_output=True, timeout=300)
    tools = read_jsonl(tmp_path / "probe-out.jsonl")[0]["tools"]
    text = render_text(tokenizer, chat_messages(conversation(PLACEHOLDER)), tools)
    assert "<tool_response>\n[Tool execution completed]\n</tool_response>" in text
    dataset = write_jsonl(tmp_path / "phase1.jsonl", [{"text": text}])

    run = subprocess.run([sys.executable, "-m", "distill", "repair", str(dataset), "--workspace", str(workspace),
                          "--out", str(tmp_path / "repaired.jsonl")], capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    [row] = read_jsonl(tmp_path / "repaired.jsonl")
    assert row["messages"][3]["content"] == "pkg/config.py:2: TIMEOUT = 30"

    report = convert(tmp_path / "repaired.jsonl", tiny_model, tmp_path / "data", format="text")
    assert report.kept == 1, report.drops
    [converted] = read_jsonl(tmp_path / "data" / "train.jsonl")
    # The same rendering as the original line, with the real result where the placeholder was.
    assert converted["text"] == text.replace(PLACEHOLDER, "pkg/config.py:2: TIMEOUT = 30")
    assert json.loads(json.dumps(row["tools"])) == tools
