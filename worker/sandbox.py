"""The sandbox every built-in tool reads through: one workspace folder and nothing outside it.

Everything here treats its arguments as hostile: the model chooses the paths and patterns.
Nothing may be read from outside the workspace, nothing may block (FIFOs, device files), and
every walk stops at its time limit and file budget with a note saying why.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from distill.shared.settings import GenerationLimits


@dataclass(frozen=True)
class ToolLimits:
    timeout_s: float = 5.0
    max_output_chars: int = 16_000
    max_file_bytes: int = 2_000_000
    max_files_scanned: int = 5_000

    @classmethod
    def of(cls, limits: GenerationLimits) -> ToolLimits:
        """The tool limits a run's GenerationLimits set; every path that runs tools takes them from here."""
        return cls(timeout_s=limits.tool_timeout_s, max_output_chars=limits.tool_max_output_chars)


class ToolError(Exception):
    """A failure the model should see as the tool's answer ("error: ...")."""


TRUNCATED_MARKER = "[truncated]"

VCS_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "_darcs", "CVS", ".jj", ".fossil"})
# Walks (grep, find_files) skip these folders unless the call starts inside one: environments and
# caches hold thousands of files that would drown the answer and the time limit.
WALK_SKIPPED_DIRS = frozenset({".venv", "venv", "node_modules", "__pycache__", ".mypy_cache",
                               ".pytest_cache", ".hypothesis", ".ruff_cache", ".tox", ".nox", ".eggs"})
BINARY_SNIFF_BYTES = 8192

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


@dataclass
class Scan:
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

    def scan(self) -> Scan:
        """A fresh walk budget: the time limit and file count of one tool call."""
        return Scan(time.monotonic() + self.limits.timeout_s, self.limits.max_files_scanned)

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
        rel = self.rel(real)
        if rel is None:
            raise ToolError(f"path leaves the workspace: {path}")
        # A symlink inside the workspace may still lead into .git.
        if rel != "." and any(p in VCS_DIRS for p in rel.split("/")):
            raise ToolError("version-control directories are not accessible")
        return Path(real)

    def rel(self, real: str) -> str | None:
        """Workspace-relative POSIX path of a real path, or None when it is outside."""
        if real == self._root_str:
            return "."
        try:
            if os.path.commonpath([self._root_str, real]) != self._root_str:
                return None
        except ValueError:
            return None
        return Path(os.path.relpath(real, self._root_str)).as_posix()

    def lstat(self, real: Path, shown: str) -> os.stat_result:
        try:
            return os.lstat(real)
        except FileNotFoundError:
            raise ToolError(f"no such file or directory: {shown}") from None
        except OSError as e:
            raise ToolError(f"cannot access {shown}: {e.strerror}") from None

    @staticmethod
    def check_file(st: os.stat_result, shown: str) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise ToolError(f"is a directory: {shown}")
        if not stat.S_ISREG(st.st_mode):
            raise ToolError(f"not a regular file: {shown}")
        # A second name for a file can live outside the workspace; the link count can't tell which.
        if st.st_nlink > 1:
            raise ToolError(f"hard-linked file refused: {shown}")

    def read(self, real: Path | str | os.DirEntry[str], st: os.stat_result, shown: str) -> bytes:
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
            self.check_file(fst, shown)
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

    def walk(self, start: Path, scan: Scan) -> Iterator[tuple[str, os.DirEntry[str]]]:
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
        rel = self.rel(os.path.realpath(directory))
        if rel is None:
            return
        stack.append(("" if rel == "." else rel + "/", iter(sorted_entries(directory))))

    def cap(self, text: str) -> str:
        """The answer cut to the output cap, at a line boundary where that keeps most of it."""
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


def sorted_entries(path: Path | str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def split_lines(text: str) -> list[str]:
    """Split on \\n only (a trailing \\r cut), so grep and read_file number lines alike."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" not in text:
        return lines
    return [ln.removesuffix("\r") for ln in lines]
