"""Globs as the tools read them (`**` spans folders; a bare name matches at any depth), and find_files."""

from __future__ import annotations

import fnmatch

from distill.worker.sandbox import ToolError, Workspace

MAX_GLOB_CHARS = 1000
MAX_FIND_RESULTS = 200
NO_FILES = "no files found"


def find_files(ws: Workspace, pattern: str) -> tuple[str, bool]:
    """The answer, and whether the walk stopped at the time limit (an incomplete answer)."""
    parts = glob_parts(pattern)
    scan = ws.scan()
    found = [rel for rel, _ in ws.walk(ws.root, scan) if glob_match(parts, rel.split("/"))]
    out = found[:MAX_FIND_RESULTS]
    if len(found) > MAX_FIND_RESULTS:
        out.append(f"[{len(found) - MAX_FIND_RESULTS} more files omitted; narrow the pattern]")
    if not found:
        out.append(NO_FILES)
    return "\n".join(out + scan.notes()), scan.timed_out


def glob_filter(glob: str, parts: list[str] | None, rel: str) -> bool:
    """Whether grep's `glob` takes the file at `rel` (its path, its name, or segment-wise)."""
    base = rel.rsplit("/", 1)[-1]
    return (
        fnmatch.fnmatchcase(rel, glob)
        or fnmatch.fnmatchcase(base, glob)
        or glob_match(parts or [], rel.split("/"))
    )


def glob_parts(pattern: str) -> list[str]:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ToolError("glob must be a non-empty string")
    if "\0" in pattern or len(pattern) > MAX_GLOB_CHARS:
        raise ToolError("invalid glob")
    if pattern.startswith(("/", "~")):
        raise ToolError("glob must be relative to the workspace root")
    parts = [p for p in pattern.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ToolError("'..' is not allowed in globs")
    # Like `find -name`: a bare name pattern matches at any depth.
    return parts if "/" in pattern.strip("/") else ["**", *parts]


def glob_match(pat: list[str], parts: list[str]) -> bool:
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
