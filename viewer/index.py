"""An on-disk index of a run's records, so filtering 100,000 conversations never loads the file.

Each line of `conversations.jsonl` and `dead.jsonl` becomes one row: where it sits in its file
(byte offset and length, to read it back with one seek) and the few fields the list filters on.
Prompts and final answers go into an SQLite FTS5 table with the trigram tokenizer, which answers
substring searches from the index. The index lives outside the run folder (which is never
written), in a cache folder where the next session finds it: a file that only grew since is
indexed from where the last session stopped, one that changed otherwise is indexed again. It also
follows a live run: each request first indexes the lines appended since the last.
Verdicts in `verdicts.jsonl` and drop reasons from a convert report are kept in tables of their
own and folded into two indexed columns of every row whenever either changes, so a new verdict file
or a re-run convert never re-reads the records, and every filter is a lookup on one column.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from distill.shared.verdicts import VERDICTS_FILE, VerdictsFileError, latest_verdicts, pass_rates
from distill.viewer.catalog import ConvertOutput, RunFolder
from distill.viewer.rows import ParsedRow, parse_rows
from distill.viewer.trajectory import verdict_state

logger = logging.getLogger(__name__)

# Bump when the tables or what a row holds change: indexes kept from older sessions are rebuilt.
INDEX_FORMAT = 3
HEAD_BYTES = 4096
PAGE_SIZE = 50
BATCH_ROWS = 2000

STATUSES = ("final_answer", "tool_limit", "error", "dead", "invalid")
VERDICTS = ("passed", "failed", "unverified", "none")
KEPT = "kept"
NOT_CONVERTED = "not_converted"

_SCHEMA = """
CREATE TABLE records (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,            -- conversation | dead
    line INTEGER NOT NULL,         -- 1-based line in its file
    ordinal INTEGER NOT NULL,      -- 1-based among the file's non-blank lines (what convert counts)
    offset INTEGER NOT NULL,
    length INTEGER NOT NULL,
    task_id TEXT,
    sample INTEGER NOT NULL,       -- 0 when the record has none (as task keys count)
    status TEXT NOT NULL,
    teacher TEXT,
    tool_calls INTEGER NOT NULL,
    own_verdict TEXT,              -- the record's own verdict
    verdict TEXT,                  -- what filters see: verdicts.jsonl's if it has one, else the record's, else 'none'
    drop_reason TEXT,              -- a DropReason value, 'kept' or 'not_converted' (NULL: no convert output)
    duration_s REAL,
    input_tokens INTEGER,
    output_tokens INTEGER,
    prompt_snippet TEXT,
    error TEXT
);
CREATE INDEX records_kind_line ON records(kind, line);
CREATE INDEX records_status ON records(status);
CREATE INDEX records_teacher ON records(teacher);
CREATE INDEX records_verdict ON records(verdict);
CREATE INDEX records_drop ON records(drop_reason);
CREATE INDEX records_tool_calls ON records(tool_calls);
CREATE INDEX records_task ON records(task_id, sample);
CREATE TABLE calls (record_id INTEGER NOT NULL, tool TEXT NOT NULL, outcome TEXT, seconds REAL);
CREATE INDEX calls_tool_seconds ON calls(tool, seconds);
CREATE TABLE verdicts (task_id TEXT NOT NULL, sample INTEGER NOT NULL, state TEXT NOT NULL,
                       method TEXT, detail TEXT, PRIMARY KEY (task_id, sample));
