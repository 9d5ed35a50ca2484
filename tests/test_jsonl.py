"""The one JSONL module: numbered reads, durable appends that never leave half a line, atomic writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from distill.shared.errors import LineError
from distill.shared.jsonl import DurableAppender, atomic_writer, count_lines, iter_jsonl, write_atomic


def test_lines_are_numbered_and_bad_ones_named(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n\n[1]\nnot json\n{"b": 2')
    rows = list(iter_jsonl(path))
    assert [number for number, _ in rows] == [1, 3, 4, 5]
    assert rows[0][1] == {"a": 1}
    errors = [str(row) for _, row in rows if isinstance(row, LineError)]
    assert errors == [f"{path}:3: expected a JSON object, got list", f"{path}:4: not JSON (Expecting value at column 1)",
                      f"{path}:5: truncated last line (not complete JSON)"]
    assert count_lines(path) == 4 and count_lines(tmp_path / "missing") == 0


def test_an_appender_cuts_what_a_killed_writer_left_then_appends(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2, "half')
    with DurableAppender(path) as appender:
        appender.append(['{"n": 3}', b'{"n": 4}'])
    assert path.read_bytes() == b'{"n": 1}\n{"n": 3}\n{"n": 4}\n'


def test_a_failed_append_leaves_no_half_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.jsonl"
    appender = DurableAppender(path)
    appender.append(['{"n": 1}'])

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        appender.append(['{"n": 2}', '{"n": 3}'])
    monkeypatch.undo()
    appender.append(['{"n": 4}'])
    appender.close()
    assert path.read_bytes() == b'{"n": 1}\n{"n": 4}\n'


def test_an_atomic_write_that_fails_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_atomic(path, '{"v": 1}')
    with pytest.raises(RuntimeError), atomic_writer(path) as handle:
        handle.write('{"v": 2, "half')
        raise RuntimeError("killed mid-write")
    assert path.read_text() == '{"v": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temporary file left
    write_atomic(path, '{"v": 3}')
    assert path.read_text() == '{"v": 3}'
