"""Read-only tools the teacher agent calls, executed for real inside one workspace folder.

Everything here treats its arguments as hostile: the model chooses the paths and patterns.
Nothing may be read from outside the workspace, nothing may block (FIFOs, device files),
and every call finishes within its time limit with a bounded, deterministic answer.
"""

from __future__ import annotations

import fnmatch
import importlib
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import regex

from distill.shared.records import ToolOutcome


@dataclass(frozen=True)
class ToolLimits:
    timeout_s: float = 5.0
    max_output_chars: int = 16_000
    max_file_bytes: int = 2_000_000
    max_files_scanned: int = 5_000


TRUNCATED_MARKER = "[truncated]"

VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", ".fossil"})
# Walks (grep, find_files) skip these folders unless the call starts inside one: environments and
# caches hold thousands of files that would drown the answer and the time limit.
WALK_SKIPPED_DIRS = frozenset({".venv", "venv", "node_modules", "__pycache__", ".mypy_cache",
                               ".pytest_cache", ".hypothesis", ".ruff_cache", ".tox", ".nox", ".eggs"})
BINARY_SNIFF_BYTES = 8192
MAX_LINE_CHARS = 300
MAX_PATTERN_CHARS = 1000
MAX_FIND_RESULTS = 200
# regex expands fixed repeats at compile time, which no timeout covers: `a{1000000000}` eats
# gigabytes before search even starts. Bounding the counts keeps compilation cheap.
MAX_REPEAT = 10_000
MAX_REPEAT_PRODUCT = 100_000
_REPEAT_RE = regex.compile(r"\{(\d*),?(\d*)\}")

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


class ToolError(Exception):
    """A failure the model should see as the tool's answer ("error: ...")."""


BUILTIN_TOOL_NAMES = ("grep", "read_file", "list_dir", "find_files")
# First lines of a real answer that found nothing: the tool's own answer, worth learning from.
NOTHING_FOUND = frozenset({"no matches", "no files found"})


@dataclass
class _Scan:
    """Bookkeeping for one directory walk, so callers can report why it stopped early."""

    deadline: float
    max_files: int
    files_seen: int = 0
    timed_out: bool = False
    hit_file_limit: bool = False
    skipped: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, rel: str) -> None:
        self.skipped.setdefault(reason, []).append(rel)

    def notes(self) -> list[str]:
        out = []
        for reason, paths in self.skipped.items():
            shown = ", ".join(paths[:10]) + (f", ... ({len(paths) - 10} more)" if len(paths) > 10 else "")
            out.append(f"[skipped {len(paths)} {reason}: {shown}]")
        if self.hit_file_limit:
            out.append(f"[stopped after scanning {self.max_files} files; results incomplete - narrow the path]")
        if self.timed_out:
            out.append("[stopped at the time limit; results incomplete - narrow the path]")
        return out


