"""One line of a run file -> the values of its index row (`distill.viewer.index` inserts them).

Plain dicts all the way: a record the strict models would refuse still gets a row, and a line that
is not JSON at all becomes an `invalid` row that says why.
"""

from __future__ import annotations

import json
from typing import Any

from distill.viewer.trajectory import final_answer, raw_timings, tool_meta, verdict_state

SNIPPET_CHARS = 240

# (records row values, tool calls as (tool, outcome, seconds), prompt, final answer)
ParsedRow = tuple[tuple[Any, ...], list[tuple[str, str | None, float | None]], str, str]


def _columns(kind: str, data: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str | None, float | None]], str]:
    """The row's columns, its tool calls (tool, outcome, seconds), and the searchable answer."""
    if kind == "dead":
        raw = data.get("partial_messages") or []
        calls: list[tuple[str, str | None, float | None]] = [
            (str(part.get("tool_name")), None, None)
            for message in raw if isinstance(message, dict)
            for part in message.get("parts") or [] if isinstance(part, dict) and part.get("part_kind") == "tool-call"
        ]
        teacher = (data.get("teacher") or {}).get("endpoint")
        columns = {"status": "dead", "teacher": teacher, "error": str(data.get("reason") or "")[:500]}
        return columns, calls, ""
    meta = tool_meta(data)
    timings = raw_timings(data.get("raw_messages"))
    calls = []
    for message in data.get("messages") or []:
        for call in (message.get("tool_calls") or []) if isinstance(message, dict) else []:
            call_id = call.get("id")
            found = meta.get(call_id, {})
            seconds = found.get("seconds", timings.tools.get(call_id))
            calls.append((str((call.get("function") or {}).get("name")), found.get("outcome"), seconds))
    usage = data.get("usage") or {}
    timing = data.get("timings") or {}
    columns = {
        "status": str(data.get("status") or "invalid"),
        "teacher": (data.get("teacher") or {}).get("endpoint"),
        "own_verdict": verdict_state(data.get("verdict")),
        "duration_s": timing.get("duration_s"),
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "error": (str(data["error"])[:500] if data.get("error") else None),
    }
    return columns, calls, final_answer(data) or ""


def parse_rows(kind: str, rows: list[tuple[int, int, int, bytes]]) -> list[ParsedRow]:
    """Rows `(line, ordinal, offset, bytes)` of a `kind` file (conversation | dead), parsed; a bad line is `invalid`."""
    parsed: list[ParsedRow] = []
    for line, ordinal, start, raw in rows:
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            columns, calls, answer = _columns(kind, data)
        except (ValueError, UnicodeDecodeError, AttributeError, TypeError) as error:
            data, calls, answer = {}, [], ""
            columns = {"status": "invalid", "error": f"line {line}: {error}"[:500]}
        sample = data.get("sample")
        prompt = str(data.get("prompt") or "")
        values = (
            kind, line, ordinal, start, len(raw), data.get("task_id"), sample if isinstance(sample, int) else 0,
            columns["status"], columns.get("teacher"), len(calls), columns.get("own_verdict"),
            columns.get("duration_s"), columns.get("input_tokens"), columns.get("output_tokens"),
            prompt[:SNIPPET_CHARS], columns.get("error"),
        )
        parsed.append((values, calls, prompt, answer))
    return parsed
