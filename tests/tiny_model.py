"""A tiny random-weight model directory that mlx-lm loads, trains and serves, built fully offline.

Tests (and `distill` demos) must never download weights, yet they need a real model so that the
real mlx_lm code paths run: `mlx_lm.load`, LoRA training, `mlx_lm.server` with tool parsing. The
weights are random, so the model's answers are noise; its tokenizer and chat template are real
enough (Qwen2.5 tool format) that rendering, masking and tool-call parsing behave as with Qwen2.5.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from distill.teachers.chat_templates import QWEN25_CHAT_TEMPLATE

# Qwen2.5 marks the chat-control tokens special (hidden when decoding) but not the tool tags: the
# server's streaming detokenizer must see "<tool_call>" in the text to parse a call.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TOOL_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")

TEMPLATES_DIR = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Family:
    """A chat-template family: its template file and the tokens that template writes."""

    template: str
    special: tuple[str, ...]
    eos: str
    pad: str
    bos: str | None = None
    # Added as ordinary tokens (the family's tool and thinking tags, seen in decoded text).
    plain: tuple[str, ...] = ()


_QWEN25 = Family("", SPECIAL_TOKENS, eos="<|im_end|>", pad="<|endoftext|>", plain=TOOL_TOKENS)
FAMILIES: dict[str, Family] = {
    "qwen25": _QWEN25,
    "qwen3": Family("qwen3.jinja", SPECIAL_TOKENS, eos="<|im_end|>", pad="<|endoftext|>",
                    plain=(*TOOL_TOKENS, "<think>", "</think>")),
    "llama3": Family("llama3.jinja", ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                                      "<|eom_id|>", "<|python_tag|>"),
                     eos="<|eot_id|>", pad="<|eot_id|>", bos="<|begin_of_text|>"),
    "mistral": Family("mistral.jinja", ("<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]",
                                        "[/AVAILABLE_TOOLS]", "[TOOL_RESULTS]", "[/TOOL_RESULTS]"),
                      eos="</s>", pad="</s>", bos="<s>"),
    "gemma3": Family("gemma3.jinja", ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
                     eos="<end_of_turn>", pad="<pad>", bos="<bos>"),
    "smollm2": Family("smollm2.jinja", SPECIAL_TOKENS, eos="<|im_end|>", pad="<|endoftext|>"),
}

# Enough varied text for a byte-level BPE to learn useful merges for chat, JSON and code.
_CORPUS = """
You are a careful software engineer answering questions about the code in the current workspace.
Use the tools to look at the real files before you answer: search with grep, find files with
find_files, list folders with list_dir and read code with read_file. Call only the tools you need,
then answer concisely, citing file paths.
What does the function parse_config do? Where is the retry policy defined? How many tests are there?
The answer is in src/app/config.py: it reads the TOML file and validates every field.
{"name": "read_file", "arguments": {"path": "src/app/config.py"}}
{"name": "grep", "arguments": {"pattern": "def retry", "path": "."}}
{"name": "list_dir", "arguments": {"path": "tests"}}
{"name": "find_files", "arguments": {"pattern": "*.py"}}
{"type": "function", "function": {"name": "read_file", "description": "Read a text file.",
"parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}
def parse_config(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return tomllib.loads(handle.read())
class RetryPolicy:
    max_attempts: int = 3
    backoff_s: float = 1.0
import json, os, sys
for line in lines:
    if not line.strip():
        continue
    print(line)
The quick brown fox jumps over the lazy dog. Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2048.
system user assistant tool tools function arguments name description parameters properties
required type object string integer boolean array number null true false
Hello! How can I help you today? I found 3 files. The file defines a class and two functions.
"""


def build_tiny_model(
    out_dir: Path,
    *,
    arch: Literal["qwen2", "qwen3", "llama"] = "qwen2",
    seed: int = 0,
    num_layers: int = 2,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    vocab_size: int = 600,
    max_position_embeddings: int = 4096,
    chat_template: str = QWEN25_CHAT_TEMPLATE,
    extra_corpus: Sequence[str] = (),
    family: str | None = None,
) -> Path:
    """Write a random-weight model (config.json, model.safetensors, tokenizer) into `out_dir`.

    `vocab_size` is the BPE target; the model's vocabulary is the tokenizer's real size. Texts in
    `extra_corpus` (e.g. the tool schemas a test will render) join the BPE training text, so they
    take fewer tokens and the test runs faster. `family` (a key of FAMILIES) gives the model that
    family's chat template, as its own model folder ships it (tests/templates/), and the special
    tokens the template writes. Returns `out_dir`. Deterministic for a given seed and arguments.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten

    spec = FAMILIES[family] if family is not None else _QWEN25
    if spec.template:
        chat_template = (TEMPLATES_DIR / spec.template).read_text(encoding="utf-8")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(vocab_size, extra_corpus, spec)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    im_end = tokenizer.token_to_id(spec.eos)
    endoftext = tokenizer.token_to_id(spec.bos or spec.pad)

    config = {
        "model_type": arch,
        "architectures": [{"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}.get(arch, "LlamaForCausalLM")],
        "hidden_size": hidden_size,
        "num_hidden_layers": num_layers,
        "intermediate_size": intermediate_size,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "rms_norm_eps": 1e-6,
        "vocab_size": tokenizer.get_vocab_size(),
        "max_position_embeddings": max_position_embeddings,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "bos_token_id": endoftext,
        "eos_token_id": im_end,
    }
    if arch == "qwen3":
        config["head_dim"] = hidden_size // num_attention_heads
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": spec.bos,
        "eos_token": spec.eos,
        "pad_token": spec.pad,
        "unk_token": None,
        "model_max_length": max_position_embeddings,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "chat_template": chat_template,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))

    model_class, args_class = _model_classes(arch)
    mx.random.seed(seed)
    model = model_class(args_class.from_dict(config))
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    return out_dir


def _build_tokenizer(vocab_size: int, extra_corpus: Sequence[str], spec: Family):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in spec.special],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _CORPUS.splitlines() + [line for text in extra_corpus for line in text.splitlines()]
    tokenizer.train_from_iterator(lines, trainer=trainer)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec.plain])
    return tokenizer


def _model_classes(arch: str):
    if arch == "qwen2":
        from mlx_lm.models import qwen2 as module
    elif arch == "qwen3":
        from mlx_lm.models import qwen3 as module
    elif arch == "llama":
        from mlx_lm.models import llama as module
    else:
        raise ValueError(f"arch must be 'qwen2' or 'llama', not {arch!r}")
    return module.Model, module.ModelArgs
