"""What the teacher is offered: each built-in tool's signature and docstring, as pydantic-ai reads them.

The functions here are never run: their signatures and docstrings are the schemas (pydantic-ai
turns them into JSON schemas); the tool core (worker/toolcore.py) runs the real tools in a tool
process. Their names are the config's `BuiltinTool` names, listed once in shared/settings.py.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from distill.shared.settings import BUILTIN_TOOLS

if TYPE_CHECKING:  # tool processes import the core, and with it this module: pydantic-ai stays out of them
    from pydantic_ai import Tool


def grep(pattern: str, path: str = ".", glob: str | None = None, ignore_case: bool = False,
         max_results: int = 50) -> str:
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
    raise NotImplementedError("a schema: the tool core runs grep")


def read_file(path: str, start_line: int = 1, end_line: int | None = None) -> str:
    """Read a text file, returning its lines prefixed with line numbers.

    Args:
        path: File to read, relative to the workspace root.
        start_line: First line to return (1-based).
        end_line: Last line to return, inclusive; omit to read to the end of the file.

    Returns:
        The numbered lines, one per line as `number| text`.
    """
    raise NotImplementedError("a schema: the tool core runs read_file")


def list_dir(path: str = ".") -> str:
    """List the entries of a directory.

    Args:
        path: Directory to list, relative to the workspace root.

    Returns:
        One entry per line, sorted; directories end with `/`, symlinks show as `name -> (symlink)`.
    """
    raise NotImplementedError("a schema: the tool core runs list_dir")


def find_files(pattern: str) -> str:
    """Find files by name with a glob pattern.

    Args:
        pattern: Glob relative to the workspace root; `**` matches any number of directories
            (e.g. `**/*.py`, `src/*.ts`). A pattern without `/` matches file names at any depth.

    Returns:
        Matching file paths relative to the workspace root, one per line, sorted.
    """
    raise NotImplementedError("a schema: the tool core runs find_files")


BUILTIN_SCHEMAS: dict[str, Callable[..., str]] = {f.__name__: f for f in (grep, read_file, list_dir, find_files)}
assert tuple(BUILTIN_SCHEMAS) == BUILTIN_TOOLS, "the schemas must follow shared/settings.py's BuiltinTool"


def briefly(function: Callable[..., str]) -> Callable[..., str]:
    """The same schema, described by the first paragraph of its docstring only."""

    @functools.wraps(function)
    def brief(*args: Any, **kwargs: Any) -> str:
        return function(*args, **kwargs)

    brief.__doc__ = (function.__doc__ or "").strip().split("\n\n")[0]
    return brief


def openai_tool_schemas(tools: Sequence[Tool[Any]]) -> list[dict[str, Any]]:
    """Tool definitions are not in pydantic-ai's history: the record keeps what was offered."""
    return [
        {
            "type": "function",
            "function": {
                "name": tool.tool_def.name,
                "description": tool.tool_def.description or "",
                "parameters": tool.tool_def.parameters_json_schema,
            },
        }
        for tool in tools
    ]
