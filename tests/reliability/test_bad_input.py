"""Bad input: one clear line naming file, line and field; no traceback; nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from distill.shared.prompts import MAX_PROMPT_CHARS, BadLine, PromptsFileError, read_prompts


def generate_cli(tmp_path: Path, prompts: Path, teacher_url: str = "http://127.0.0.1:9/v1") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distill", "generate", str(prompts), "--run", "bad", "--teacher", teacher_url,
         "--teacher-model", "m", "--out-dir", str(tmp_path / "runs"), "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "the file has no prompts"),
        (b"\n\n  \n", "the file has no prompts"),
    ],
)
def test_empty_prompts_file_is_one_clear_error(tmp_path, content, expected):
    prompts = tmp_path / "empty.jsonl"
    prompts.write_bytes(content)
    done = generate_cli(tmp_path, prompts)
    assert done.returncode == 2 and f"{prompts}: {expected}" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs" / "bad" / "conversations.jsonl").exists()


def test_missing_prompts_file(tmp_path):
    done = generate_cli(tmp_path, tmp_path / "nope.jsonl")
    assert done.returncode == 2 and "prompts file not found" in done.stderr and "Traceback" not in done.stderr


def test_five_megabyte_prompt_is_refused_with_its_line(tmp_path):
    prompts = tmp_path / "big.jsonl"
    prompts.write_text(json.dumps({"prompt": "fine"}) + "\n" + json.dumps({"prompt": "x" * 5_000_000}) + "\n")
    items = list(read_prompts(prompts, "r"))
    assert isinstance(items[1], BadLine) and items[1].line == 2 and items[1].field == "prompt"
    assert f"{MAX_PROMPT_CHARS:,}" in items[1].reason
    done = generate_cli(tmp_path, prompts)
    assert done.returncode == 2 and f"{prompts}:2: field prompt: is 5,000,000 characters" in done.stderr


def test_not_utf8_and_wrong_types_name_the_field(tmp_path):
    prompts = tmp_path / "types.jsonl"
    prompts.write_bytes(
        b'\xc3\x28\n{"prompt": "ok", "metadata": "not an object"}\n{"prompt": "ok", "system": 5}\n{"prompt": "ok", "id": ""}\n'
    )
    bad = [str(item) for item in read_prompts(prompts, "r")]
    assert bad == [
        f"{prompts}:1: not UTF-8 (byte 0)",
        f"{prompts}:2: field metadata: Input should be a valid dictionary",
        f"{prompts}:3: field system: Input should be a valid string",
        f"{prompts}:4: field id: String should have at least 1 character",
    ]


def test_unknown_fields_are_refused_not_silently_kept(tmp_path):
    prompts = tmp_path / "extra.jsonl"
    prompts.write_text('{"prompt": "ok", "tags": ["a"]}\n')
    (item,) = read_prompts(prompts, "r")
    assert isinstance(item, BadLine) and item.field == "tags" and "put extra data under metadata" in item.reason


def test_prompts_file_is_a_directory(tmp_path):
    with pytest.raises(PromptsFileError, match="not found"):
        list(read_prompts(tmp_path, "r"))
