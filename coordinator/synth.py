"""Questions with known answers, synthesized from a code base: `distill prompts synth`.

The answers come from the code itself, read with `ast` and the file tree, never from a model:
where a function or class is defined, which file defines a method of a class, which files import a
module, what a function's parameters are. Each prompt line carries its `expected` answer in the
prompts format's reference shape (a file path, {"all": [paths]} for an exact set of files, or
{"names": [...], "ordered": true} for parameters; shared/verdicts.py), so the same file starts a
run and grades the student afterwards.

Only unambiguous questions are asked, as the tools see the workspace: definitions are counted over
every Python file grep reaches (dot-folders included; a file `ast` cannot parse is scanned as
text), imports resolve only to workspace modules that the standard library or an installed
package does not shadow, parameters are asked only when every name is distinctive, and a question
whose answer a competent grep would not show in full (a tool cap) is dropped.

The split is by name: held-out questions ask about names that no training question mentions, so a
student can only answer them by using the tools, not by remembering.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import logging
import os
import random
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from distill.shared.errors import DistillError
from distill.worker.grep_engine import grep
from distill.worker.sandbox import TRUNCATED_MARKER, VCS_DIRS, WALK_SKIPPED_DIRS, ToolError, ToolLimits, Workspace

log = logging.getLogger(__name__)

Kind = Literal["defined", "method", "importers", "params", "base", "siblings", "docstring"]
KINDS: tuple[Kind, ...] = get_args(Kind)
# Chain kinds: the second call's arguments come from the first call's result.
CHAIN_KINDS: tuple[Kind, ...] = ("base", "siblings", "docstring")
# Tool calls a competent agent needs per kind (a long signature may cost params one read more).
MIN_CALLS: dict[str, int] = {"defined": 1, "method": 1, "importers": 1, "params": 1,
                             "base": 2, "siblings": 2, "docstring": 2}

# Names shorter than this match too much by accident ("run" is in "rerun"), in grep and in answers.
MIN_NAME_CHARS = 4
# "Which files import M?" only for modules a short answer can list in full.
MAX_IMPORTERS = 4
MAX_PARAMS = 6
MAX_SIBLINGS = 8
# Lines a docstring question's reader reads after the `def` line (teachers/sim_solver.py reads as many).
# Short on purpose: the read is most of a docstring conversation's tokens, and the first line of a
# docstring sits right under its signature, so the docstring need not end inside the window.
DOC_WINDOW = 6
MIN_DOC_CHARS = 12
MAX_DOC_CHARS = 160
# A docstring's opening quotes (a string prefix can only be r or u there).
DOC_OPENING = re.compile(r"^[rRuU]?(\"{3}|'{3}|\"|')")
SELF_NAMES = frozenset({"self", "cls"})
# Parameter names too common to be found only where they are meant: an answer holding "ok" or
# "arguments" may say nothing about parameters. A distinctive name has an underscore, a digit or a
# capital inside, or is long and not one of these.
COMMON_WORDS = frozenset({
    "args", "kwargs", "arguments", "argument", "value", "values", "name", "names", "path", "paths", "data", "text",
    "item", "items", "key", "keys", "options", "option", "config", "result", "results", "limit", "limits",
    "timeout", "source", "target", "message", "messages", "default", "count", "index", "line", "lines", "file",
    "files", "model", "report", "record", "records", "prompt", "prompts", "number", "string", "output", "input",
    "event", "events", "request", "response", "context", "settings", "client", "server", "state", "status",
    "error", "errors", "reason", "detail", "details", "callback", "handler", "function", "method", "module",
    "workspace", "answer", "question", "verdict", "expected", "tokenizer", "teacher", "student", "payload",
})
MIN_PARAM_CHARS = 5
# The marks a tool puts on an answer it cut short: a question whose answer hides behind one is dropped.
CAP_MARKERS = ("[more matches omitted", "[stopped after scanning", "[stopped at the time limit", TRUNCATED_MARKER)
DEFINITION_LINE = re.compile(r"^[ \t]*(?:async\s+def|def|class)\s+([A-Za-z_]\w*)", re.MULTILINE)


class SynthError(DistillError):
    """The workspace or the options cannot give a prompts file."""


@dataclass(frozen=True)
class Definition:
    """One `def` or `class` statement, at any depth."""

    name: str
    kind: Literal["function", "class"]
    path: str
    line: int
    top_level: bool
    # For functions: parameter names in order, without self/cls.
    params: tuple[str, ...] = ()
    # For methods: the class whose body holds the def.
    owner: str | None = None
    # The statement's column: a top-level def at column 0 is what `^def` finds.
    column: int = 0
    # For classes: the bases when every one is a plain name written on the `class` line, else None.
    bases: tuple[str, ...] | None = None
    # For functions: the docstring's first line, when a read of DOC_WINDOW lines after the `def` shows it.
    doc_first_line: str | None = None


@dataclass
class CodeFacts:
    """What the questions are made of: every definition, and who imports which module."""

    files: list[str] = field(default_factory=list)
    unparsable: list[str] = field(default_factory=list)
    definitions: list[Definition] = field(default_factory=list)
    # Workspace module (dotted) -> its file.
    modules: dict[str, str] = field(default_factory=dict)
    # Workspace module (dotted) -> files that import it.
    importers: dict[str, set[str]] = field(default_factory=dict)

    def by_name(self) -> dict[str, list[Definition]]:
        found: dict[str, list[Definition]] = defaultdict(list)
        for definition in self.definitions:
            found[definition.name].append(definition)
        return found


@dataclass(frozen=True)
class SynthTask:
    """One question, its reference answer, and the names it asks about (the split's unit)."""

    kind: Kind
    subject: str
    prompt: str
    expected: str | dict[str, Any]
    names: frozenset[str]

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.subject}"

    def line(self, split: Literal["train", "heldout"]) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "expected": self.expected,
                "metadata": {"kind": self.kind, "subject": self.subject, "split": split,
                             "min_calls": MIN_CALLS[self.kind]}}


