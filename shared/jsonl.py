"""JSONL and JSON files, read and written one way everywhere.

- `iter_jsonl`: each line with its number, parsed, or a `LineError` naming file and line;
- `DurableAppender`: appended lines are on disk (fsynced) before `append` returns, and a failed or
  interrupted write leaves no half line behind (`cut_partial_line` mends a file a crash left);
- `atomic_writer` / `write_atomic`: a whole file replaced at once, so a reader never sees half of
  it, nor an empty file after a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from distill.shared.errors import WHOLE_LINE, LineError


def iter_jsonl(path: Path, *, max_line_bytes: int | None = None) -> Iterator[tuple[int, dict[str, Any] | LineError]]:
    """Each non-blank line as (number, JSON object), or (number, LineError) when it is not one."""
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if max_line_bytes is not None and len(raw) > max_line_bytes:
                yield number, LineError(str(path), number, WHOLE_LINE, f"line is longer than {max_line_bytes:,} bytes")
                continue
            yield number, parse_json_object(str(path), number, raw)


def parse_json_object(path: str, number: int, raw: bytes) -> dict[str, Any] | LineError:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return LineError(path, number, WHOLE_LINE, f"not UTF-8 (byte {error.start})")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if not raw.endswith(b"\n"):
            return LineError(path, number, WHOLE_LINE, "truncated last line (not complete JSON)")
        return LineError(path, number, WHOLE_LINE, f"not JSON ({error.msg} at column {error.colno})")
    if not isinstance(data, dict):
        return LineError(path, number, WHOLE_LINE, f"expected a JSON object, got {type(data).__name__}")
    return data


def count_lines(path: Path) -> int:
    """Non-blank lines of a file (0 when it does not exist), without parsing them."""
    try:
        with Path(path).open("rb") as handle:
            return sum(1 for raw in handle if raw.strip())
    except FileNotFoundError:
        return 0


def cut_partial_line(path: Path) -> bool:
    """Drop a last line that a crash left without its newline. Returns True if it cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as handle:
        handle.seek(-1, os.SEEK_END)
        if handle.read(1) == b"\n":
            return False
        size = handle.seek(0, os.SEEK_END)
        step = 1 << 16
        position = size
        while position > 0:
            position = max(0, position - step)
            handle.seek(position)
            chunk = handle.read(min(step, size - position))
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                handle.truncate(position + newline + 1)
                return True
        handle.truncate(0)
        return True


class DurableAppender:
    """Appends whole lines to one file; each `append` is on disk before it returns.

    Opening cuts a partial last line a killed writer left. A write that fails (disk full) is cut
    back to where it began, and the OSError goes to the caller: the file never holds half a line.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle: IO[bytes] | None = None

    def append(self, lines: Iterable[str | bytes]) -> None:
        chunk = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
        if not chunk:
            return
        handle = self._open()
        before = handle.tell()
        try:
            handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):
                handle.truncate(before)
            raise

    def _open(self) -> IO[bytes]:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cut_partial_line(self.path)
            self._handle = self.path.open("ab")
        return self._handle

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> DurableAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def atomic_writer(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A handle on a temporary file beside `path` that replaces `path` when the block succeeds.

    On an exception the temporary file is removed and `path` keeps what it held.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(scratch, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(scratch)
        raise


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` at once (readers see the old file or the new one, never half)."""
    with atomic_writer(path) as handle:
        handle.write(text)