class Workspace:
    """A directory the tools may read, and nothing outside it."""

    def __init__(self, root: str | Path, limits: ToolLimits = ToolLimits()) -> None:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise ToolError(f"workspace root is not a directory: {root}")
        self.root = Path(real)
        self.limits = limits
        self._root_str = real

    # ----------------------------------------------------------------- paths

    def resolve(self, path: str) -> Path:
        """Map a workspace-relative path to its real absolute path, refusing anything outside."""
        if not isinstance(path, str):
            raise ToolError("path must be a string")
        if "\0" in path:
            raise ToolError("path contains a NUL byte")
        if path.startswith("~"):
            raise ToolError("'~' paths are not allowed; use a path relative to the workspace root")
        if os.path.isabs(path):
            raise ToolError("absolute paths are not allowed; use a path relative to the workspace root")
        parts = path.split("/")
        if ".." in parts:
            raise ToolError("'..' is not allowed in paths")
        if any(p in VCS_DIRS for p in parts):
            raise ToolError("version-control directories are not accessible")
        try:
            os.fsencode(path)
        except UnicodeError:
            raise ToolError("path is not valid text") from None
        real = os.path.realpath(os.path.join(self._root_str, path or "."))
        rel = self._rel(real)
        if rel is None:
            raise ToolError(f"path leaves the workspace: {path}")
        # A symlink inside the workspace may still lead into .git.
        if rel != "." and any(p in VCS_DIRS for p in rel.split("/")):
            raise ToolError("version-control directories are not accessible")
        return Path(real)

    def _rel(self, real: str) -> str | None:
        """Workspace-relative POSIX path of a real path, or None when it is outside."""
        if real == self._root_str:
            return "."
        try:
            if os.path.commonpath([self._root_str, real]) != self._root_str:
                return None
        except ValueError:
            return None
        return Path(os.path.relpath(real, self._root_str)).as_posix()

    def _lstat(self, real: Path, shown: str) -> os.stat_result:
        try:
            return os.lstat(real)
        except FileNotFoundError:
            raise ToolError(f"no such file or directory: {shown}") from None
        except OSError as e:
            raise ToolError(f"cannot access {shown}: {e.strerror}") from None

    def _check_file(self, st: os.stat_result, shown: str) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"is a directory: {shown}")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"not a regular file: {shown}")
        # A second name for a file can live outside the workspace; the link count can't tell which.
        if st.st_nlink > 1:
            raise ToolError(f"hard-linked file refused: {shown}")

    def _read(self, real: os.PathLike[str] | str, st: os.stat_result, shown: str) -> bytes:
        """Read at most max_file_bytes of a file already vetted by lstat; never blocks or follows links."""
        try:
            fd = os.open(real, _OPEN_FLAGS)
        except OSError as e:
            raise ToolError(f"cannot open {shown}: {e.strerror}") from None
        try:
            fst = os.fstat(fd)
            # The path may have been swapped between lstat and open.
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                raise ToolError(f"file changed while opening: {shown}")
            self._check_file(fst, shown)
            chunks, left = [], self.limits.max_file_bytes
            # One read for a file that fits (asking one byte more than its size tells its end).
            want = min(left, fst.st_size + 1) if fst.st_size < (1 << 20) else (1 << 20)
            while left > 0:
                chunk = os.read(fd, min(left, want))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
                if len(chunk) < want and len(chunk) <= fst.st_size:
                    break  # a short read of a regular file is its end
                want = 1 << 20
            return b"".join(chunks)
        except OSError as e:
            raise ToolError(f"cannot read {shown}: {e.strerror}") from None
        finally:
            os.close(fd)

    def _walk(self, start: Path, scan: _Scan) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """Regular files under `start`, depth-first in name order; symlinks and VCS dirs skipped.

        Confinement is checked once per directory: below a directory inside the workspace, an entry
        that is not a symlink is inside too, so its relative path is the directory's plus its name.
        """
        stack: list[tuple[str, Iterator[os.DirEntry[str]]]] = []
        self._enter(str(start), stack)
        while stack:
            if time.monotonic() > scan.deadline:
                scan.timed_out = True
                return
            prefix, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            if entry.name in VCS_DIRS or entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in WALK_SKIPPED_DIRS and not entry.name.endswith(".egg-info"):
                    self._enter(entry.path, stack)
            elif entry.is_file(follow_symlinks=False):
                if scan.files_seen >= scan.max_files:
                    scan.hit_file_limit = True
                    return
                scan.files_seen += 1
                yield prefix + entry.name, entry

    def _enter(self, directory: str, stack: list[tuple[str, Iterator[os.DirEntry[str]]]]) -> None:
        rel = self._rel(os.path.realpath(directory))
        if rel is None:
            return
        stack.append(("" if rel == "." else rel + "/", iter(self._sorted_entries(directory))))

    @staticmethod
    def _sorted_entries(path: Path | str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(path) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError:
            return []

    def _cap(self, text: str) -> str:
        cap = self.limits.max_output_chars
        if len(text) <= cap:
            return text
        tail = f"{TRUNCATED_MARKER} output cut at {cap} characters; narrow the request"
        keep = max(0, cap - len(tail) - 1)
        cut = text.rfind("\n", 0, keep + 1)
        # Prefer a line boundary, unless that would throw away most of the budget.
        if cut < keep // 2:
            cut = keep
        return text[:cut] + "\n" + tail if keep > 0 else tail

    # ----------------------------------------------------------------- tools

    def grep(
        self,
        pattern: str,
        path: str = ".",
        glob: str | None = None,
        ignore_case: bool = False,
        max_results: int = 50,
    ) -> str:
        return self._grep(pattern, path, glob, ignore_case, max_results)[0]

    def _grep(
        self, pattern: str, path: str, glob: str | None, ignore_case: bool, max_results: int
    ) -> tuple[str, bool]:
        """The answer, and whether the walk stopped at the time limit (an incomplete answer)."""
        deadline = time.monotonic() + self.limits.timeout_s
        compiled = _compile(pattern, ignore_case)
        prefilter = _whole_file_prefilter(pattern, ignore_case)
        if not isinstance(max_results, int) or max_results < 1:
            raise ToolError("max_results must be a positive integer")
        glob_parts = None if glob is None else _glob_parts(glob)
        real = self.resolve(path)
        st = self._lstat(real, path)
        scan = _Scan(deadline, self.limits.max_files_scanned)
        if stat.S_ISDIR(st.st_mode):
            files: Iterator[tuple[str, os.DirEntry[str] | Path]] = self._walk(real, scan)
        else:
            self._check_file(st, path)
            files = iter([(self._rel(str(real)) or path, real)])

        out: list[str] = []
        more = False
        for rel, entry in files:
            if glob is not None and not _glob_filter(glob, glob_parts, rel):
                continue
            data = self._grep_read(entry, rel, scan)
            if data is None:
                continue
            text = data.decode("utf-8", errors="replace")
            if prefilter is not None and "\r" not in text:
                # One search over the whole file rules out most files; only a file that may match
                # is searched line by line (the answer is still exactly grep's line by line answer).
                if not _search(prefilter, text, deadline, self.limits.timeout_s):
                    continue
            for n, line in enumerate(_split_lines(text), 1):
                if _search(compiled, line, deadline, self.limits.timeout_s):
                    if len(out) == max_results:
                        more = True
                        break
                    out.append(f"{rel}:{n}: {_clip(line)}")
            if time.monotonic() > deadline:
                scan.timed_out = True
            if more or scan.timed_out:
                break

        if more:
            out.append(f"[more matches omitted; showing the first {max_results}]")
        elif not out:
            out.append("no matches")
        return self._cap("\n".join(out + scan.notes())), scan.timed_out

    def _grep_read(self, entry: os.DirEntry[str] | Path, rel: str, scan: _Scan) -> bytes | None:
        """Contents of a file worth searching, or None (with a note where the model should know)."""
        try:
            st = entry.stat(follow_symlinks=False) if isinstance(entry, os.DirEntry) else os.lstat(entry)
            self._check_file(st, rel)
        except OSError:
            return None
        except ToolError:
            scan.skip("hard-linked or special files", rel)
            return None
        if st.st_size > self.limits.max_file_bytes:
            scan.skip(f"files larger than {self.limits.max_file_bytes} bytes", rel)
            return None
        try:
            data = self._read(entry, st, rel)
        except ToolError:
            scan.skip("unreadable files", rel)
            return None
        return None if b"\0" in data[:BINARY_SNIFF_BYTES] else data

    def read_file(self, path: str, start_line: int = 1, end_line: int | None = None) -> str:
        if not isinstance(start_line, int) or start_line < 1:
            raise ToolError("start_line must be an integer >= 1")
        if end_line is not None and (not isinstance(end_line, int) or end_line < start_line):
            raise ToolError("end_line must be an integer >= start_line")
        real = self.resolve(path)
        st = self._lstat(real, path)
        self._check_file(st, path)
        data = self._read(real, st, path)
        if b"\0" in data[:BINARY_SNIFF_BYTES]:
            raise ToolError(f"binary file: {path}")
        lines = _lines(data)
        partial = st.st_size > len(data)
        note = (
            f"[file is {st.st_size} bytes; only the first {len(data)} bytes were read]" if partial else None
        )
        if not lines:
            if start_line == 1:
                return "(empty file)"
            raise ToolError(f"start_line {start_line} is past the end of the file (0 lines)")
        if start_line > len(lines):
            raise ToolError(
                f"start_line {start_line} is past the end of the file ({len(lines)} lines"
                + (" read" if partial else "")
                + ")"
            )
        end = len(lines) if end_line is None else min(end_line, len(lines))
        out = [f"{n:>5}| {lines[n - 1]}" for n in range(start_line, end + 1)]
        if note:
            out.append(note)
        return self._cap("\n".join(out))

    def list_dir(self, path: str = ".") -> str:
        real = self.resolve(path)
        st = self._lstat(real, path)
        if not stat.S_ISDIR(st.st_mode):
            raise ToolError(f"not a directory: {path}")
        out = []
        for e in self._sorted_entries(real):
            if e.name in VCS_DIRS:
                continue
            if e.is_symlink():
                out.append(f"{e.name} -> (symlink)")
            elif e.is_dir(follow_symlinks=False):
                out.append(e.name + "/")
            elif e.is_file(follow_symlinks=False):
                out.append(e.name)
            else:
                out.append(f"{e.name} (special file)")
        return self._cap("\n".join(out) if out else "(empty directory)")

    def find_files(self, pattern: str) -> str:
        return self._find_files(pattern)[0]

    def _find_files(self, pattern: str) -> tuple[str, bool]:
        parts = _glob_parts(pattern)
        scan = _Scan(time.monotonic() + self.limits.timeout_s, self.limits.max_files_scanned)
        found = [rel for rel, _ in self._walk(self.root, scan) if _glob_match(parts, rel.split("/"))]
        out = found[:MAX_FIND_RESULTS]
        if len(found) > MAX_FIND_RESULTS:
            out.append(f"[{len(found) - MAX_FIND_RESULTS} more files omitted; narrow the pattern]")
        if not found:
            out.append("no files found")
        return self._cap("\n".join(out + scan.notes())), scan.timed_out

    def answer(self, name: str, arguments: dict[str, Any]) -> tuple[ToolOutcome, str]:
        """Run built-in tool `name` and say how it ended (see ToolOutcome in shared/records.py).

        A walk cut short by the time limit is not the tool's answer but the machine's: its outcome
        is `infra_error`, so it is retried instead of being shown to the teacher.
        """
        timed_out = False
        try:
            if name == "grep":
                text, timed_out = self._grep(**_grep_arguments(arguments))
            elif name == "find_files":
                text, timed_out = self._find_files(**arguments)
            elif name == "read_file":
                text = self.read_file(**arguments)
            elif name == "list_dir":
                text = self.list_dir(**arguments)
            else:
                raise ToolError(f"unknown tool {name!r}")
        except ToolError as e:
            return "tool_error", self._cap(f"error: {e}")
        except MemoryError:
            return "infra_error", "error: out of memory"
        except Exception as e:  # noqa: BLE001 - last line of defence: a tool call must never crash the agent run
            return "tool_error", self._cap(f"error: {type(e).__name__}: {e}")
        if timed_out:
            return "infra_error", text
        if text.split("\n", 1)[0] in NOTHING_FOUND:
            return "tool_error", text
        return "ok", text


# --------------------------------------------------------------------- helpers


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


def _lines(data: bytes) -> list[str]:
    """Split on \\n only, so grep line numbers and read_file line numbers always agree."""
    return _split_lines(data.decode("utf-8", errors="replace"))


def _split_lines(text: str) -> list[str]:
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" not in text:
        return lines
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _search(compiled: regex.Pattern[str], text: str, deadline: float, limit_s: float) -> bool:
    left = deadline - time.monotonic()
    if left <= 0:
        return False
    try:
        return compiled.search(text, timeout=left) is not None
    except TimeoutError:
        raise ToolError(f"pattern timed out (limit {limit_s:g}s)") from None


# Constructs whose match depends on text outside the line (\A, \Z, \G, lookarounds, inline flags):
# a pattern holding one is searched line by line only.
_CONTEXT_SENSITIVE = regex.compile(r"\\[AZzG]|\(\?")


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


def _grep_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    defaults = {"path": ".", "glob": None, "ignore_case": False, "max_results": 50}
    return {**defaults, **arguments}


def _clip(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " ..."


def _glob_filter(glob: str, parts: list[str] | None, rel: str) -> bool:
    base = rel.rsplit("/", 1)[-1]
    return (
        fnmatch.fnmatchcase(rel, glob)
        or fnmatch.fnmatchcase(base, glob)
        or _glob_match(parts or [], rel.split("/"))
    )


def _glob_parts(pattern: str) -> list[str]:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ToolError("glob must be a non-empty string")
    if "\0" in pattern or len(pattern) > MAX_PATTERN_CHARS:
        raise ToolError("invalid glob")
    if pattern.startswith(("/", "~")):
        raise ToolError("glob must be relative to the workspace root")
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ToolError("'..' is not allowed in globs")
    # Like `find -name`: a bare name pattern matches at any depth.
    return parts if "/" in pattern.strip("/") else ["**", *parts]


def _glob_match(pat: list[str], parts: list[str]) -> bool:
    """Segment-wise glob match where `**` spans zero or more directories (NFA, no backtracking)."""

    def close(states: set[int]) -> set[int]:
        todo, seen = list(states), set()
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                if i < len(pat) and pat[i] == "**":
                    todo.append(i + 1)
        return seen

    states = close({0})
    for seg in parts:
        nxt = set()
        for i in states:
            if i < len(pat):
                if pat[i] == "**":
                    nxt.add(i)
                elif fnmatch.fnmatchcase(seg, pat[i]):
                    nxt.add(i + 1)
        states = close(nxt)
        if not states:
            return False
    return len(pat) in states


# ----------------------------------------------------------------- tool wrappers


def builtin_tools(ws: Workspace) -> list[Callable[..., str]]:
    """The read-only tools bound to `ws`, as plain functions pydantic-ai can turn into tool schemas.

    Their signatures and docstrings are the schemas the teacher sees; a worker runs the same tools
    in its tool processes (worker/tool_pool.py) through `Workspace.answer`.
    """

    def grep(
        pattern: str,
        path: str = ".",
        glob: str | None = None,
        ignore_case: bool = False,
        max_results: int = 50,
    ) -> str:
        """Search file contents for a regular expression, line by line (like `grep -rn`).

        Binary files, symlinks and version-control directories are skipped.

        Args:
            pattern: Regular expression (Python `regex` syntax) matched against each line.
            path: File or directory to search, relative to the workspace root.
            glob: Only search files whose name or relative path matches this glob, e.g. `*.py` or `src/**/*.ts`.
            ignore_case: Match case-insensitively.
            max_results: Maximum number of matching lines to return.

        Returns:
            One `path:line_number: line` per match, or `no matches`.
        """
        return ws.answer("grep", {"pattern": pattern, "path": path, "glob": glob, "ignore_case": ignore_case,
                                  "max_results": max_results})[1]

    def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
        """Read a text file, returning its lines prefixed with line numbers.

        Args:
            path: File to read, relative to the workspace root.
            start_line: First line to return (1-based).
            end_line: Last line to return, inclusive; omit to read to the end of the file.

        Returns:
            The numbered lines, one per line as `number| text`.
        """
        return ws.answer("read_file", {"path": path, "start_line": start_line, "end_line": end_line})[1]

    def list_dir(path: str = ".") -> str:
        """List the entries of a directory.

        Args:
            path: Directory to list, relative to the workspace root.

        Returns:
            One entry per line, sorted; directories end with `/`, symlinks show as `name -> (symlink)`.
        """
        return ws.answer("list_dir", {"path": path})[1]

    def find_files(pattern: str) -> str:
        """Find files by name with a glob pattern.

        Args:
            pattern: Glob relative to the workspace root; `**` matches any number of directories
                (e.g. `**/*.py`, `src/*.ts`). A pattern without `/` matches file names at any depth.

        Returns:
            Matching file paths relative to the workspace root, one per line, sorted.
        """
        return ws.answer("find_files", {"pattern": pattern})[1]

    return [grep, read_file, list_dir, find_files]


def call_custom_tool(function: Callable[..., Any], arguments: dict[str, Any]) -> tuple[ToolOutcome, str]:
    """A user's tool that raises answers with the error, as the built-in tools do."""
    try:
        return "ok", str(function(**arguments))
    except Exception as error:  # noqa: BLE001 - any tool failure is the tool's answer
        return "tool_error", f"error: {type(error).__name__}: {error}"


def load_custom_tool(spec: str) -> Callable[..., str]:
    """Import a user tool given as "package.module:function" (the function may be a dotted attribute)."""
    module_name, sep, attr = spec.partition(":") if isinstance(spec, str) else ("", "", "")
    if not sep or not module_name or not attr:
        raise ToolError(f"custom tool must look like 'package.module:function', got {spec!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as e:  # import runs arbitrary module code; any failure means "can't load"
        raise ToolError(f"cannot import module {module_name!r} for tool {spec!r}: {e}") from e
    for name in attr.split("."):
        try:
            obj = getattr(obj, name)
        except AttributeError:
            raise ToolError(f"module {module_name!r} has no attribute {attr!r} (tool {spec!r})") from None
    if not callable(obj):
        raise ToolError(f"custom tool {spec!r} is not callable")
    return obj