@dataclass
class SynthReport:
    workspace: Path
    train_file: Path
    heldout_file: Path | None
    files_scanned: int
    unparsable: list[str]
    candidates: dict[str, int]
    train: dict[str, int]
    heldout: dict[str, int]
    # Training questions left out because they mention a held-out name.
    excluded_for_overlap: int
    # Kinds asked for that the code could not fill to an even share: kind -> why.
    shortfall: dict[str, str] = field(default_factory=dict)
    train_tasks: list[SynthTask] = field(default_factory=list, repr=False)
    heldout_tasks: list[SynthTask] = field(default_factory=list, repr=False)


# --- reading the code ---------------------------------------------------------------------------


def python_files(root: Path) -> list[str]:
    """Workspace-relative paths of the Python files the tools' grep also searches (dot-folders too), sorted."""
    limit = ToolLimits().max_file_bytes
    found: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in VCS_DIRS and d not in WALK_SKIPPED_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(folder) / name
            if name.endswith(".py") and not path.is_symlink() and path.stat().st_size <= limit:
                found.append(path.relative_to(root).as_posix())
    return found


def module_name(path: str) -> str:
    """`pkg/sub/mod.py` -> `pkg.sub.mod`; a package's `__init__.py` is the package."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_facts(root: Path) -> CodeFacts:
    """Parse every Python file of the workspace; files that don't parse are listed, not fatal."""
    root = Path(root)
    if not root.is_dir():
        raise SynthError(f"{root}: workspace folder not found")
    facts = CodeFacts(files=python_files(root))
    imported: dict[str, set[str]] = defaultdict(set)
    for path in facts.files:
        facts.modules[module_name(path)] = path
    for path in facts.files:
        source = (root / path).read_bytes()
        try:
            tree = ast.parse(source, filename=path)
        except (SyntaxError, ValueError, UnicodeDecodeError, RecursionError):
            # grep still finds its `def`s: they count against uniqueness, though no question is about them.
            facts.unparsable.append(path)
            facts.definitions.extend(_scanned_definitions(source.decode("utf-8", errors="replace"), path))
            continue
        facts.definitions.extend(_definitions(tree, path, source.decode("utf-8", errors="replace").splitlines()))
        for name in imported_modules(tree, module_name(path), path.endswith("__init__.py")):
            imported[name].add(path)
    facts.importers = _resolve_imports(imported, {m: p for m, p in facts.modules.items() if not shadowed(m, facts.modules)})
    return facts


def _scanned_definitions(text: str, path: str) -> Iterable[Definition]:
    for match in DEFINITION_LINE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        kind: Literal["function", "class"] = "class" if match.group().lstrip().startswith("class") else "function"
        yield Definition(match.group(1), kind, path, line, top_level=False)


