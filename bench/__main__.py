"""Run distill's benchmark and write bench/results/<date>.json, one PNG per figure and bench/README.md.

    python -m bench            # the full benchmark (tens of minutes on a 2-core box)
    python -m bench --quick    # every figure on a tiny size (the test suite's smoke test)

Each measurement runs in a fresh process (Ray joins one cluster per process); figures compare
sizes side by side inside one run and report ratios, since shared machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

BENCH = Path(__file__).resolve().parent
TOKEN_SECONDS = 0.04  # the "tokens" teacher: 25 generated tokens/s per stream
console = Console(stderr=True)


def child(module: str, *args: str, timeout_s: float = 3600) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout_s,
                          cwd=BENCH.parent)
    if done.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plan(quick: bool, with_mlx: bool) -> dict[str, list[tuple[str, list[str]]]]:
    if quick:
        return {
            "efficiency": [
                ("bench.generation", [json.dumps({"concurrency": 4, "latency_s": 0.05, "prompts": 12})]),
                ("bench.generation", [json.dumps({"concurrency": 4, "latency_s": 0.02, "seconds_per_token": 0.001,
                                                  "prompts": 8})]),
            ],
            "scaling": [],
            "tools": [("bench.generation", [json.dumps({"concurrency": 4, "in_flight": 4, "latency_s": 0.05,
                                                        "prompts": 8, "workspace": "tree:200"})])],
            "profile": [("bench.profile", ["--conversations", "16"])],
            "enqueue": [("bench.enqueue", ["1000"])],
            "convert": [("bench.trainer", ["convert", "100"])],
            "viewer": [("bench.viewer", ["2000"])],
            "train": [],
            "mlx_server": [],
        }
    # Two teachers per C. "fixed": every request takes 200 ms, the stress case, which at C=256
    # asks for 1,280 requests/s. "tokens": 200 ms plus 40 ms per generated token (25 tokens/s per
    # stream, what a 30B teacher gives each of many concurrent conversations), about 2.7 s a request,
    # with answer lengths varying +-50% as a real model's do.
    efficiency = [
        ("bench.generation", [json.dumps({"concurrency": c, "latency_s": 0.2, "prompts": n, **teacher})])
        for teacher, sizes in (({}, ((8, 2000), (64, 2000), (256, 2000))),
                               ({"seconds_per_token": TOKEN_SECONDS, "length_jitter": 0.5},
                                ((8, 160), (64, 800), (256, 2000))))
        for c, n in sizes
    ]
    scaling = [
        ("bench.generation", [json.dumps({"concurrency": 8, "latency_s": 0.5, "prompts": 120 * nodes, "nodes": nodes})])
        for nodes in (1, 2, 4)
    ]
    # Tool work in it (issue 13): this checkout and a 5,000-file tree, 8/32/64 conversations in flight
    # on as many teacher slots; then the scenario against a bare asyncio + openai client.
    tools = [
        ("bench.generation", [json.dumps({"concurrency": c, "in_flight": c, "latency_s": 0.2, "prompts": 4 * c,
                                          "workspace": workspace})])
        for workspace in ("repo", "tree:5000") for c in (8, 32, 64)
    ] + [("bench.tool_load", [json.dumps({"prompts": 480, "files": 1000, "latency_s": 1.0, "concurrency": 32})])]
    return {
        "efficiency": efficiency,
        "scaling": scaling,
        "tools": tools,
        "profile": [("bench.profile", [])],
        "enqueue": [("bench.enqueue", [str(n)]) for n in (10_000, 100_000, 1_000_000)],
        "convert": [("bench.trainer", ["convert", "10000"])],
        "viewer": [("bench.viewer", ["100000"])],
        "train": [("bench.trainer", ["train", "60"])],
        "mlx_server": [("bench.mlx_teacher", [json.dumps({"concurrency": c, "prompts": 2 * c})]) for c in (1, 4, 8)]
        if with_mlx else [],
    }


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--no-mlx", action="store_true", help="skip the real mlx_lm.server figure")
    parser.add_argument("--only", nargs="*", help="figures to run (default: all)")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    args = parser.parse_args()
    figures: dict[str, list[dict[str, Any]]] = {}
    for figure, runs in plan(args.quick, not args.no_mlx).items():
        if args.only and figure not in args.only:
            continue
        figures[figure] = []
        for module, module_args in runs:
            console.print(f"[bold]{figure}[/]: {module} {' '.join(module_args)}")
            figures[figure].append(child(module, *module_args))
            console.print(f"  {figures[figure][-1]}", highlight=False)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": __import__("os").cpu_count()},
        "figures": figures,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    json_path = args.out / f"{stamp}.json"
    if args.only and json_path.exists():
        # Re-measuring some figures keeps the rest of the day's run, and says which were redone when.
        earlier = json.loads(json_path.read_text())
        remeasured = {**earlier.get("remeasured", {}), **{name: result["date"] for name in figures}}
        result = {**earlier, "figures": {**earlier["figures"], **figures}, "remeasured": remeasured}
    json_path.write_text(json.dumps(result, indent=2))
    from bench.report import plot_figures, write_readme

    pngs = plot_figures(result, args.out, stamp)
    if not args.quick:
        write_readme(result, BENCH / "README.md", json_path, pngs)
    console.print(f"wrote {json_path} and {len(pngs)} plot(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
