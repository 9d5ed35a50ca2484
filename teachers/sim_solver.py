"""A scripted agent for the synthesized code questions (coordinator/synth.py), behind the sim teacher.

`distill sim-teacher --script tasks` and `distill demo` use it as the teacher: for "where is X
defined?" it calls grep with a pattern for `def X` / `class X`, reads the result from the
conversation it was sent, and answers naming the file it found. It knows no answer except through
a tool result: everything it says comes from the tool messages in the request, so a conversation
it produces is what a competent agent would do with the real tools. It is a script, not a model:
it recognises the question kinds by their wording and the names by their backticks.

The chain kinds take two calls, the second built from the first's result: the base class's name
read off the `class` line grep showed, the file grep found `def f` in, the line it is on.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from distill.coordinator.synth import (
    DOC_WINDOW,
    definition_pattern,
    docstring_first_line,
    function_params,
    import_pattern,
    imported_modules,
    module_name,
)

QUOTED = re.compile(r"`([^`]+)`")
GREP_HIT = re.compile(r"^(?P<path>[^\s:][^:]*):(?P<line>\d+): (?P<text>.*)$")
READ_LINE = re.compile(r"^\s*(?P<line>\d+)\| ?(?P<text>.*)$")
# Lines read after a `def` to find the end of a signature that spans several.
SIGNATURE_LINES = 25
TOP_LEVEL_DEF = re.compile(r"^(?:async\s+def|def)\s+([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Question:
    kind: str  # defined | method | importers | params | base | siblings | docstring
    name: str
    owner: str | None = None  # the class, for a method


@dataclass(frozen=True)
class GrepHit:
    path: str
    line: int
    text: str


Call = tuple[str, dict[str, Any]]
Action = Call | str  # a tool call to make, or the final answer


def parse_question(prompt: str) -> Question | None:
    """The question's kind and names, or None when it is not one of the synthesized kinds."""
    quoted = QUOTED.findall(prompt)
    if not quoted:
        return None
    words = QUOTED.sub(" ", prompt).lower()  # "LoraParameters" is a name, not a question about parameters
    # The chain kinds first: their wordings also say "defined".
    if "docstring" in words:
        return Question("docstring", quoted[0])
    if "base class" in words:
        return Question("base", quoted[0])
    if "top-level functions" in words:
        return Question("siblings", quoted[0])
    if "import" in words:
        return Question("importers", quoted[0])
    if "parameter" in words:
        return Question("params", quoted[0])
    if "method" in words:
        if "." in quoted[0]:
            owner, _, method = quoted[0].rpartition(".")
            return Question("method", method, owner)
        method = re.search(r"method `([^`]+)`", prompt)
        owner = next((q for q in quoted if method is None or q != method.group(1)), None)
        if method is None or owner is None:
            return None
        return Question("method", method.group(1), owner)
    if "defin" in words or "declared" in words or "where" in words:
        return Question("defined", quoted[0])
    return None