def shadowed(module: str, modules: dict[str, str]) -> bool:
    """Whether `import module` would reach the standard library or an installed package instead of
    the workspace's file: a workspace `logging.py` is not what `import logging` imports. A package
    whose own source the workspace holds (its folder with an `__init__.py`) is the workspace's."""
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return True
    if modules.get(top, "").endswith("__init__.py"):
        return False
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _definitions(tree: ast.Module, path: str, lines: list[str]) -> Iterable[Definition]:
    def visit(node: ast.AST, top_level: bool, owner: str | None) -> Iterable[Definition]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield Definition(child.name, "class", path, child.lineno, top_level, owner=owner,
                                 column=child.col_offset, bases=_plain_bases(child))
                yield from visit(child, False, child.name)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield Definition(child.name, "function", path, child.lineno, top_level, function_params(child.args), owner,
                                 column=child.col_offset, doc_first_line=_doc_first_line(child, lines))
                yield from visit(child, False, None)
            else:
                yield from visit(child, top_level and isinstance(child, ast.If | ast.Try), owner)

    return visit(tree, True, None)


def _plain_bases(node: ast.ClassDef) -> tuple[str, ...] | None:
    """Base names as the `class` line shows them; None when one is dotted, a call, or on a later line."""
    if not all(isinstance(b, ast.Name) and b.lineno == node.lineno for b in node.bases):
        return None
    return tuple(b.id for b in node.bases if isinstance(b, ast.Name))


