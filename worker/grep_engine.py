"""The grep tool's engine: a regular expression over every line of the files under a path.

Patterns come from the model: compilation is bounded (repeat counts), every search runs under
the call's deadline, and a whole-file prefilter skips the files that cannot match.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import regex

from distill.worker.globs import glob_filter, glob_parts
from distill.worker.sandbox import BINARY_SNIFF_BYTES, Scan, ToolError, Workspace, split_lines

MAX_LINE_CHARS = 300
MAX_PATTERN_CHARS = 1000
# regex expands fixed repeats at compile time, which no timeout covers: `a{1000000000}` eats
# gigabytes before search even starts. Bounding the counts keeps compilation cheap.
MAX_REPEAT = 10_000
MAX_REPEAT_PRODUCT = 100_000
_REPEAT_RE = regex.compile(r"\{(\d*),?(\d*)\}")
# Constructs whose match depends on text outside the line (\A, \Z, \G, lookarounds, inline flags):
# a pattern holding one is searched line by line only.
_CONTEXT_SENSITIVE = regex.compile(r"\\[AZzG]|\(\?")
NO_MATCHES = "no matches"


def grep(
    ws: Workspace,
    pattern: str,
    path: str = ".",
    glob: str | None = None,
    ignore_case: bool = False,
    max_results: int = 50,
) -> tuple[str, bool]:
    """The answer, and whether the walk stopped at the time limit (an incomplete answer)."""
    scan = ws.scan()
    compiled = _compile(pattern, ignore_case)
    prefilter = _whole_file_prefilter(pattern, ignore_case)
    if not isinstance(max_results, int) or max_results < 1:
        raise ToolError("max_results must be a positive integer")
    parts = None if glob is None else glob_parts(glob)
    real = ws.resolve(path)
    st = ws.lstat(real, path)
    if stat.S_ISDIR(st.st_mode):
        files: Iterator[tuple[str, os.DirEntry[str] | Path]] = ws.walk(real, scan)
    else:
        ws.check_file(st, path)
        files = iter([(ws.rel(str(real)) or path, real)])

    out: list[str] = []
    more = False
    for rel, entry in files:
        if glob is not None and not glob_filter(glob, parts, rel):
            continue
        data = _read(ws, entry, rel, scan)
        if data is None:
            continue
        text = data.decode("utf-8", errors="replace")
        # One search over the whole file rules out most files; only a file that may match is
        # searched line by line (the answer is still exactly grep's line by line answer).
        if (prefilter is not None and "\r" not in text
                and not _search(prefilter, text, scan.deadline, ws.limits.timeout_s)):
            continue
        for n, line in enumerate(split_lines(text), 1):
            if _search(compiled, line, scan.deadline, ws.limits.timeout_s):
                if len(out) == max_results:
                    more = True
                    break
                out.append(f"{rel}:{n}: {_clip(line)}")
        if time.monotonic() > scan.deadline:
            scan.timed_out = True
        if more or scan.timed_out:
            break

    if more:
        out.append(f"[more matches omitted; showing the first {max_results}]")
    elif not out:
        out.append(NO_MATCHES)
    return "\n".join(out + scan.notes()), scan.timed_out


def _read(ws: Workspace, entry: os.DirEntry[str] | Path, rel: str, scan: Scan) -> bytes | None:
    """Contents of a file worth searching, or None (with a note where the model should know)."""
    try:
        st = entry.stat(follow_symlinks=False) if isinstance(entry, os.DirEntry) else os.lstat(entry)
        ws.check_file(st, rel)
    except OSError:
        return None
    except ToolError:
        scan.skip("hard-linked or special files", rel)
        return None
    if st.st_size > ws.limits.max_file_bytes:
        scan.skip(f"files larger than {ws.limits.max_file_bytes} bytes", rel)
        return None
    try:
        data = ws.read(entry, st, rel)
    except ToolError:
        scan.skip("unreadable files", rel)
        return None
    return None if b"\0" in data[:BINARY_SNIFF_BYTES] else data


def _compile(pattern: str, ignore_case: bool) -> regex.Pattern[str]:
    if not isinstance(pattern, str):
        raise ToolError("pattern must be a string")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ToolError(f"pattern longer than {MAX_PATTERN_CHARS} characters")
    product = 1
    for lo, hi in _REPEAT_RE.findall(pattern):
        count = max(int(lo or 0), int(hi or 0))
        product *= max(count, 1)
        if count > MAX_REPEAT or product > MAX_REPEAT_PRODUCT:
            raise ToolError(f"bad regex: repeat counts too large (max {MAX_REPEAT})")
    try:
        return regex.compile(pattern, regex.IGNORECASE if ignore_case else 0)
    except Exception as e:  # noqa: BLE001 - regex raises several types (error, OverflowError, ...) for bad input
        raise ToolError(f"bad regex: {e}") from None


def _search(compiled: regex.Pattern[str], text: str, deadline: float, limit_s: float) -> bool:
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    try:
        return compiled.search(text, timeout=left) is not None
    except TimeoutError:
        raise ToolError(f"pattern timed out (limit {limit_s:g}s)") from None


def _whole_file_prefilter(pattern: str, ignore_case: bool) -> regex.Pattern[str] | None:
    """A pattern that matches a whole file (with `^`/`$` at line ends) whenever it matches a line of it.

    Sound when the pattern only sees the text it matches and line ends: the file gives a match more
    room, never less, so a file with no whole-file match has no matching line. Files with `\\r` are
    left out by the caller, since a line's trailing `\\r` is cut before matching.
    """
    if _CONTEXT_SENSITIVE.search(pattern):
        return None
    flags = regex.MULTILINE | (regex.IGNORECASE if ignore_case else 0)
    try:
        return regex.compile(pattern, flags)
    except Exception:  # noqa: BLE001 - _compile already accepted it; never fail on the fast path
        return None


def _clip(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " ..."
