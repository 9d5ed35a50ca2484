"""The viewer's web app: Starlette routes rendering Jinja2 templates (autoescaped), all read-only."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from distill.coordinator.progress import read_progress_snapshot
from distill.coordinator.stats import count_records
from distill.trainer.convert_report import DROP_DESCRIPTIONS, DropReason
from distill.viewer.catalog import Catalog, ConvertOutput, EvalOutput, RunFolder, discover, has_splits
from distill.viewer.evals import SHARES, chart_files, eval_table
from distill.viewer.index import KEPT, NOT_CONVERTED, STATUSES, VERDICTS, Filters, RunIndex
from distill.viewer.learn import LearnError, SplitLocator, Tokenizers, student_view
from distill.viewer.trajectory import conversation_turns, raw_turns, verdict_state

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


@dataclass
class ViewerState:
    paths: list[Path]
    tokenizer: str | None = None
    catalog: Catalog = field(default_factory=Catalog)
    # Where run indexes persist between sessions; None: a temporary folder, gone with the app.
    index_dir: Path | None = None
    scratch: tempfile.TemporaryDirectory[str] | None = None
    indexes: dict[Path, RunIndex] = field(default_factory=dict)
    locators: dict[Path, SplitLocator] = field(default_factory=dict)
    tokenizers: Tokenizers = field(default_factory=Tokenizers)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def rescan(self) -> Catalog:
        catalog = discover(self.paths)
        with self.lock:
            self.catalog = catalog
            for run in catalog.runs:
                index = self.indexes.get(run.path)
                if index is not None:
                    index.run = run  # its convert outputs may have changed
        return catalog

    def index(self, run: RunFolder) -> RunIndex:
        with self.lock:
            if run.path not in self.indexes:
                if self.index_dir is None:
                    self.scratch = tempfile.TemporaryDirectory(prefix="distill-view-")
                    self.index_dir = Path(self.scratch.name)
                self.indexes[run.path] = RunIndex(run, self.index_dir)
            return self.indexes[run.path]

    def locator(self, convert: ConvertOutput) -> SplitLocator:
        with self.lock:
            found = self.locators.get(convert.path)
            if found is None or found.convert is not convert:
                found = self.locators[convert.path] = SplitLocator(convert)
            return found

    def close(self) -> None:
        for index in self.indexes.values():
            index.close()
        if self.scratch is not None:
            self.scratch.cleanup()


def _seconds(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return f"{value:,}" if isinstance(value, int) else str(value)


def _percent(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _templates() -> Jinja2Templates:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every value is text: a tool result holding <script> shows as text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(seconds=_seconds, number=_number, percent=_percent)
    environment.globals.update(
        drop_descriptions={reason.value: text for reason, text in DROP_DESCRIPTIONS.items()},
        query=lambda **values: urlencode({k: v for k, v in values.items() if v not in (None, "")}),
    )
    return Jinja2Templates(env=environment)


def create_app(paths: list[Path], *, tokenizer: str | None = None, index_dir: Path | None = None) -> Starlette:
    """The viewer over `paths` (run folders, convert outputs, eval reports, or folders holding them).

    Run indexes are kept in `index_dir` for later sessions (None: a temporary folder).
    """
    state = ViewerState(paths=[Path(p) for p in paths], tokenizer=tokenizer, index_dir=index_dir)
    state.rescan()
    templates = _templates()

    def page(request: Request, name: str, **context: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"catalog": state.catalog, **context})

    def find_run(request: Request) -> tuple[RunFolder, RunIndex]:
        run_id = request.path_params["run"]
        run = state.catalog.run(run_id) or state.rescan().run(run_id)
        if run is None:
            raise HTTPException(404, f"no run {run_id!r} here")
        return run, state.index(run)

    def home(request: Request) -> HTMLResponse:
        catalog = state.rescan()
        runs = [(run, state.index(run).summary()) for run in catalog.runs]
        loose = [c for c in catalog.converts if not any(c in run.converts for run in catalog.runs)]
        return page(request, "home.html", runs=runs, loose_converts=loose, paths=state.paths)

    def run_page(request: Request) -> HTMLResponse:
        run, index = find_run(request)
        snapshot = read_progress_snapshot(run.path) or {}
        return page(
            request, "run.html", run=run, summary=index.summary(), snapshot=snapshot, verdicts_error=index.verdicts_error,
            endpoints=snapshot.get("endpoints") or {}, convert=run.convert, counts=count_records(run.path),
        )

    def records(request: Request) -> HTMLResponse:
        run, index = find_run(request)
        filters = Filters.from_query(request.query_params)
        number = request.query_params.get("page", "1")
        result = index.page(filters, int(number) if number.isdigit() else 1)
        drop_choices = [KEPT, NOT_CONVERTED, *(reason.value for reason in DropReason)] if run.convert else []
        return page(
            request, "records.html", run=run, filters=filters, result=result, statuses=STATUSES,
            verdicts=VERDICTS, teachers=index.teachers(), drop_choices=drop_choices,
        )

    def record(request: Request) -> HTMLResponse:
        run, index = find_run(request)
        kind, line = request.path_params["kind"], request.path_params["line"]
        if kind not in ("conversation", "dead"):
            raise HTTPException(404, "no such kind of record")
        data = index.record(kind, line)
        if data is None:
            raise HTTPException(404, f"no line {line} in the run's {kind} file")
        verdict = None
        drop = None
        if kind == "conversation" and "_invalid" not in data:
            own = data.get("verdict") if isinstance(data.get("verdict"), dict) else None
            filed = index.verdict_of(data.get("task_id"), data.get("sample"))
            verdict = (
                {**filed, "source": "verdicts.jsonl"} if filed
                else {**own, "state": verdict_state(own), "source": "record"} if own else None
            )
            drop = index.drop_of(line)
        if "_invalid" in data:
            turns = []
        elif kind == "conversation":
            turns = conversation_turns(data)
        else:
            turns = raw_turns(data.get("partial_messages"))
        return page(
            request, "record.html", run=run, kind=kind, line=line, data=data, turns=turns,
            verdict=verdict, drop=drop, neighbours=index.neighbours(kind, line),
        )

    def learn(request: Request) -> HTMLResponse:
        run, index = find_run(request)
        line = request.path_params["line"]
        data = index.record("conversation", line)
        if data is None or "_invalid" in data:
            raise HTTPException(404, f"no conversation on line {line}")
        convert = run.convert
        drop = index.drop_of(line)
        view, problem = None, None
        if convert is None:
            problem = "no convert output for this run: run distill convert, then view its folder too"
        elif (drop or {}).get("reason") != KEPT:
            reason: Any = (drop or {}).get("reason")
            problem = f"convert left this conversation out ({DROP_DESCRIPTIONS.get(reason, reason)}): the student learns nothing from it"
        elif not has_splits(convert):
            problem = f"{convert.path} has no train/valid/test.jsonl"
        else:
            try:
                view = student_view(data, state.locator(convert), state.tokenizers, state.tokenizer,
                                    kept_before=index.kept_before(line))
            except LearnError as error:
                problem = str(error)
        return page(request, "learn.html", run=run, line=line, data=data, view=view, problem=problem, convert=convert)

    def find_eval(request: Request) -> EvalOutput:
        found = state.catalog.eval(request.path_params["eval"]) or state.rescan().eval(request.path_params["eval"])
        if found is None:
            raise HTTPException(404, "no such evaluation")
        return found

    def evaluation(request: Request) -> HTMLResponse:
        found = find_eval(request)
        charts = [(name, title) for name, (_, title) in chart_files(found.path, found.report).items()]
        return page(request, "eval.html", evaluation=found, table=eval_table(found.report), shares=SHARES, charts=charts)

    def chart(request: Request) -> FileResponse:
        # Only the charts an evaluation names: never a path taken from the request.
        evaluation = find_eval(request)
        found = chart_files(evaluation.path, evaluation.report).get(request.path_params["name"])
        if found is None:
            raise HTTPException(404, "no such chart")
        return FileResponse(found[0], media_type="image/png")

    async def not_found(request: Request, error: Exception) -> HTMLResponse:
        detail = getattr(error, "detail", str(error))
        status = getattr(error, "status_code", 500)
        return templates.TemplateResponse(request, "error.html", {"catalog": state.catalog, "detail": detail}, status_code=status)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        state.close()

    app = Starlette(
        routes=[
            Route("/", home),
            Route("/runs/{run}", run_page),
            Route("/runs/{run}/records", records),
            Route("/runs/{run}/{kind}/{line:int}", record),
            Route("/runs/{run}/conversation/{line:int}/learn", learn),
            Route("/evals/{eval}", evaluation),
            Route("/evals/{eval}/charts/{name}", chart),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={HTTPException: not_found},
        lifespan=lifespan,
    )
    app.state.viewer = state
    return app