def _doc_first_line(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str | None:
    """The docstring's first line as `ast.get_docstring` cleans it, when a reader of the `def` line and
    DOC_WINDOW lines after it reads the same text there (docstring_first_line): an escape, or a line
    outside the window, would make the reference something no read shows."""
    doc = ast.get_docstring(node)
    if not doc or not doc.strip():
        return None
    line = doc.strip().splitlines()[0].strip()
    window = lines[node.lineno - 1:node.lineno + DOC_WINDOW]
    if docstring_first_line(window) != line:
        return None
    return line if MIN_DOC_CHARS <= len(line) <= MAX_DOC_CHARS else None


def docstring_first_line(lines: list[str]) -> str | None:
    """The first line of the docstring of the `def` that starts these source lines, read as text.

    The docstring need not end within the lines: its first line is the text after the opening quotes
    (or the next line's, when they stand alone). None when the signature does not end within the lines
    or no string follows it.
    """
    if not lines:
        return None
    indent = len(lines[0]) - len(lines[0].lstrip())
    source = [line[indent:] if line[:indent].isspace() or not indent else line for line in lines]
    for end in range(1, len(source) + 1):
        try:  # the signature ends where its lines parse with a body added
            tree = ast.parse("\n".join(source[:end]) + "\n    pass")
        except SyntaxError:
            continue
        if not (tree.body and isinstance(tree.body[0], ast.FunctionDef | ast.AsyncFunctionDef)):
            return None
        body = [line.strip() for line in source[end:] if line.strip()]
        opening = DOC_OPENING.match(body[0]) if body else None
        if opening is None:
            return None
        quote = opening.group(1)
        text = body[0][opening.end():]
        if not text.strip() and quote in ('"""', "'''") and len(body) > 1:
            text = body[1]  # the quotes stand alone; the text starts on the next line
        return text.split(quote)[0].strip() or None
    return None


def function_params(arguments: ast.arguments) -> tuple[str, ...]:
    """Parameter names in order (positional, *args, keyword-only, **kwargs), without self and cls."""
    named = [*arguments.posonlyargs, *arguments.args]
    every = [a.arg for a in named]
    if arguments.vararg:
        every.append(arguments.vararg.arg)
    every += [a.arg for a in arguments.kwonlyargs]
    if arguments.kwarg:
        every.append(arguments.kwarg.arg)
    return tuple(name for name in every if name not in SELF_NAMES)


def imported_modules(tree: ast.Module, module: str, is_package: bool) -> Iterable[str]:
    """Dotted names the code of `module` imports, relative imports resolved against its package."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, *([base] if base else [])])
            if base:
                yield base
            # `from pkg import mod` imports the module pkg.mod when there is one.
            yield from (f"{base}.{alias.name}" if base else alias.name for alias in node.names if alias.name != "*")


def _resolve_imports(imported: dict[str, set[str]], modules: dict[str, str]) -> dict[str, set[str]]:
    """Imported names -> workspace modules: exact, or the one module whose dotted name ends with it
    (a `src/` layout imports `pkg.mod` from the file `src/pkg/mod.py`)."""
    by_suffix: dict[str, list[str]] = defaultdict(list)
    for name in modules:
        parts = name.split(".")
        for start in range(len(parts)):
            by_suffix[".".join(parts[start:])].append(name)
    importers: dict[str, set[str]] = defaultdict(set)
    for name, files in imported.items():
        target = name if name in modules else (by_suffix[name][0] if len(by_suffix.get(name, [])) == 1 else None)
        if target is not None:
            importers[target] |= {f for f in files if f != modules[target]}
    return {name: files for name, files in importers.items() if files}


# --- the questions ------------------------------------------------------------------------------

PHRASINGS: dict[str, tuple[str, ...]] = {
    "defined-function": (
        "Where is the function `{name}` defined?",
        "Which file defines the function `{name}`?",
        "In which file is `{name}` defined?",
        "Find the definition of `{name}`: which file is it in?",
    ),
    "defined-class": (
        "Where is the class `{name}` defined?",
        "Which file defines the class `{name}`?",
        "In which file is the class `{name}` declared?",
        "Find the file that defines `{name}`.",
    ),
    # Always `Class.method` and the word "method": one name to split, whatever the wording.
    "method": (
        "Which file defines the method `{owner}.{method}`?",
        "Where is the method `{owner}.{method}` implemented?",
        "In which file is the method `{owner}.{method}` defined?",
    ),
    "importers": (
        "Which files import the module `{module}`?",
        "What imports the module `{module}`? Name the files.",
        "List every file that imports the module `{module}`.",
    ),
    # Chain kinds: each wording names what to find first and what to find from it.
    "base": (
        "Where is the base class of `{name}` defined?",
        "Which file defines the base class of the class `{name}`?",
    ),
    "siblings": (
        "Which other top-level functions does the file that defines `{name}` contain?",
        "Name the other top-level functions in the file where `{name}` is defined.",
    ),
    "docstring": (
        "What is the first line of the docstring of `{name}`?",
        "Quote the first line of the docstring of the function `{name}`.",
    ),
    "params": (
        "What are the parameters of the function `{name}`?",
        "Which parameters does the function `{name}` take?",
        "List the parameters of `{name}`.",
    ),
}


def candidate_tasks(facts: CodeFacts, kinds: Sequence[Kind], rng: random.Random) -> dict[Kind, list[SynthTask]]:
    """Every question each kind can ask about this code, with an unambiguous reference answer."""
    names = facts.by_name()
    # A name defined once in the whole tree, at the top of a module: "where is it" has one answer.
    unique = {n: d[0] for n, d in names.items() if len(d) == 1 and _usable_name(n)}
    makers = {"defined": _defined_tasks, "method": _method_tasks, "importers": _importer_tasks, "params": _param_tasks,
              "base": _base_tasks, "siblings": _sibling_tasks, "docstring": _docstring_tasks}
    return {kind: makers[kind](facts, names, unique, rng) for kind in kinds}


def _usable_name(name: str) -> bool:
    return len(name) >= MIN_NAME_CHARS and not (name.startswith("__") and name.endswith("__"))


def _pick(rng: random.Random, key: str, **values: str) -> str:
    return rng.choice(PHRASINGS[key]).format(**values)


def _defined_tasks(facts: CodeFacts, names: dict[str, list[Definition]], unique: dict[str, Definition],
                   rng: random.Random) -> list[SynthTask]:
    return [
        SynthTask("defined", name, _pick(rng, f"defined-{d.kind}", name=name), d.path, frozenset({name}))
        for name, d in sorted(unique.items()) if d.top_level
    ]


def _method_tasks(facts: CodeFacts, names: dict[str, list[Definition]], unique: dict[str, Definition],
                  rng: random.Random) -> list[SynthTask]:
    tasks = []
    for owner, cls in sorted(unique.items()):
        if cls.kind != "class":
            continue
        methods = sorted({d.name for d in facts.definitions
                          if d.owner == owner and d.path == cls.path and d.kind == "function" and _usable_name(d.name)})
        if not methods:
            continue
        method = rng.choice(methods)
        tasks.append(SynthTask("method", f"{owner}.{method}", _pick(rng, "method", owner=owner, method=method),
                               cls.path, frozenset({owner, method})))
    return tasks


def _importer_tasks(facts: CodeFacts, names: dict[str, list[Definition]], unique: dict[str, Definition],
                    rng: random.Random) -> list[SynthTask]:
    tasks = []
    for module, files in sorted(facts.importers.items()):
        if facts.modules[module].endswith("__init__.py") or not 1 <= len(files) <= MAX_IMPORTERS:
            continue
        paths = sorted(files)
        expected: str | dict[str, Any] = paths[0] if len(paths) == 1 else {"files": paths}
        last = module.rpartition(".")[2]
        tasks.append(SynthTask("importers", module, _pick(rng, "importers", module=module), expected,
                               frozenset({module, last})))
    return tasks


def _param_tasks(facts: CodeFacts, names: dict[str, list[Definition]], unique: dict[str, Definition],
                 rng: random.Random) -> list[SynthTask]:
    tasks = []
    for name, d in sorted(unique.items()):
        if d.kind != "function" or not d.top_level or not 1 <= len(d.params) <= MAX_PARAMS:
            continue
        if not all(distinctive(p) and p != name for p in d.params):
            continue
        tasks.append(SynthTask("params", name, _pick(rng, "params", name=name), params_reference(d.params),
                               frozenset({name})))
    return tasks


def _base_tasks(facts: CodeFacts, names: dict[str, list[Definition]], unique: dict[str, Definition],
                rng: random.Random) -> list[SynthTask]:
    """A class with one base, itself defined once in another file: find the class, read its base off
    the `class` line, find the base."""
    tasks = []
    for name, d in sorted(unique.items()):
        if d.kind != "class" or not d.top_level or d.bases is None or len(d.bases) != 1:
            continue
        base = unique.get(d.bases[0])
        if base is None or base.kind != "class" or not base.top_level or base.path == d.path:
            continue
        tasks.append(SynthTask("base", name, _pick(rng, "base", name=name), base.path, frozenset({name, base.name})))
    return tasks


def _sibling_tasks(facts: CodeFacts, names: dict[str, list[Definition]], unique: dict[str, Definition],
                   rng: random.Random) -> list[SynthTask]:
    """The other top-level functions of the file defining `f`: an exact set of names, asked only
    where every top-level function sits at column 0 (what `^def` shows) and every name is distinctive."""
    by_file: dict[str, list[Definition]] = defaultdict(list)
    for d in facts.definitions:
        if d.kind == "function" and d.top_level:
            by_file[d.path].append(d)
    tasks = []
    for name, d in sorted(unique.items()):
        if d.kind != "function" or not d.top_level or d.column != 0:
            continue
        defs = by_file[d.path]
        others = sorted({o.name for o in defs if o.name != name})
        if any(o.column != 0 for o in defs) or not 1 <= len(others) <= MAX_SIBLINGS:
            continue
        if not all(_usable_name(o) and distinctive(o) for o in others):
            continue
        tasks.append(SynthTask("siblings", name, _pick(rng, "siblings", name=name), {"names": others, "ordered": False},
                               frozenset({name})))
    return tasks


def _docstring_tasks(facts: CodeFacts, names: dict[str, list[Definition]], unique: dict[str, Definition],
                     rng: random.Random) -> list[SynthTask]:
    """The first line of a function's docstring, verbatim: find the function, then read its lines."""
    return [
        SynthTask("docstring", name, _pick(rng, "docstring", name=name), {"quote": d.doc_first_line}, frozenset({name}))
        for name, d in sorted(unique.items())
        if d.kind == "function" and d.top_level and d.doc_first_line is not None
    ]


def distinctive(name: str) -> bool:
    """A parameter name an answer can hold only on purpose (see COMMON_WORDS)."""
    marked = "_" in name.strip("_") or any(c.isdigit() for c in name) or any(c.isupper() for c in name[1:])
    return marked or (len(name) >= MIN_PARAM_CHARS and name.casefold() not in COMMON_WORDS)


def params_reference(params: Sequence[str]) -> dict[str, Any]:
    """The exact ordered list of parameter names, each a whole word ("path" is not "paths")."""
    return {"names": list(params), "ordered": True}


def import_pattern(module: str) -> str:
    """Every import line that names the module's last part (`import M`, `from M import`,
    `from PARENT import LAST`, `from .LAST import`): the grep a competent agent runs."""
    return rf"^\s*(from|import) .*\b{re.escape(module.rpartition('.')[2])}\b"


def definition_pattern(name: str) -> str:
    return rf"^\s*(async def|def|class) {re.escape(name)}\b"


def shown_in_full(workspace: Workspace, pattern: str, paths: Iterable[str]) -> bool:
    """Whether grep (the tools' own, with their caps) shows every one of `paths` in an uncut answer."""
    try:
        answer, stopped = grep(workspace, pattern, glob="*.py")
    except ToolError:
        return False
    if stopped:  # a walk cut short by the time limit shows nothing in full
        return False
    hits = {line.partition(":")[0] for line in answer.splitlines()}
    return not any(marker in answer for marker in CAP_MARKERS) and all(path in hits for path in paths)


def within_tool_caps(root: Path, facts: CodeFacts, candidates: dict[Kind, list[SynthTask]]) -> dict[Kind, list[SynthTask]]:
    """Candidates without the questions whose answer lies past a tool cap. Import lines are many, so
    importers questions are always checked; definitions only when the tree is larger than a walk."""
    workspace = Workspace(root)
    large = len(facts.files) >= workspace.limits.max_files_scanned
    kept: dict[Kind, list[SynthTask]] = {}
    for kind, tasks in candidates.items():
        kept[kind] = []
        for task in tasks:
            if kind == "importers":
                expected = task.expected
                paths = [expected] if isinstance(expected, str) else list(expected["files"])
                visible = shown_in_full(workspace, import_pattern(task.subject), paths)
            elif large and kind in ("defined", "method"):
                name = task.subject.partition(".")[0]
                visible = shown_in_full(workspace, definition_pattern(name), [str(task.expected)])
            elif large and kind in CHAIN_KINDS:
                first = facts.by_name()[task.subject][0]
                visible = shown_in_full(workspace, definition_pattern(task.subject), [first.path])
                if visible and kind == "base":
                    visible = shown_in_full(workspace, definition_pattern(first.bases[0] if first.bases else ""),
                                            [str(task.expected)])
            else:
                visible = True
            if visible:
                kept[kind].append(task)
    return kept


# --- choosing and splitting ---------------------------------------------------------------------


def choose(candidates: dict[Kind, list[SynthTask]], n: int, heldout: float,
           rng: random.Random) -> tuple[list[SynthTask], list[SynthTask], int]:
    """(train, held-out, training questions left out for sharing a name with a held-out one).

    Stratified: the `n` questions are shared evenly among the kinds (a kind with fewer candidates
    gives its share to the others), and each kind's share is split train/held-out by the same
    ratio, so both files hold the same mix of kinds. Held-out questions are drawn first; training
    questions that mention one of their names are skipped.
    """
    # A kind too small to split would sit on one side only: it is left out (and reported) instead.
    smallest = 2 if heldout > 0 else 1
    pools = {kind: rng.sample(tasks, len(tasks)) for kind, tasks in candidates.items() if len(tasks) >= smallest}
    quotas = _quotas({kind: len(pool) for kind, pool in pools.items()}, n)
    total = sum(quotas.values())
    held_count = min(total - 1, max(1, round(total * heldout))) if heldout > 0 and total >= 2 else 0
    held_of = _held_shares(quotas, held_count)
    held = [task for kind, pool in pools.items() for task in pool[: held_of.get(kind, 0)]]
    banned = frozenset().union(*(task.names for task in held))
    train: list[SynthTask] = []
    excluded = 0
    for kind, pool in pools.items():
        wanted = quotas.get(kind, 0) - held_of.get(kind, 0)
        taken = 0
        for task in pool[held_of.get(kind, 0):]:
            if taken >= wanted:
                break
            if task.names & banned:
                excluded += 1
                continue
            train.append(task)
            taken += 1
    return train, held, excluded


def _quotas(available: dict[Kind, int], n: int) -> dict[Kind, int]:
    """`n` shared as evenly as the kinds' candidates allow (one at a time, kind by kind)."""
    quotas = dict.fromkeys(available, 0)
    left = min(n, sum(available.values()))
    while left:
        for kind in available:
            if left and quotas[kind] < available[kind]:
                quotas[kind] += 1
                left -= 1
    return quotas


def _held_shares(quotas: dict[Kind, int], held_count: int) -> dict[Kind, int]:
    """`held_count` shared among the kinds in proportion to their quotas (largest remainders first),
    never a kind's every question: each kind keeps the same train/held-out ratio, up to rounding."""
    total = sum(quotas.values())
    if not held_count or not total:
        return dict.fromkeys(quotas, 0)
    exact = {kind: q * held_count / total for kind, q in quotas.items()}
    shares = {kind: min(int(value), max(quotas[kind] - 1, 0)) for kind, value in exact.items()}
    by_remainder = sorted(quotas, key=lambda kind: (shares[kind] - exact[kind], -quotas[kind]))
    while sum(shares.values()) < held_count:
        room = [kind for kind in by_remainder if shares[kind] < quotas[kind] - 1]
        if not room:
            break
        shares[room[0]] += 1
        by_remainder = sorted(quotas, key=lambda kind: (shares[kind] - exact[kind], -quotas[kind]))
    if not any(shares.values()):  # a handful of questions, one per kind: one of them is held out whole
        shares[max(quotas, key=lambda kind: quotas[kind])] = 1
    return shares


def shortfalls(kinds: Sequence[Kind], n: int, heldout: float, candidates: dict[str, int], train: list[SynthTask],
               held: list[SynthTask]) -> dict[str, str]:
    """Kinds asked for that the code base could not fill to an even share, each with why."""
    even = n // max(len(kinds), 1)
    trained = Counter(t.kind for t in train)
    held_out = Counter(t.kind for t in held)
    notes: dict[str, str] = {}
    for kind in kinds:
        got = trained[kind] + held_out[kind]
        if not candidates.get(kind):
            notes[kind] = "the code gives no question of this kind"
        elif got == 0:
            notes[kind] = f"left out: {candidates[kind]} question(s), too few to have some on both sides"
        elif got < even:
            notes[kind] = f"only {got} question(s) of the {even} an even share would take"
        elif heldout > 0 and not held_out[kind]:
            notes[kind] = "too few to hold one out"
    return notes


def heldout_path(out: Path) -> Path:
    """`tasks.jsonl` -> `tasks.heldout.jsonl`, beside it."""
    return out.with_name(f"{out.stem}.heldout{out.suffix or '.jsonl'}")


def synthesize(
    workspace: Path,
    out: Path,
    *,
    n: int = 100,
    kinds: Sequence[Kind] = KINDS,
    seed: int = 0,
    heldout: float = 0.2,
) -> SynthReport:
    """Write `out` (training questions) and, when `heldout` > 0, `heldout_path(out)`.

    The same workspace, options and seed always give the same files.
    """
    if n < 1:
        raise SynthError("--n must be at least 1")
    if not 0 <= heldout < 1:
        raise SynthError("--heldout is a share between 0 and 1 (0.2: a fifth of the questions)")
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise SynthError(f"unknown kind {unknown[0] if unknown else '(none)'!r}; choose from {', '.join(KINDS)}")
    facts = read_facts(Path(workspace))
    if not facts.files:
        raise SynthError(f"{workspace}: no Python files to ask about")
    rng = random.Random(_seed_of(seed, kinds))
    candidates = within_tool_caps(Path(workspace), facts, candidate_tasks(facts, kinds, rng))
    if not any(candidates.values()):
        raise SynthError(f"{workspace}: the code gives no question of the kinds {', '.join(kinds)}")
    train, held, excluded = choose(candidates, n, heldout, rng)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write(out, train, "train")
    held_file = None
    if held:
        held_file = heldout_path(out)
        _write(held_file, held, "heldout")
    log.info("synthesized %d training and %d held-out questions from %d files", len(train), len(held), len(facts.files))
    return SynthReport(
        workspace=Path(workspace),
        train_file=out,
        heldout_file=held_file,
        files_scanned=len(facts.files),
        unparsable=facts.unparsable,
        candidates={kind: len(tasks) for kind, tasks in candidates.items()},
        train=dict(Counter(t.kind for t in train)),
        heldout=dict(Counter(t.kind for t in held)),
        excluded_for_overlap=excluded,
        shortfall=shortfalls(kinds, n, heldout, {k: len(v) for k, v in candidates.items()}, train, held),
        train_tasks=train,
        heldout_tasks=held,
    )


def _seed_of(seed: int, kinds: Sequence[Kind]) -> int:
    # Python's hash() of a str changes per process; the split must not.
    return int(hashlib.sha256(json.dumps([seed, sorted(kinds)]).encode()).hexdigest()[:12], 16)


def _write(path: Path, tasks: list[SynthTask], split: Literal["train", "heldout"]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for task in tasks:
            handle.write(json.dumps(task.line(split)) + "\n")