def next_message(messages: list[dict[str, Any]], offered: set[str]) -> dict[str, Any] | None:
    """The next assistant message (a tool call or the answer), or None for a question it can't handle."""
    prompt = next((str(m.get("content") or "") for m in messages if m.get("role") == "user"), "")
    question = parse_question(prompt)
    if question is None or "grep" not in offered:
        return None
    results = [str(m.get("content") or "") for m in messages if m.get("role") == "tool"]
    action = SOLVERS[question.kind](question, results, offered)
    if isinstance(action, str):
        return {"role": "assistant", "content": action}
    name, arguments = action
    call = {"id": f"call_{len(results)}_{len(messages)}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments)}}
    return {"role": "assistant", "content": None, "tool_calls": [call]}


def grep_hits(result: str) -> list[GrepHit]:
    return [GrepHit(m["path"], int(m["line"]), m["text"]) for m in map(GREP_HIT.match, result.splitlines()) if m]


def _located(hit: GrepHit) -> str:
    return f"{hit.path}, line {hit.line}"


# --- one script per kind of question ------------------------------------------------------------


def _defined(question: Question, results: list[str], offered: set[str]) -> Action:
    if not results:
        return "grep", {"pattern": definition_pattern(question.name), "glob": "*.py"}
    hits = grep_hits(results[0])
    if not hits:
        return f"I found no definition of `{question.name}` in this workspace."
    if len(hits) == 1:
        return f"`{question.name}` is defined in {_located(hits[0])}."
    return f"`{question.name}` is defined in several places: " + "; ".join(map(_located, hits)) + "."


def _method(question: Question, results: list[str], offered: set[str]) -> Action:
    # A method lives where its class is defined: one grep, with the same pattern as "where is X defined?".
    owner, method = question.owner, question.name
    if not results:
        return "grep", {"pattern": definition_pattern(owner or ""), "glob": "*.py"}
    classes = grep_hits(results[0])
    if not classes:
        return f"I found no class `{owner}` in this workspace."
    return f"`{owner}.{method}` is defined in {classes[0].path}, in the class `{owner}` (line {classes[0].line})."


def _imports(hit: GrepHit, module: str) -> bool:
    """Whether the import statement on this line imports `module`, relative forms resolved against
    the file the hit is in (a `from .utils import` names a different module in every package)."""
    try:
        tree = ast.parse(hit.text.strip())
    except SyntaxError:  # the first line of a parenthesised import: only its absolute head can say
        return bool(re.match(rf"\s*from {re.escape(module)} import\b", hit.text))
    names = imported_modules(tree, module_name(hit.path), hit.path.endswith("__init__.py"))
    return any(name == module or ("." in name and module.endswith("." + name)) for name in names)


def _importers(question: Question, results: list[str], offered: set[str]) -> Action:
    if not results:
        return "grep", {"pattern": import_pattern(question.name), "glob": "*.py"}
    paths = list(dict.fromkeys(hit.path for hit in grep_hits(results[0]) if _imports(hit, question.name)))
    if not paths:
        return f"No file imports `{question.name}`."
    return f"`{question.name}` is imported by {len(paths)} file(s): " + ", ".join(paths) + "."


def _params(question: Question, results: list[str], offered: set[str]) -> Action:
    name = question.name
    if not results:
        return "grep", {"pattern": rf"^\s*(async def|def) {name}\(", "glob": "*.py"}
    hits = grep_hits(results[0])
    if not hits:
        return f"I found no function `{name}` in this workspace."
    hit = hits[0]
    params = signature_params([hit.text])
    if params is None and len(results) == 1 and "read_file" in offered:
        return "read_file", {"path": hit.path, "start_line": hit.line, "end_line": hit.line + SIGNATURE_LINES}
    if params is None and len(results) > 1:
        params = signature_params([m["text"] for m in map(READ_LINE.match, results[1].splitlines()) if m])
    if params is None:
        return f"`{name}` is defined in {_located(hit)}, but I could not read its whole signature."
    if not params:
        return f"`{name}` ({_located(hit)}) takes no parameters."
    return f"`{name}` ({_located(hit)}) takes {len(params)} parameter(s): " + ", ".join(f"`{p}`" for p in params) + "."


def _first_hit(name: str, results: list[str], pattern: str, what: str) -> Action | GrepHit:
    """A chain's first step: grep for the definition, or the first hit once the result is in."""
    if not results:
        return "grep", {"pattern": pattern, "glob": "*.py"}
    hits = grep_hits(results[0])
    return hits[0] if hits else f"I found no {what} `{name}` in this workspace."


def _base(question: Question, results: list[str], offered: set[str]) -> Action:
    name = question.name
    found_class = _first_hit(name, results, definition_pattern(name), "class")
    if not isinstance(found_class, GrepHit):
        return found_class
    bases = class_bases(found_class.text)
    if not bases:
        return f"The class `{name}` ({_located(found_class)}) names no base class on its `class` line."
    base = bases[0]
    if len(results) == 1:
        return "grep", {"pattern": definition_pattern(base), "glob": "*.py"}
    found = grep_hits(results[1])
    if not found:
        return f"The base class of `{name}` is `{base}`, which is not defined in this workspace."
    return f"The base class of `{name}` is `{base}`, defined in {_located(found[0])}."


def class_bases(line: str) -> list[str]:
    """The plain base names on a `class` line as grep shows it."""
    text = line.strip()
    for candidate in (text + "\n    pass", text):
        try:
            tree = ast.parse(candidate)
        except SyntaxError:
            continue
        node = tree.body[0] if tree.body else None
        if isinstance(node, ast.ClassDef):
            return [b.id for b in node.bases if isinstance(b, ast.Name)]
    return []


def _siblings(question: Question, results: list[str], offered: set[str]) -> Action:
    name = question.name
    hit = _first_hit(name, results, definition_pattern(name), "function")
    if not isinstance(hit, GrepHit):
        return hit
    path = hit.path
    if len(results) == 1:
        return "grep", {"pattern": r"^(async def|def) \w+", "path": path}
    defined = [m.group(1) for hit in grep_hits(results[1]) if (m := TOP_LEVEL_DEF.match(hit.text))]
    others = list(dict.fromkeys(n for n in defined if n != name))
    if not others:
        return f"{path} defines no other top-level function than `{name}`."
    return f"Besides `{name}`, {path} defines these top-level functions: " + ", ".join(f"`{n}`" for n in others) + "."


def _docstring(question: Question, results: list[str], offered: set[str]) -> Action:
    name = question.name
    hit = _first_hit(name, results, rf"^\s*(async def|def) {re.escape(name)}\(", "function")
    if not isinstance(hit, GrepHit):
        return hit
    if len(results) == 1:
        if "read_file" not in offered:
            return f"`{name}` is defined in {_located(hit)}; I cannot read its docstring without read_file."
        return "read_file", {"path": hit.path, "start_line": hit.line, "end_line": hit.line + DOC_WINDOW}
    first = docstring_first_line([m["text"] for m in map(READ_LINE.match, results[1].splitlines()) if m])
    if first is None:
        return f"`{name}` ({_located(hit)}) has no docstring that I could read."
    return f'The first line of the docstring of `{name}` ({_located(hit)}) is: "{first}"'


def signature_params(lines: list[str]) -> tuple[str, ...] | None:
    """Parameter names of the `def` that starts these source lines, or None if it doesn't end in them."""
    if not lines:
        return None
    # Inside the brackets indentation means nothing, so only the first line needs its indent removed.
    source = [lines[0].lstrip(), *lines[1:]]
    for end in range(1, len(source) + 1):
        text = "\n".join(source[:end])
        for candidate in (text, text + "\n    pass"):
            try:
                tree = ast.parse(candidate)
            except SyntaxError:
                continue
            node = tree.body[0] if tree.body else None
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                return function_params(node.args)
    return None


SOLVERS: dict[str, Callable[[Question, list[str], set[str]], Action]] = {
    "defined": _defined,
    "method": _method,
    "importers": _importers,
    "params": _params,
    "base": _base,
    "siblings": _siblings,
    "docstring": _docstring,
}
