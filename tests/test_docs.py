"""docs/architecture.md names only what exists: every repository path, every `module` `function`
pair and every dotted `distill.x.y` name in backticks is checked against the code."""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from conftest import REPO

ARCHITECTURE = REPO / "docs" / "architecture.md"
# A backticked token is a repository path when it starts with one of these folders.
ROOTS = ("shared", "coordinator", "worker", "trainer", "teachers", "viewer", "distill", "deploy", "bench",
         "tests", "docs", ".ci")
TICKED = re.compile(r"`([^`]+)`")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?(?:\(.*\))?")
DOTTED = re.compile(r"distill(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
# What may stand between a module and the names that belong to it ("`a.py` `f` / `g` + `b.py` `h`").
JOINER = re.compile(r"\s*(?:[/+,(]\s*)?")
FILE = re.compile(r"\w+\.py")


@dataclass
class Problems:
    found: list[str] = field(default_factory=list)

    def add(self, where: int, text: str) -> None:
        self.found.append(f"docs line {where}: {text}")


def _defined(module: Path) -> tuple[set[str], set[str]]:
    """Every name a module defines (at any depth), and its `Class.member` pairs."""
    tree = ast.parse(module.read_text(encoding="utf-8"))
    names: set[str] = set()
    members: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    members.add(f"{node.name}.{item.name}")
                elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    members.add(f"{node.name}.{item.target.id}")
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names, members


def _is_path(token: str) -> bool:
    return "/" in token and token.split("/")[0] in ROOTS and not re.search(r"[<>{}* ]", token)


def _check_name(module: Path, token: str) -> str | None:
    names, members = _defined(module)
    name = token.split("(")[0]
    if "." in name:
        return None if name in members else f"{module.relative_to(REPO)} has no {name}"
    return None if name in names else f"{module.relative_to(REPO)} defines no {name}"


def _check_dotted(token: str) -> str | None:
    parts = token.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(target, attribute):
                return f"{token}: {'.'.join(parts[:cut])} has no {attribute}"
            target = getattr(target, attribute)
        return None
    return f"{token}: no such module"


def check_text(text: str, repo: Path = REPO) -> list[str]:
    """What the text names that does not exist (empty when everything does)."""
    problems = Problems()
    for number, line in enumerate(text.splitlines(), start=1):
        # In "Who owns what", a bare `file.py` lives in its row's folder (the row's first path).
        folder = next((repo / t for t in TICKED.findall(line) if _is_path(t) and t.endswith("/")), None)
        for cell in line.split("|"):
            module: Path | None = None
            last_end = 0
            for match in TICKED.finditer(cell):
                token = match.group(1).strip()
                between = cell[last_end:match.start()]
                last_end = match.end()
                if _is_path(token):
                    path = repo / token.rstrip("/")
                    if not path.exists():
                        problems.add(number, f"no such path {token}")
                    module = path if path.suffix == ".py" and path.is_file() else None
                elif FILE.fullmatch(token) and folder is not None:
                    if not (folder / token).is_file():
                        problems.add(number, f"no {token} in {folder.relative_to(repo)}/")
                    module = folder / token if (folder / token).is_file() else None
                elif DOTTED.fullmatch(token):
                    problem = _check_dotted(token)
                    if problem:
                        problems.add(number, problem)
                    module = None
                elif module is not None and NAME.fullmatch(token) and JOINER.fullmatch(between):
                    problem = _check_name(module, token)
                    if problem:
                        problems.add(number, problem)
                else:
                    module = None
    return problems.found


def test_every_path_and_function_in_architecture_md_exists() -> None:
    assert check_text(ARCHITECTURE.read_text(encoding="utf-8")) == []


def test_the_check_reads_the_pairs_the_document_uses() -> None:
    # Right ones, in each form the document writes them.
    assert check_text("| `worker/actor.py` `GenerationLoop._step` / `_next_entries` | x |") == []
    assert check_text("`worker/actor.py` `_publish` + `shared/queue.py` `add_publish`") == []
    assert check_text("`shared/keys.py` `task_key(task_id, sample)`; `distill.shared.errors.DistillError`") == []
    assert check_text("`coordinator/run.py` `generate` → `coordinator/workers.py` `running_workers`") == []


def test_the_check_catches_names_that_look_right_but_are_wrong() -> None:
    assert check_text("`worker/agent_loop.py`") == ["docs line 1: no such path worker/agent_loop.py"]
    # A function that exists, but in another module.
    assert check_text("`shared/queue.py` `to_chat_messages`") == [
        "docs line 1: shared/queue.py defines no to_chat_messages"]
    # A real class with a method it does not have.
    assert check_text("`worker/actor.py` `GenerationLoop._take`") == [
        "docs line 1: worker/actor.py has no GenerationLoop._take"]
    assert check_text("`distill.shared.errors.DistilError`") == [
        "docs line 1: distill.shared.errors.DistilError: distill.shared.errors has no DistilError"]
    # A name after a plain word belongs to no module and is not checked; after a joiner it is.
    assert check_text("`shared/queue.py`, the `nothing_here` set") == []
    assert check_text("`shared/queue.py` / `nothing_here`") == ["docs line 1: shared/queue.py defines no nothing_here"]
    # A file the row's folder does not hold (it lives in another folder).
    assert check_text("| `shared/` | `distill.shared` | settings (`settings.py`), capture (`capture.py`) |") == [
        "docs line 1: no capture.py in shared/"]
