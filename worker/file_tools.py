"""read_file and list_dir: one file's numbered lines, one folder's entries."""

from __future__ import annotations

import stat

from distill.worker.sandbox import BINARY_SNIFF_BYTES, VCS_DIRS, ToolError, Workspace, sorted_entries, split_lines


def read_file(ws: Workspace, path: str, start_line: int = 1, end_line: int | None = None) -> str:
    if not isinstance(start_line, int) or start_line < 1:
        raise ToolError("start_line must be an integer >= 1")
    if end_line is not None and (not isinstance(end_line, int) or end_line < start_line):
        raise ToolError("end_line must be an integer >= start_line")
    real = ws.resolve(path)
    st = ws.lstat(real, path)
    ws.check_file(st, path)
    data = ws.read(real, st, path)
    if b"\0" in data[:BINARY_SNIFF_BYTES]:
        raise ToolError(f"binary file: {path}")
    lines = split_lines(data.decode("utf-8", errors="replace"))
    partial = st.st_size > len(data)
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
    if partial:
        out.append(f"[file is {st.st_size} bytes; only the first {len(data)} bytes were read]")
    return "\n".join(out)


def list_dir(ws: Workspace, path: str = ".") -> str:
    real = ws.resolve(path)
    st = ws.lstat(real, path)
    if not stat.S_ISDIR(st.st_mode):
        raise ToolError(f"not a directory: {path}")
    out = []
    for e in sorted_entries(real):
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
    return "\n".join(out) if out else "(empty directory)"