CREATE TABLE drops (line INTEGER PRIMARY KEY, reason TEXT NOT NULL, detail TEXT);
CREATE VIRTUAL TABLE search USING fts5(prompt, answer, tokenize='trigram');
"""


@dataclass
class Filters:
    status: str = ""
    verdict: str = ""
    teacher: str = ""
    drop: str = ""
    calls_min: int | None = None
    calls_max: int | None = None
    q: str = ""

    @classmethod
    def from_query(cls, params: Any) -> Filters:
        def number(name: str) -> int | None:
            text = str(params.get(name) or "").strip()
            return int(text) if text.lstrip("-").isdigit() else None

        return cls(
            status=str(params.get("status") or ""),
            verdict=str(params.get("verdict") or ""),
            teacher=str(params.get("teacher") or ""),
            drop=str(params.get("drop") or ""),
            calls_min=number("calls_min"),
            calls_max=number("calls_max"),
            q=str(params.get("q") or "").strip(),
        )

    def as_query(self) -> dict[str, str]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: str(value) for name, value in values.items() if value not in (None, "")}


@dataclass
class Row:
    kind: str
    line: int
    task_id: str | None
    sample: int | None
    status: str
    teacher: str | None
    tool_calls: int
    verdict: str
    drop: str | None
    prompt: str
    duration_s: float | None
    error: str | None


@dataclass
class Page:
    rows: list[Row]
    total: int
    page: int
    pages: int


@dataclass
class _Tail:
    """How far one file is indexed (kept in the index's meta table), and how to recognise that file."""

    offset: int = 0
    line: int = 0
    ordinal: int = 0
    head: str = ""  # digest of the file's first head_length bytes (HEAD_BYTES, or fewer while it is shorter)
    head_length: int = 0
    last: str = ""  # digest of the last line indexed
    last_length: int = 0


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def default_index_dir() -> Path:
    """Where indexes persist between `distill view` sessions (the run folders stay untouched)."""
    from distill.shared.settings import cache_dir

    return cache_dir() / "view"


_UNSET: Any = object()


class RunIndex:
    """The index of one run folder, kept in `folder` and reused by later sessions while the files only grow.

    Thread-safe (the page server answers from a thread pool), and safe with several viewers on one
    run: each batch of lines is indexed in one write transaction that starts from the stored tail.
    """

    def __init__(self, run: RunFolder, folder: Path) -> None:
        self.run = run
        self._lock = threading.RLock()
        folder.mkdir(parents=True, exist_ok=True)
        self._path = folder / f"{_digest(str(run.path.resolve()).encode())}.sqlite"
        self._db = self._open()
        self._files = {"conversation": run.conversations_path, "dead": run.dead_path}
        self._verdicts_stamp: list[int] | None = _UNSET
        self._convert: ConvertOutput | None = _UNSET
        self.converted_records = 0
        # Why verdicts.jsonl could not be read (shown on the run page), if it could not.
        self.verdicts_error: str | None = None
        # Lines this process parsed (a reused index parses only what was appended since).
        self.parsed_here = 0
        # Changes whenever what the pages show may have changed; summaries are cached per version.
        self.version: tuple[Any, ...] = ()
        self._cached: dict[str, tuple[tuple[Any, ...], Any]] = {}

    def _open(self) -> sqlite3.Connection:
        # Autocommit mode: every write below opens its own explicit transaction.
        db = sqlite3.connect(self._path, check_same_thread=False, timeout=600, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")  # a cache: losing the last batch on power loss costs a re-read
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        found = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if found is None or found[0] != str(INDEX_FORMAT):
            old = db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'meta'"
                " AND name NOT LIKE 'search@_%' ESCAPE '@' AND name NOT LIKE 'sqlite@_%' ESCAPE '@'"
            ).fetchall()
            drops = "".join(f'DROP TABLE IF EXISTS "{name}";' for (name,) in old)
            db.executescript(
                f"BEGIN IMMEDIATE; {drops} DELETE FROM meta; {_SCHEMA}"
                f" INSERT INTO meta VALUES ('format', '{INDEX_FORMAT}'); COMMIT;"
            )
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- keeping up with the files ---------------------------------------------------------

    def refresh(self) -> None:
        with self._lock:
            for kind, path in self._files.items():
                while self._index_batch(kind, path):
                    pass
            resolve_all = self._load_verdicts() | self._load_drops(self.run.convert)
            self._resolve(everything=resolve_all)
            newest = self._db.execute("SELECT MAX(id) FROM records").fetchone()[0]
            self.version = (newest, str(self._verdicts_stamp), id(self._convert))

    def _tail(self, kind: str) -> _Tail:
        stored = self._db.execute("SELECT value FROM meta WHERE key = ?", (f"tail.{kind}",)).fetchone()
        return _Tail(**json.loads(stored[0])) if stored else _Tail()

    @staticmethod
    def _recognised(tail: _Tail, handle: Any, size: int) -> bool:
        """Is this the file the stored tail was taken from (only appended to since)?"""
        if size < tail.offset:
            return False
        handle.seek(0)
        if _digest(handle.read(tail.head_length)) != tail.head:
            return False
        handle.seek(tail.offset - tail.last_length)
        return _digest(handle.read(tail.last_length)) == tail.last

    def _index_batch(self, kind: str, path: Path) -> bool:
        """Index up to BATCH_ROWS complete new lines in one transaction; False when nothing was new."""
        if not path.is_file():
            return False
        self._db.execute("BEGIN IMMEDIATE")
        try:
            tail = self._tail(kind)
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if tail.offset and not self._recognised(tail, handle, size):
                    logger.warning("%s changed other than by appending: indexing it again", path)
                    self._db.execute("DELETE FROM search WHERE rowid IN (SELECT id FROM records WHERE kind = ?)", (kind,))
                    self._db.execute("DELETE FROM calls WHERE record_id IN (SELECT id FROM records WHERE kind = ?)", (kind,))
                    self._db.execute("DELETE FROM records WHERE kind = ?", (kind,))
                    tail = _Tail()
                if size <= tail.offset:
                    self._db.execute("COMMIT")
                    return False
                rows = self._read(handle, tail, BATCH_ROWS)
            self._insert(parse_rows(kind, rows))
            if tail.head_length < min(HEAD_BYTES, tail.offset):
                with path.open("rb") as handle:
                    tail.head_length = min(HEAD_BYTES, tail.offset)
                    tail.head = _digest(handle.read(tail.head_length))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"tail.{kind}", json.dumps(tail.__dict__)))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self.parsed_here += len(rows)
        return bool(rows)

    @staticmethod
    def _read(handle: Any, tail: _Tail, limit: int) -> list[tuple[int, int, int, bytes]]:
        """(line, ordinal, offset, bytes) of up to `limit` complete lines after the tail; moves the tail."""
        rows: list[tuple[int, int, int, bytes]] = []
        handle.seek(tail.offset)
        for raw in handle:
            if not raw.endswith(b"\n"):
                break  # a line still being written: indexed once it is complete
            start = tail.offset
            tail.offset += len(raw)
            tail.line += 1
            tail.last, tail.last_length = _digest(raw), len(raw)
            if not raw.strip():
                continue
            tail.ordinal += 1
            rows.append((tail.line, tail.ordinal, start, raw))
            if len(rows) >= limit:
                break
        return rows

    def _insert(self, parsed: list[ParsedRow]) -> None:
        cursor = self._db.cursor()
        for values, calls, prompt, answer in parsed:
            cursor.execute(
                "INSERT INTO records (kind, line, ordinal, offset, length, task_id, sample, status, teacher, tool_calls,"
                " own_verdict, duration_s, input_tokens, output_tokens, prompt_snippet, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            record_id = cursor.lastrowid
            cursor.executemany(
                "INSERT INTO calls VALUES (?, ?, ?, ?)", [(record_id, tool, outcome, secs) for tool, outcome, secs in calls]
            )
            cursor.execute("INSERT INTO search (rowid, prompt, answer) VALUES (?, ?, ?)", (record_id, prompt, answer))

    def _stored(self, key: str) -> Any:
        found = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(found[0]) if found else _UNSET

    def _load_verdicts(self) -> bool:
        """Reload verdicts.jsonl when it changed (since this session's last look, or the stored session's)."""
        path = self.run.path / VERDICTS_FILE
        stamp = [path.stat().st_size, path.stat().st_mtime_ns] if path.is_file() else None
        known = self._stored("verdicts") if self._verdicts_stamp is _UNSET else self._verdicts_stamp
        self._verdicts_stamp = stamp
        if stamp == known:
            return False
        try:
            latest = latest_verdicts(path)  # the reader convert and verify use: one format, one rule
            self.verdicts_error = None
        except VerdictsFileError as error:
            logger.warning("%s", error)
            latest, self.verdicts_error = {}, str(error)
        rows = [
            (task_id, sample, verdict_state(verdict.model_dump()), verdict.method, verdict.detail)
            for (task_id, sample), verdict in latest.items()
        ]
        with self._transaction():
            self._db.execute("DELETE FROM verdicts")
            self._db.executemany("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)", rows)
            # A file that failed to read is read again next session (and says why again).
            known_stamp = stamp if self.verdicts_error is None else "unreadable"
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('verdicts', ?)", (json.dumps(known_stamp),))
        return True

    def _load_drops(self, convert: ConvertOutput | None) -> bool:
        """Take drop reasons from `convert` (the run's newest convert report) when it is another one."""
        if convert is self._convert:
            return False
        first_look = self._convert is _UNSET
        self._convert = convert
        self.converted_records = int(convert.report.get("records") or 0) if convert is not None else 0
        identity = None if convert is None else [str(convert.path), convert.created_at, self.converted_records]
        if first_look and self._stored("drops") == identity:
            return False
        drops = [d for d in (convert.report.get("drops") or [] if convert else []) if isinstance(d, dict) and "line" in d]
        with self._transaction():
            self._db.execute("DELETE FROM drops")
            self._db.executemany(
                "INSERT OR REPLACE INTO drops VALUES (?, ?, ?)",
                [(int(d["line"]), str(d.get("reason")), d.get("detail")) for d in drops],
            )
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('drops', ?)", (json.dumps(identity),))
        return True

    def _resolve(self, *, everything: bool) -> None:
        """Fold verdicts and drop reasons into the rows (new rows only, unless either changed)."""
        with self._transaction():
            self._db.execute(
                "UPDATE records SET verdict = COALESCE("
                " (SELECT state FROM verdicts v WHERE v.task_id = records.task_id AND v.sample = records.sample),"
                " own_verdict, 'none'),"
                " drop_reason = CASE WHEN kind = 'conversation' AND ? THEN COALESCE("
                "  (SELECT reason FROM drops d WHERE d.line = records.line), CASE WHEN ordinal <= ? THEN ? ELSE ? END)"
                " END"
                + ("" if everything else " WHERE verdict IS NULL"),
                (self._convert is not None, self.converted_records, KEPT, NOT_CONVERTED),
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _memo(self, name: str, compute: Any) -> Any:
        cached = self._cached.get(name)
        if cached is None or cached[0] != self.version:
            cached = self._cached[name] = (self.version, compute())
        return cached[1]

    # --- reading ---------------------------------------------------------------------------

    def _where(self, filters: Filters) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if filters.status:
            clauses.append("r.status = ?")
            params.append(filters.status)
        if filters.teacher:
            clauses.append("r.teacher = ?")
            params.append(filters.teacher)
        if filters.verdict:
            clauses.append("r.verdict = ?")
            params.append(filters.verdict)
        if filters.drop:
            clauses.append("r.drop_reason = ?")
            params.append(filters.drop)
        if filters.calls_min is not None:
            clauses.append("r.tool_calls >= ?")
            params.append(filters.calls_min)
        if filters.calls_max is not None:
            clauses.append("r.tool_calls <= ?")
            params.append(filters.calls_max)
        if filters.q:
            if len(filters.q) >= 3:
                # The trigram index answers a quoted phrase as a case-insensitive substring match.
                clauses.append("r.id IN (SELECT rowid FROM search WHERE search MATCH ?)")
                params.append('"' + filters.q.replace('"', '""') + '"')
            else:
                clauses.append(
                    "r.id IN (SELECT rowid FROM search WHERE prompt LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\')"
                )
                pattern = "%" + filters.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                params.extend([pattern, pattern])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    _FROM = " FROM records r"

    def page(self, filters: Filters, page: int = 1, size: int = PAGE_SIZE) -> Page:
        with self._lock:
            self.refresh()
            where, params = self._where(filters)
            total = self._db.execute("SELECT COUNT(*)" + self._FROM + where, params).fetchone()[0]
            pages = max(1, math.ceil(total / size))
            page = min(max(1, page), pages)
            found = self._db.execute(
                "SELECT r.kind, r.line, r.task_id, r.sample, r.status, r.teacher, r.tool_calls, r.verdict,"
                " r.drop_reason, r.prompt_snippet, r.duration_s, r.error"
                + self._FROM + where + " ORDER BY r.id LIMIT ? OFFSET ?",
                [*params, size, (page - 1) * size],
            ).fetchall()
        rows = [Row(*row) for row in found]
        for row in rows:
            row.sample = row.sample or None  # sample 0 is the prompt itself: not worth a label
        return Page(rows=rows, total=total, page=page, pages=pages)

    def record(self, kind: str, line: int) -> dict[str, Any] | None:
        """The record on `line` of its file, read with one seek; None if there is no such line."""
        with self._lock:
            self.refresh()
            found = self._db.execute(
                "SELECT offset, length FROM records WHERE kind = ? AND line = ?", (kind, line)
            ).fetchone()
        if found is None:
            return None
        path = self.run.conversations_path if kind == "conversation" else self.run.dead_path
        with path.open("rb") as handle:
            handle.seek(found[0])
            raw = handle.read(found[1])
        try:
            data = json.loads(raw)
        except ValueError as error:
            return {"_invalid": f"{path}:{line}: not JSON ({error})", "_raw": raw.decode("utf-8", "replace")}
        return data if isinstance(data, dict) else {"_invalid": f"{path}:{line}: not a JSON object"}

    def neighbours(self, kind: str, line: int) -> tuple[int | None, int | None]:
        """The lines of the records before and after `line` in its file (None at either end)."""
        with self._lock:
            before = self._db.execute(
                "SELECT MAX(line) FROM records WHERE kind = ? AND line < ?", (kind, line)
            ).fetchone()[0]
            after = self._db.execute("SELECT MIN(line) FROM records WHERE kind = ? AND line > ?", (kind, line)).fetchone()[0]
        return before, after

    def verdict_of(self, task_id: str | None, sample: int | None) -> dict[str, Any] | None:
        with self._lock:
            found = self._db.execute(
                "SELECT state, method, detail FROM verdicts WHERE task_id = ? AND sample = ?",
                (task_id, sample if isinstance(sample, int) else 0),
            ).fetchone()
        return {"state": found[0], "method": found[1], "detail": found[2]} if found else None

    def drop_of(self, line: int) -> dict[str, Any] | None:
        """What convert did with the conversation on `line`: a drop reason with its detail, kept, or not converted."""
        with self._lock:
            found = self._db.execute(
                "SELECT r.drop_reason, d.detail FROM records r LEFT JOIN drops d ON d.line = r.line"
                " WHERE r.kind = 'conversation' AND r.line = ?",
                (line,),
            ).fetchone()
        if found is None or found[0] is None:
            return None
        return {"reason": found[0], "detail": found[1]}

    # --- the run's numbers -----------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        with self._lock:
            self.refresh()
            return self._memo("summary", self._summary)

    def _summary(self) -> dict[str, Any]:
        db = self._db
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM records GROUP BY status").fetchall())
        verdicts = dict(
            db.execute("SELECT verdict, COUNT(*) FROM records WHERE kind = 'conversation' GROUP BY 1").fetchall()
        )
        teachers = db.execute(
            "SELECT teacher, SUM(kind = 'conversation'), SUM(kind = 'dead'), SUM(status = 'final_answer'),"
            " SUM(tool_calls), AVG(duration_s), SUM(input_tokens), SUM(output_tokens),"
            " SUM(verdict = 'passed'), SUM(verdict = 'failed')"
            " FROM records GROUP BY teacher ORDER BY teacher"
        ).fetchall()
        tools = db.execute(
            "SELECT tool, COUNT(*), SUM(outcome = 'ok'), SUM(outcome = 'tool_error'), SUM(outcome = 'infra_error'),"
            " SUM(outcome IS NULL), COUNT(seconds) FROM calls GROUP BY tool ORDER BY COUNT(*) DESC"
        ).fetchall()
        drop_counts = dict(
            db.execute(
                "SELECT drop_reason, COUNT(*) FROM records WHERE drop_reason IS NOT NULL GROUP BY drop_reason"
            ).fetchall()
        )
        tool_rows = [
            {
                "tool": tool, "calls": calls, "ok": ok or 0, "tool_error": tool_error or 0,
                "infra_error": infra or 0, "unknown": unknown or 0,
                **(self._percentiles(tool) if timed else {"p50": None, "p95": None}),
            }
            for tool, calls, ok, tool_error, infra, unknown, timed in tools
        ]
        outcomes: dict[str, list[bool | None]] = {}
        for task_id, verdict in db.execute("SELECT task_id, verdict FROM records WHERE kind = 'conversation'"):
            outcomes.setdefault(str(task_id), []).append({"passed": True, "failed": False}.get(verdict))
        # As convert and eval count them (shared.verdicts.pass_rates), over the recorded verdicts.
        rates = pass_rates(outcomes)
        return {
            "statuses": statuses,
            "total": sum(statuses.values()),
            "verdicts": verdicts,
            "pass_rate": rates.pass_at_1,
            "pass_at_k": rates.pass_at_k,
            "k": rates.k,
            "prompts_verified": rates.prompts,
            "prompts_unverified": rates.prompts_unverified,
            "teachers": [
                {
                    "teacher": t[0], "conversations": t[1] or 0, "dead": t[2] or 0, "final_answers": t[3] or 0,
                    "tool_calls": t[4] or 0, "mean_duration_s": t[5], "input_tokens": t[6] or 0,
                    "output_tokens": t[7] or 0, "passed": t[8] or 0, "failed": t[9] or 0,
                }
                for t in teachers
            ],
            "tools": tool_rows,
            "drops": drop_counts,
        }

    def _percentiles(self, tool: str) -> dict[str, float | None]:
        count = self._db.execute("SELECT COUNT(seconds) FROM calls WHERE tool = ?", (tool,)).fetchone()[0]

        def at(share: float) -> float | None:
            if not count:
                return None
            position = min(count - 1, max(0, math.ceil(share * count) - 1))
            return self._db.execute(
                "SELECT seconds FROM calls WHERE tool = ? AND seconds IS NOT NULL ORDER BY seconds LIMIT 1 OFFSET ?",
                (tool, position),
            ).fetchone()[0]

        return {"p50": at(0.5), "p95": at(0.95)}

    def kept_before(self, line: int) -> list[str]:
        """Task ids of the conversations convert kept on lines before `line`, in file order."""
        with self._lock:
            return [
                task for (task,) in self._db.execute(
                    "SELECT task_id FROM records WHERE kind = 'conversation' AND drop_reason = ? AND line < ?"
                    " ORDER BY line",
                    (KEPT, line),
                )
            ]

    def teachers(self) -> list[str]:
        with self._lock:
            self.refresh()
            return self._memo("teachers", lambda: [
                t for (t,) in self._db.execute("SELECT DISTINCT teacher FROM records WHERE teacher IS NOT NULL ORDER BY 1")
            ])
