"""`distill view` on a large run: index build, then page and filter latency, through the real app.

    python -m bench.viewer 100000

Builds a run of N records shaped by the real agent loop (a conversation captured against the
simulated teacher, with pydantic-ai's history, varied per record: prompt, teacher, status, tool
calls), a dead-letter file, a verdicts file and a convert report with drop reasons, then measures
through Starlette's test client (routing, SQLite, templates; no network). Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

WORDS = ["collector", "redis", "lease", "breaker", "sandbox", "grep", "template", "adapter", "verdict", "queue",
         "stream", "worker", "teacher", "tokenizer", "manifest", "progress", "schema", "workspace", "retry", "budget"]
TEACHERS = ["alpha", "beta", "gamma"]
REPEATS = 5


def template_record(root: Path) -> dict[str, Any]:
    """One real conversation: the agent loop, real tools on a small workspace, the simulated teacher."""
    from distill.shared.records import PromptTask
    from distill.shared.settings import DEFAULT_SYSTEM_PROMPT, TeacherConfig
    from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
    from distill.worker.agent import run_conversation
    from distill.worker.toolcore import ToolCore

    workspace = root / "workspace"
    workspace.mkdir()
    (workspace / "collector.py").write_text("\n".join(f"def collector_{n}(): return {n}" for n in range(60)) + "\n")
    teacher = SimTeacher(SimTeacherConfig())
    url = teacher.start()
    try:
        conversation = asyncio.run(run_conversation(
            PromptTask(task_id="t", run="bench", prompt="Where is collector_7 defined?"),
            TeacherConfig(name="alpha", base_url=url, model="sim-teacher"), ToolCore(workspace),
            system_prompt=DEFAULT_SYSTEM_PROMPT,
        ))
    finally:
        teacher.stop()
    return conversation.model_dump(mode="json")


def write_run(run: Path, count: int, template: dict[str, Any]) -> dict[str, Any]:
    from distill.shared.records import DeadLetter
    from distill.shared.verdicts import Verdict, VerdictRecord

    run.mkdir(parents=True)
    one_call = template["messages"][:4] + [template["messages"][-1]]
    drops = []
    with (run / "conversations.jsonl").open("w") as out, (run / "verdicts.jsonl").open("w") as verdicts:
        for index in range(count):
            words = " ".join(WORDS[(index * k) % len(WORDS)] for k in (1, 3, 7))
            record = dict(template)
            record["task_id"] = f"t{index:07d}"
            record["prompt"] = f"Where is {words} handled? (#{index})"
            record["teacher"] = {**template["teacher"], "endpoint": TEACHERS[index % len(TEACHERS)]}
            status = "final_answer" if index % 20 < 17 else "tool_limit" if index % 20 < 19 else "error"
            record["status"] = status
            record["messages"] = template["messages"] if index % 3 else one_call
            out.write(json.dumps(record) + "\n")
            if index % 3 == 0:
                line = VerdictRecord(task_id=record["task_id"], run="bench", created_at=datetime.now(timezone.utc),
                                     verdict=Verdict(passed=index % 2 == 0, method="judge", detail=""))
                verdicts.write(line.model_dump_json() + "\n")
            if status != "final_answer":
                drops.append({"line": index + 1, "task_id": record["task_id"], "reason": "status_not_final_answer",
                              "detail": f"status {status}"})
    with (run / "dead.jsonl").open("w") as out:
        for index in range(count // 100):
            dead = DeadLetter(task_id=f"d{index:07d}", run="bench", prompt=f"Dead prompt {index}", reason="teacher down",
                              error_type="TeacherUnavailable", attempts=3, partial_messages=template["raw_messages"][:2])
            out.write(dead.model_dump_json() + "\n")
    data = run / "train-data"
    data.mkdir()
    report = {"schema_version": 1, "source": str(run / "conversations.jsonl"), "tokenizer": "none", "out_dir": str(data),
              "format": "chat", "max_tool_calls": 5, "max_seq_length": 2048, "split_ratios": [0.8, 0.1, 0.1],
              "records": count, "kept": count - len(drops), "dropped": {"status_not_final_answer": len(drops)},
              "splits": {"train": 0, "valid": 0, "test": 0}, "drops": drops}
    (data / "report.json").write_text(json.dumps(report))
    return {"file_mb": round((run / "conversations.jsonl").stat().st_size / 2**20, 1)}


def timed(client: Any, url: str) -> float:
    """Median milliseconds of REPEATS requests (the first one warms SQLite's page cache)."""
    client.get(url)
    samples = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    return round(statistics.median(samples), 1)


def main(count: int) -> dict[str, Any]:
    from starlette.testclient import TestClient

    from distill.viewer.app import create_app

    process = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="bench-viewer-") as folder:
        root = Path(folder)
        template = template_record(root)
        run = root / "runs" / "big"
        started = time.perf_counter()
        sizes = write_run(run, count, template)
        write_s = time.perf_counter() - started
        rss_before = process.memory_info().rss
        indexes = root / "indexes"
        with TestClient(create_app([root / "runs"], index_dir=indexes)) as client:
            state = client.app.state.viewer  # type: ignore[attr-defined]
            started = time.perf_counter()
            state.index(state.catalog.run("big")).refresh()
            index_s = time.perf_counter() - started
            rss_after = process.memory_info().rss
            started = time.perf_counter()
            client.get("/runs/big")  # the first summary computes; later ones come from the cache
            summary_first_ms = round((time.perf_counter() - started) * 1000, 1)
            base = "/runs/big/records"
            middle = count // 2 + 1
            latencies = {
                "records_first_page": timed(client, base),
                "records_middle_page": timed(client, f"{base}?page={count // 100}"),
                "records_last_page": timed(client, f"{base}?page=999999"),
                "filter_status": timed(client, f"{base}?status=tool_limit"),
                "filter_teacher": timed(client, f"{base}?teacher=beta"),
                "filter_verdict": timed(client, f"{base}?verdict=failed"),
                "filter_drop_kept": timed(client, f"{base}?drop=kept"),
                "filter_tool_calls": timed(client, f"{base}?calls_min=2&calls_max=2"),
                "filter_combined": timed(client, f"{base}?status=final_answer&teacher=gamma&verdict=passed&calls_min=2"),
                "search_rare": timed(client, f"{base}?q=%23{middle}%29"),
                "search_common": timed(client, f"{base}?q=breaker"),
                "search_two_letters": timed(client, f"{base}?q=zz"),
                "conversation_page": timed(client, f"/runs/big/conversation/{middle}"),
                "dead_letter_page": timed(client, "/runs/big/dead/1"),
                "run_summary_page": timed(client, "/runs/big"),
            }
        # A later session over the same run: the kept index is checked and reused, nothing re-read.
        started = time.perf_counter()
        with TestClient(create_app([root / "runs"], index_dir=indexes)) as again:
            state = again.app.state.viewer  # type: ignore[attr-defined]
            reopened = state.index(state.catalog.run("big"))
            reopened.refresh()
            assert reopened.parsed_here == 0
            again.get("/runs/big/records?status=error")
        reopen_s = time.perf_counter() - started
    result = {
        "records": count,
        "reopen_s": round(reopen_s, 2),
        **sizes,
        "write_s": round(write_s, 1),
        "index_s": round(index_s, 1),
        "index_records_per_s": round(count / index_s),
        "index_rss_mb": round((rss_after - rss_before) / 2**20, 1),
        "run_summary_first_ms": summary_first_ms,
        "latency_ms": latencies,
    }
    return result


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)))
