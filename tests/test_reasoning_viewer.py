"""The viewer shows a teacher's reasoning apart from its answer, and what the student learns of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from tiny_model import build_tiny_model
from trainer_fixtures import conversation, write_jsonl

from distill.trainer.convert import convert
from distill.viewer.app import create_app
from distill.viewer.learn import student_view

REASONS = ("I should read config.py first.", "config.py parses TOML, so that is the answer.")


def records() -> list[dict[str, Any]]:
    out = []
    for index in range(3):
        record = conversation(f"t-{index}", prompt=f"What does config.py do? ({index})")
        for turn, reasoning in zip([m for m in record["messages"] if m["role"] == "assistant"], REASONS):
            turn["reasoning"] = reasoning
        out.append(record)
    return out


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("qwen3") / "model", family="qwen3", num_layers=1)


@pytest.fixture(scope="module")
def qwen25(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("qwen25") / "model", num_layers=1)


@pytest.mark.parametrize(("student", "mode", "fmt", "shown"), [
    ("qwen3", "keep", "chat", True), ("qwen3", "drop", "chat", False),
    # A template without thinking: kept reasoning opens the content, and the line is still found.
    ("qwen25", "keep", "chat", True), ("qwen3", "keep", "text", True),
])
def test_student_view_shows_the_reasoning_it_learns(tmp_path: Path, request: pytest.FixtureRequest, student: str,
                                                    mode: str, fmt: str, shown: bool) -> None:
    model = request.getfixturevalue(student)
    run = tmp_path / "run"
    data = records()
    write_jsonl(run / "conversations.jsonl", data)
    convert(run, model, run / "data", split=(0.5, 0.5, 0.0), reasoning=mode, format=fmt)  # type: ignore[arg-type]
    with TestClient(create_app([run])) as client:
        page = client.get("/runs/run/conversation/1").text
        # The conversation page shows the thinking apart, whatever the student learns.
        assert "reasoning (" in page and REASONS[0] in page
        state = client.app.state.viewer  # type: ignore[attr-defined]
        found = state.catalog.run("run")
        view = student_view(data[0], state.locator(found.convert), state.tokenizers, None)
        trained = "".join(piece.text for piece in view.pieces if piece.trained)
        assert (REASONS[1] in trained) is shown
        assert "It parses the TOML settings file." in trained
