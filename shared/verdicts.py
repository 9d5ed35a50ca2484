"""Is an answer right? Reference answers, the one rule that matches them, verdicts and pass rates.

A prompt line may carry `expected`, in one of these shapes:

- a string. When it names a file (a path of the workspace, or, where the workspace is unknown, a
  path-looking string such as `pkg/util.py`), it is a file answer: see `{"files": [...]}`.
  Otherwise it is text, found on word boundaries, case-insensitively, whitespace runs collapsed
  ("fn_alpha" is not found in "fn_alphabet").
- `{"any": [...]}`: one of them. File answers: the answer names exactly one of these files and no
  other. Text: at least one of them is found.
- `{"all": [...]}`: every one of them. File answers: the answer names exactly these files.
- `{"files": [...]}`: the answer names exactly this set of files, in any order.
- `{"names": [...], "ordered": false}`: every name is found as a whole word (case-sensitive, as
  code is) and no other code name is quoted in backticks (names the question quotes may appear);
  with `"ordered": true` their first mentions come in this order (parameters).
- `{"quote": "..."}`: the answer holds this text verbatim, whitespace runs collapsed (a docstring line).
- `{"regex": "..."}`: Python `regex` syntax searched in the answer as written; bounded like grep's
  patterns (length, repeat counts) and given a time limit.

Files named by an answer are path tokens read with path boundaries: `a.py` is not inside
`data.py`; `./a.py`, `` `a.py` ``, `a.py:12` and `a.py, line 12` all name `a.py`. Where the
checker knows the workspace (`WorkspaceFiles`: the worker and eval), a token names a file when
it is one of the workspace's files (an absolute path under the root is read relative to it) or
looks like a path (a known file extension); without it (convert and the viewer re-reading records,
the demo's own checks) only path-looking tokens count. A file answer fails with the files missing
and the extra files in the verdict. A file mentioned after a negation in the same clause ("not in
a.py") fails the reference: the rule does not read logic, so such an answer is left to a judge.

The worker (when a conversation ends), `distill verify`, convert, eval and the viewer all decide
through `check_answer` and count through `pass_rates`, so "right" and "pass rate" mean the same
thing everywhere. A verdict says who decided (`reference` or `judge`) and whether it passed;
`passed: null` means nothing could verify it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import regex
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from distill.shared.errors import DistillError, LineError, line_error
from distill.shared.jsonl import iter_jsonl

VERDICTS_FILE = "verdicts.jsonl"
# A pattern that backtracks for longer than this on one answer counts as no match, not a hang.
REGEX_TIMEOUT_S = 1.0
MAX_DETAIL_CHARS = 500
# Reference patterns are bounded as grep's are: compiling "a{10000000}" must be a line error.
MAX_REFERENCE_PATTERN_CHARS = 2000
MAX_REFERENCE_REPEAT = 10_000
MAX_REFERENCE_REPEAT_PRODUCT = 100_000
_REPEAT_COUNTS = regex.compile(r"\{(\d*),?(\d*)\}")
# A workspace listing stops here: beyond it, files are recognised by their look alone.
MAX_WORKSPACE_FILES = 200_000

VerdictMethod = Literal["reference", "judge"]


def normalize(text: str) -> str:
    """What text matching compares: case folded, every whitespace run one space, ends trimmed."""
    return " ".join(text.split()).casefold()


class _Strings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @staticmethod
    def _nonblank(values: list[str]) -> list[str]:
        if not values:
            raise ValueError("needs at least one string")
        if any(not value.strip() for value in values):
            raise ValueError("holds an empty string, which every answer would contain")
        return values


class AnyOf(_Strings):
    """One of these: for files, exactly one and no other file; for text, at least one."""

    any: list[str]

    @field_validator("any")
    @classmethod
    def _check(cls, values: list[str]) -> list[str]:
        return cls._nonblank(values)


class AllOf(_Strings):
    """Every one of these: for files, exactly these files."""

    all: list[str]

    @field_validator("all")
    @classmethod
    def _check(cls, values: list[str]) -> list[str]:
        return cls._nonblank(values)


class FileSet(_Strings):
    """Exactly this set of workspace files, in any order, and no other file."""

    files: list[str]

    @field_validator("files")
    @classmethod
    def _check(cls, values: list[str]) -> list[str]:
        return [clean_path(v) for v in cls._nonblank(values)]


class NameSet(_Strings):
    """Every one of these code names, as whole words, and no other name quoted; `ordered`: in order."""

    names: list[str]
    ordered: bool = False

    @field_validator("names")
    @classmethod
    def _check(cls, values: list[str]) -> list[str]:
        return cls._nonblank(values)


class Quote(_Strings):
    """This text, verbatim (case kept, whitespace runs collapsed)."""

    quote: str

    @field_validator("quote")
    @classmethod
    def _check(cls, value: str) -> str:
        return cls._nonblank([value])[0]


class Pattern(BaseModel):
    """The answer matches this regular expression somewhere (`regex.search`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    regex: str

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        if not value:
            raise ValueError("is empty, which every answer would match")
        problem = pattern_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def pattern_problem(pattern: str) -> str | None:
    """Why a reference pattern is refused (too long, repeat counts too large, not valid), or None."""
    if len(pattern) > MAX_REFERENCE_PATTERN_CHARS:
        return f"is longer than {MAX_REFERENCE_PATTERN_CHARS} characters"
    product = 1
    for low, high in _REPEAT_COUNTS.findall(pattern):
        count = max(int(low or 0), int(high or 0))
        product *= max(count, 1)
        if count > MAX_REFERENCE_REPEAT or product > MAX_REFERENCE_REPEAT_PRODUCT:
            return f"has repeat counts too large (at most {MAX_REFERENCE_REPEAT}, {MAX_REFERENCE_REPEAT_PRODUCT} nested)"
    try:
        regex.compile(pattern)
    except Exception as error:  # noqa: BLE001 - regex raises error, OverflowError, MemoryError...
        return f"not a valid regular expression ({error})"
    return None


EXPECTED_SHAPES = ('a string, or an object with one key: "any" (list), "all" (list), "files" (list), '
                   '"names" (list, with "ordered"), "quote" (string) or "regex" (string)')
_SHAPES: dict[str, type[BaseModel]] = {"any": AnyOf, "all": AllOf, "files": FileSet, "names": NameSet,
                                       "quote": Quote, "regex": Pattern}
_STRING_KEYS = ("quote", "regex")


def _expected_shape(value: Any) -> Any:
    """One clear reason for a wrongly shaped `expected`, instead of a union's six."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("is empty, which every answer would contain")
        return value
    if isinstance(value, tuple(_SHAPES.values())):
        return value
    keys = [k for k in value if k != "ordered"] if isinstance(value, dict) else []
    if not isinstance(value, dict) or len(keys) != 1 or ("ordered" in value and keys != ["names"]):
        raise ValueError(f"must be {EXPECTED_SHAPES}")
    key = keys[0]
    model = _SHAPES.get(key)
    if model is None:
        raise ValueError(f"unknown key {key!r}; use {EXPECTED_SHAPES}")
    inner = value[key]
    if key in _STRING_KEYS and not isinstance(inner, str):
        raise ValueError(f'"{key}" takes a string')
    if key not in _STRING_KEYS and (not isinstance(inner, list) or not all(isinstance(v, str) for v in inner)):
        raise ValueError(f'"{key}" takes a list of strings')
    if not isinstance(value.get("ordered", False), bool):
        raise ValueError('"ordered" takes true or false')
    try:
        return model.model_validate(value)
    except ValidationError as error:
        raise ValueError(f'"{key}" {error.errors()[0]["msg"].removeprefix("Value error, ")}') from None


Expected = Annotated[str | AnyOf | AllOf | FileSet | NameSet | Quote | Pattern, BeforeValidator(_expected_shape)]


class Verdict(BaseModel):
    """Whether a trajectory's answer is right, and who said so. The default: nobody could tell."""

    model_config = ConfigDict(extra="forbid")

    passed: bool | None = None
    method: VerdictMethod | None = None
    detail: str = ""
    # The judge's 0-1 score; a reference check has none.
    score: float | None = Field(default=None, ge=0.0, le=1.0)
    # File answers: the reference's files the answer did not name, and the files it named besides.
    missing: list[str] = Field(default_factory=list)
    extra: list[str] = Field(default_factory=list)

    @property
    def outcome(self) -> Literal["passed", "failed", "unverified"]:
        return "unverified" if self.passed is None else ("passed" if self.passed else "failed")


def describe(expected: Expected) -> str:
    """The reference as a user wrote it, for verdict details and tables."""
    if isinstance(expected, str):
        return repr(expected)
    if isinstance(expected, AnyOf):
        return "any of " + ", ".join(repr(v) for v in expected.any)
    if isinstance(expected, AllOf):
        return "all of " + ", ".join(repr(v) for v in expected.all)
    if isinstance(expected, FileSet):
        return "exactly the files " + ", ".join(repr(v) for v in expected.files)
    if isinstance(expected, NameSet):
        return ("the names in order " if expected.ordered else "the names ") + ", ".join(repr(v) for v in expected.names)
    if isinstance(expected, Quote):
        return f"the text {expected.quote!r}"
    return f"/{expected.regex}/"


# --- files named by an answer ------------------------------------------------------------------

# Extensions that make a token a file name even where the workspace is unknown.
KNOWN_EXTENSIONS = frozenset({
    "py", "pyi", "pyx", "ipynb", "md", "rst", "txt", "json", "jsonl", "toml", "yaml", "yml", "cfg", "ini",
    "js", "jsx", "ts", "tsx", "mjs", "rs", "go", "c", "h", "cc", "cpp", "hpp", "java", "kt", "rb", "php",
    "sh", "bash", "html", "css", "scss", "sql", "xml", "csv", "lock", "conf", "swift", "m", "mm", "lua",
})
# A run of path characters; `:`, `,`, brackets, quotes and spaces end it (`a.py:12` names `a.py`).
_PATH_TOKEN = regex.compile(r"[\w.~/\-+@]+")
_NEGATION = regex.compile(r"\b(?:not|no|never|neither|nor|none|nowhere|without|except|rather than|instead of)\b|n't\b",
                          regex.IGNORECASE)
# Where a clause ends: a sentence stop followed by a space or the end, a semicolon, a line break.
_CLAUSE_END = regex.compile(r"[.!?](?=\s|$)|[;\n]")


def clean_path(token: str) -> str:
    """A path as a reference or an answer spells it, reduced to the workspace's relative form."""
    token = token.strip().strip("`'\"")
    while token.startswith("./"):
        token = token[2:]
    return token.rstrip(".")


@dataclass(frozen=True)
class WorkspaceFiles:
    """The files of the workspace an answer is about (relative posix paths), and its root."""

    root: str
    paths: frozenset[str]

    @classmethod
    def of(cls, root: str | Path) -> WorkspaceFiles:
        """Every file under `root` (links not followed), up to MAX_WORKSPACE_FILES."""
        root = os.path.realpath(root)
        found: list[str] = []
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            relative = os.path.relpath(folder, root)
            found += [name if relative == "." else f"{relative}/{name}".replace(os.sep, "/") for name in files]
            if len(found) >= MAX_WORKSPACE_FILES:
                break
        return cls(root=root, paths=frozenset(found))


@dataclass(frozen=True)
class Mention:
    path: str
    start: int
    negated: bool


def _looks_like_file(path: str, extensions: frozenset[str]) -> bool:
    name = path.rpartition("/")[2]
    stem, dot, extension = name.rpartition(".")
    return bool(dot and stem.strip(".") and extension.isalnum() and extension in extensions)


def mentions(answer: str, files: WorkspaceFiles | None = None, extra_known: Iterable[str] = ()) -> list[Mention]:
    """Every file the answer names, in order, with whether a negation in its clause precedes it."""
    known = set(extra_known) | (set(files.paths) if files else set())
    extensions = KNOWN_EXTENSIONS | {p.rpartition(".")[2] for p in known if "." in p.rpartition("/")[2]}
    found: list[Mention] = []
    clause_start = 0
    for match in _PATH_TOKEN.finditer(answer):
        token = match.group()
        path = clean_path(token)
        if files is not None and path.startswith(files.root + "/"):
            path = path[len(files.root) + 1:]
        if not path or not (path in known or _looks_like_file(path, frozenset(extensions))):
            continue
        before = answer[clause_start:match.start()]
        ends = list(_CLAUSE_END.finditer(before))
        clause = before[ends[-1].end():] if ends else before
        found.append(Mention(path, match.start(), bool(_NEGATION.search(clause))))
        clause_start = match.end()
    return found


def named_files(answer: str, files: WorkspaceFiles | None = None) -> list[str]:
    """The distinct files an answer names, in order of first mention."""
    return list(dict.fromkeys(m.path for m in mentions(answer, files)))


def _file_reference(expected: Expected, files: WorkspaceFiles | None) -> tuple[str, list[str]] | None:
    """("any" | "set", its paths) where the reference names files; None for a text reference."""
    if isinstance(expected, FileSet):
        return "set", list(expected.files)
    values = [expected] if isinstance(expected, str) else (
        expected.any if isinstance(expected, AnyOf) else expected.all if isinstance(expected, AllOf) else None)
    if values is None:
        return None
    paths = [clean_path(v) for v in values]
    known = files.paths if files is not None else frozenset()
    if all(p in known or _looks_like_file(p, KNOWN_EXTENSIONS | {q.rpartition(".")[2] for q in paths}) for p in paths):
        return ("any" if isinstance(expected, AnyOf) else "set"), paths
    return None


def _fail(detail: str, *, missing: list[str] | None = None, extra: list[str] | None = None) -> Verdict:
    return Verdict(passed=False, method="reference", detail=detail[:MAX_DETAIL_CHARS],
                   missing=missing or [], extra=extra or [])


def _check_files(how: str, wanted: list[str], answer: str, files: WorkspaceFiles | None) -> Verdict:
    said = mentions(answer, files, wanted)
    negated = [m.path for m in said if m.negated]
    if negated:
        return _fail(f"answer names {negated[0]!r} after a negation; a reference cannot tell what it means "
                     "(left to a judge)")
    named = list(dict.fromkeys(m.path for m in said))
    if how == "any":
        hits = [p for p in named if p in wanted]
        extra = [p for p in named if p not in wanted]
        if len(hits) == 1 and not extra:
            return Verdict(passed=True, method="reference", detail=f"answer names exactly {hits[0]!r}")
        missing = [] if hits else list(wanted)
        extra += hits[1:]
        detail = (f"answer names {len(hits)} of the alternatives" if hits else "answer names none of "
                  + ", ".join(map(repr, wanted)))
    else:
        missing = [p for p in wanted if p not in named]
        extra = [p for p in named if p not in wanted]
        if not missing and not extra:
            return Verdict(passed=True, method="reference", detail="answer names exactly " + ", ".join(map(repr, wanted)))
        detail = "answer names other files than expected"
    parts = [detail] + ([f"missing: {', '.join(missing)}"] if missing else []) + ([f"extra: {', '.join(extra)}"] if extra else [])
    return _fail("; ".join(parts), missing=missing, extra=extra)


def _word_pattern(text: str, *, fold: bool) -> regex.Pattern[str]:
    """`text` with its whitespace runs as any whitespace, bounded where it starts or ends with a word character."""
    body = r"\s+".join(regex.escape(part) for part in text.split())
    head = r"(?<!\w)" if regex.match(r"\w", text.strip()) else ""
    tail = r"(?!\w)" if regex.search(r"\w$", text.strip()) else ""
    return regex.compile(head + body + tail, regex.IGNORECASE if fold else 0)


def _check_text(expected: str | AnyOf | AllOf, answer: str) -> Verdict:
    wanted = [expected] if isinstance(expected, str) else (expected.any if isinstance(expected, AnyOf) else expected.all)
    present = [value for value in wanted if _word_pattern(value, fold=True).search(answer)]
    missing = [value for value in wanted if value not in present]
    if isinstance(expected, AnyOf):
        passed = bool(present)
        detail = f"answer contains {present[0]!r}" if passed else "answer contains none of " + ", ".join(map(repr, wanted))
    else:
        passed = not missing
        detail = "answer contains " + ", ".join(repr(v) for v in wanted) if passed else f"answer lacks {missing[0]!r}"
    return Verdict(passed=passed, method="reference", detail=detail[:MAX_DETAIL_CHARS])


_BACKTICKED = regex.compile(r"`([A-Za-z_][\w.]*)(?:\(\))?`")


def _check_names(expected: NameSet, answer: str, prompt: str | None) -> Verdict:
    # Paths are not names: `path` in "pkg/path.py" is no mention of the parameter `path`.
    text = _PATH_TOKEN.sub(lambda m: " " * len(m.group()) if "/" in m.group() or _looks_like_file(
        clean_path(m.group()), KNOWN_EXTENSIONS) else m.group(), answer)
    firsts: dict[str, int] = {}
    for name in expected.names:
        found = _word_pattern(name, fold=False).search(text)
        if found:
            firsts[name] = found.start()
    missing = [n for n in expected.names if n not in firsts]
    allowed = set(expected.names) | set(_BACKTICKED.findall(prompt or "")) | set(regex.findall(r"`([^`]+)`", prompt or ""))
    extra = list(dict.fromkeys(n for n in _BACKTICKED.findall(answer) if n not in allowed))
    if missing or extra:
        parts = (["missing: " + ", ".join(missing)] if missing else []) + (["extra: " + ", ".join(extra)] if extra else [])
        return _fail("answer names other names than expected; " + "; ".join(parts), missing=missing, extra=extra)
    if expected.ordered:
        order = sorted(expected.names, key=firsts.__getitem__)
        if order != list(expected.names):
            return _fail(f"answer names {', '.join(order)}; expected the order {', '.join(expected.names)}")
    return Verdict(passed=True, method="reference", detail="answer names " + ", ".join(expected.names)
                   + (" in order" if expected.ordered else ""))


def check_answer(expected: Expected, answer: str | None, *, files: WorkspaceFiles | None = None,
                 prompt: str | None = None) -> Verdict:
    """The reference verdict on a final answer (None or blank: there is no answer, so it fails).

    `files`: the workspace's files, where the caller knows them (see the module's docstring);
    `prompt`: the question, whose backticked names a `names` answer may repeat.
    """
    if answer is None or not answer.strip():
        return _fail(f"no final answer; expected {describe(expected)}")
    if isinstance(expected, Pattern):
        try:
            found = regex.search(expected.regex, answer, timeout=REGEX_TIMEOUT_S) is not None
        except TimeoutError:
            return _fail(f"/{expected.regex}/ took longer than {REGEX_TIMEOUT_S:g}s on the answer")
        return Verdict(passed=found, method="reference",
                       detail=f"answer {'matches' if found else 'does not match'} /{expected.regex}/"[:MAX_DETAIL_CHARS])
    if isinstance(expected, NameSet):
        return _check_names(expected, answer, prompt)
    if isinstance(expected, Quote):
        passed = " ".join(expected.quote.split()) in " ".join(answer.split())
        return Verdict(passed=passed, method="reference",
                       detail=f"answer {'quotes' if passed else 'does not quote'} {expected.quote!r}"[:MAX_DETAIL_CHARS])
    reference = _file_reference(expected, files)
    if reference is not None:
        return _check_files(*reference, answer, files)
    assert not isinstance(expected, FileSet)
    return _check_text(expected, answer)


def reference_verdict(expected: Expected | None, answer: str | None, *, files: WorkspaceFiles | None = None,
                      prompt: str | None = None) -> Verdict:
    """check_answer where there is a reference; the unverified verdict where there is none."""
    return Verdict() if expected is None else check_answer(expected, answer, files=files, prompt=prompt)


# --- pass rates ------------------------------------------------------------------------------


class PassRates(BaseModel):
    """How often answers were right, counted one way for convert, eval and the viewer.

    pass@k is the unbiased estimator 1 - C(n-c, k) / C(n, k) for each prompt with n verified
    samples of which c passed (k above n: k = n), averaged over the prompts that have a verified
    sample. Prompts whose every sample is unverified are counted apart, never as failures.
    """

    model_config = ConfigDict(extra="forbid")

    samples: int = 0
    passed: int = 0
    failed: int = 0
    unverified: int = 0
    # Prompts with at least one verified sample (the denominator of pass@k), and those without.
    prompts: int = 0
    prompts_unverified: int = 0
    # Prompts with at least one passing sample.
    prompts_passed: int = 0
    # The most verified samples a prompt has.
    k: int = 0
    pass_at_1: float | None = None
    pass_at_k: float | None = None


def pass_at(n: int, c: int, k: int) -> float:
    """The chance that k of n samples (c of them right), drawn without replacement, hold a right one."""
    k = min(k, n)
    if n <= 0 or k <= 0:
        raise ValueError("pass@k needs n >= 1 and k >= 1")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_rates(outcomes: Mapping[str, Sequence[bool | None]]) -> PassRates:
    """Prompt id -> each sample's `passed` (None: unverified) -> the counts and pass@1, pass@k."""
    rates = PassRates()
    verified: list[tuple[int, int]] = []
    for samples in outcomes.values():
        rates.samples += len(samples)
        right = sum(s is True for s in samples)
        wrong = sum(s is False for s in samples)
        rates.passed += right
        rates.failed += wrong
        rates.unverified += len(samples) - right - wrong
        if right + wrong:
            verified.append((right + wrong, right))
            rates.prompts_passed += right > 0
        else:
            rates.prompts_unverified += 1
    rates.prompts = len(verified)
    if verified:
        rates.k = max(n for n, _ in verified)
        rates.pass_at_1 = round(sum(pass_at(n, c, 1) for n, c in verified) / len(verified), 4)
        rates.pass_at_k = round(sum(pass_at(n, c, rates.k) for n, c in verified) / len(verified), 4)
    return rates


# --- the verdicts file -------------------------------------------------------------------------


class VerdictRecord(BaseModel):
    """One line of RUN/verdicts.jsonl: a later verdict on one (task, sample) of the run.

    conversations.jsonl is never rewritten; readers take a record's own verdict unless this file
    has one for it, and the last line for a (task, sample) wins.
    """

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    task_id: str
    sample: int = Field(default=0, ge=0)
    run: str
    verdict: Verdict
    judge_model: str | None = None
    created_at: datetime


def read_verdicts(path: Path) -> Iterator[VerdictRecord | LineError]:
    """Each line of a verdicts file as a record, or the error that names its line and field."""
    for number, item in iter_jsonl(path):
        if isinstance(item, LineError):
            yield item
            continue
        try:
            yield VerdictRecord.model_validate(item)
        except ValidationError as error:
            yield line_error(str(path), number, error)


class VerdictsFileError(DistillError):
    """A verdicts file has a line that is not a verdict record."""


def latest_verdicts(path: Path) -> dict[tuple[str, int], Verdict]:
    """(task id, sample) -> the last verdict the file gives it; a missing file gives none.

    A truncated last line (a crash mid-write) is skipped: it held no verdict, and the record's own
    verdict still stands. Any other bad line raises VerdictsFileError naming file, line and field.
    """
    if not path.is_file():
        return {}
    latest: dict[tuple[str, int], Verdict] = {}
    for item in read_verdicts(path):
        if isinstance(item, LineError):
            if item.reason.startswith("truncated last line"):
                continue
            raise VerdictsFileError(str(item))
        latest[(item.task_id, item.sample)] = item.verdict
    return latest
