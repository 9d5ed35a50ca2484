"""Shared helpers for the trainer tests: a tiny random model and valid conversation records.

Import the fixture into a test module (`from trainer_fixtures import tiny_model`) to use it.
"""

from __future__ import annotations

import copy
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from tiny_model import build_tiny_model

from distill.shared.records import Conversation

READ_FILE = {
    "type": "function",
    "function": {
        "name": "read_file",
        "description": "Read a text file in the workspace.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "max_lines": {"type": "integer"},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    },
}
GREP = {
    "type": "function",
    "function": {
        "name": "grep",
        "description": "Search files for a pattern.",
        "parameters": {
            "type": "object",
            "properties": {"pattern": {"type": "string"}, "path": {"type": "string"}},
            "required": ["pattern"],
        },
    },
}
TOOLS = [READ_FILE, GREP]
SYSTEM = "You answer questions about the workspace. Use the tools."


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2-style model directory with the Qwen2.5 tool template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model", seed=0)


def call(call_id: str, name: str, arguments: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def conversation(
    task_id: str = "t-1",
    *,
    prompt: str = "What does config.py do?",
    calls: list[tuple[str, dict[str, Any]]] | None = None,
    results: list[str] | None = None,
    answer: str = "It parses the TOML settings file.",
) -> dict[str, Any]:
    """A valid Conversation record as a dict: one assistant turn per call, then the answer."""
    calls = [("read_file", {"path": "config.py"})] if calls is None else calls
    results = results or [f"result {i}: def parse(): ..." for i in range(len(calls))]
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": prompt},
    ]
    for index, (name, arguments) in enumerate(calls):
        call_id = f"call_{task_id}_{index}"
        messages.append({"role": "assistant", "content": None, "tool_calls": [call(call_id, name, arguments)]})
        messages.append({"role": "tool", "tool_call_id": call_id, "content": results[index]})
    messages.append({"role": "assistant", "content": answer})
    record = {
        "schema_version": 1,
        "task_id": task_id,
        "run": "test-run",
        "prompt": prompt,
        "status": "final_answer",
        "messages": messages,
        "tools": copy.deepcopy(TOOLS),
        "teacher": {"endpoint": "local", "base_url": "http://127.0.0.1:1/v1", "model": "teacher"},
        "usage": {"requests": len(calls) + 1, "tool_calls": len(calls)},
        "timings": {
            "started_at": "2025-01-01T00:00:00Z",
            "finished_at": "2025-01-01T00:00:05Z",
            "duration_s": 5.0,
        },
        "attempt": 1,
        "worker": {"node": "n", "actor": "a", "pid": 1},
    }
    Conversation.model_validate(record)  # the helper itself must build valid records
    return record


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """Write records (dicts, or raw strings written as they are) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(record if isinstance(record, str) else json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def answer_completion(handler: BaseHTTPRequestHandler, model: str, message: dict[str, Any], finish: str) -> None:
    """Send one OpenAI chat completion from a scripted test endpoint (an http.server handler)."""
    payload = json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)
