"""The built-in tools through the tool core against real files: normal answers, escapes, blocking
files, limits, outcomes, custom tool specs, and a fuzz test."""

from __future__ import annotations

import inspect
import os
import socket
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.shared.settings import GenerationLimits
from distill.worker.custom_tools import ToolSetupError, load_custom_tool
from distill.worker.sandbox import TRUNCATED_MARKER, ToolError, ToolLimits, Workspace
from distill.worker.tool_schemas import BUILTIN_SCHEMAS
from distill.worker.toolcore import ToolCore, check_tools

FAST = ToolLimits(timeout_s=1.0)


def tools(ws: Workspace) -> dict:
    """Each built-in tool as a function of its schema's parameters, answered by the tool core
    (in this process: the pool runs the same `answer` in its tool processes)."""
    core = ToolCore(ws.root, sandbox=ws.limits)

    def tool(name: str):
        signature = inspect.signature(core.offered[name])
        return lambda *args, **kwargs: core.answer(name, dict(signature.bind(*args, **kwargs).arguments)).text

    return {name: tool(name) for name in core.offered}


def write(p: Path, text: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    write(root / "README.md", "# Demo\nHello World\n")
    write(root / "pyproject.toml", '[project]\nname = "demo"\n')
    write(root / "src/app.py", "import os\n\ndef main():\n    print('hello')\n")
    write(root / "src/util/helpers.py", "def helper():\n    return 'Hello again'\n")
    write(root / "src/util/conf.toml", "hello = 1\n")
    write(root / ".git/config", "hello from git\n")
    write(root / "data.bin", b"hello\0binary")
    (root / "empty").mkdir()
    return Workspace(root, FAST)


@pytest.fixture
def outside(tmp_path: Path) -> tuple[Path, str]:
    """A secret the workspace must never reveal, next to (not inside) the workspace."""
    token = uuid.uuid4().hex
    write(tmp_path / "outside/secret.txt", f"hello {token}\n")
    return tmp_path / "outside", token


# ----------------------------------------------------------------- normal answers


def test_grep_output(ws: Workspace) -> None:
    t = tools(ws)
    assert t["grep"]("ello") == (
        "README.md:2: Hello World\n"
        "src/app.py:4:     print('hello')\n"
        "src/util/conf.toml:1: hello = 1\n"
        "src/util/helpers.py:2:     return 'Hello again'"
    )
    assert t["grep"]("^hello", ignore_case=True) == "README.md:2: Hello World\nsrc/util/conf.toml:1: hello = 1"
    assert t["grep"]("hello", path="src/util") == "src/util/conf.toml:1: hello = 1"
    assert t["grep"]("def", path="src/app.py") == "src/app.py:3: def main():"
    assert t["grep"]("nothing-like-this") == "no matches"


def test_grep_glob(ws: Workspace) -> None:
    g = tools(ws)["grep"]
    assert g("ello", glob="*.py") == "src/app.py:4:     print('hello')\nsrc/util/helpers.py:2:     return 'Hello again'"
    assert g("ello", glob="src/util/*") == "src/util/conf.toml:1: hello = 1\nsrc/util/helpers.py:2:     return 'Hello again'"
    assert g("ello", glob="**/*.md") == "README.md:2: Hello World"
    assert g("ello", glob="*.rs") == "no matches"


def test_grep_max_results_and_clipping(ws: Workspace) -> None:
    write(ws.root / "many.txt", "".join(f"x{i}\n" for i in range(10)) + "x" * 1000 + "\n")
    g = tools(ws)["grep"]
    out = g("x", path="many.txt", max_results=3)
    assert out.splitlines() == ["many.txt:1: x0", "many.txt:2: x1", "many.txt:3: x2", out.splitlines()[-1]]
    assert "more matches omitted" in out
    long_line = g("xxxx", path="many.txt")
    assert long_line.startswith("many.txt:11: ") and len(long_line) < 400


def test_grep_skips_vcs_binary_and_symlinks(ws: Workspace, outside: tuple[Path, str]) -> None:
    (ws.root / "link.md").symlink_to(ws.root / "README.md")
    out = tools(ws)["grep"]("hello", ignore_case=True)
    assert ".git" not in out and "data.bin" not in out and "link.md" not in out


def test_read_file(ws: Workspace) -> None:
    r = tools(ws)["read_file"]
    assert r("src/app.py") == "    1| import os\n    2| \n    3| def main():\n    4|     print('hello')"
    assert r("src/app.py", 3, 3) == "    3| def main():"
    assert r("src/app.py", start_line=4, end_line=99) == "    4|     print('hello')"
    write(ws.root / "crlf.txt", b"a\r\nb\xff\r\n")
    assert r("crlf.txt") == "    1| a\n    2| b\ufffd"
    write(ws.root / "blank.txt", "")
    assert r("blank.txt") == "(empty file)"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("src/app.py", 0), "start_line"),
        (("src/app.py", 3, 2), "end_line"),
        (("src/app.py", 5), "past the end"),
        (("src/app.py", "x"), "start_line"),
        (("nope.txt",), "no such file"),
        (("src",), "is a directory"),
        (("data.bin",), "binary file"),
    ],
)
def test_read_file_errors(ws: Workspace, args: tuple, needle: str) -> None:
    out = tools(ws)["read_file"](*args)
    assert out.startswith("error: ") and needle in out


def test_list_dir(ws: Workspace, outside: tuple[Path, str]) -> None:
    (ws.root / "out").symlink_to(outside[0])
    os.mkfifo(ws.root / "pipe")
    ls = tools(ws)["list_dir"]
    assert ls() == "README.md\ndata.bin\nempty/\nout -> (symlink)\npipe (special file)\npyproject.toml\nsrc/"
    assert ls("src") == "app.py\nutil/"
    assert ls("empty") == "(empty directory)"
    assert ls("README.md").startswith("error: not a directory")
    assert ls("out").startswith("error: path leaves the workspace")


def test_find_files(ws: Workspace) -> None:
    f = tools(ws)["find_files"]
    assert f("**/*.py") == "src/app.py\nsrc/util/helpers.py"
    assert f("*.toml") == "pyproject.toml\nsrc/util/conf.toml"
    assert f("src/*.py") == "src/app.py"
    assert f("src/**") == "src/app.py\nsrc/util/conf.toml\nsrc/util/helpers.py"
    assert f("*.rs") == "no files found"
    assert f("config") == "no files found"  # .git is never walked
    for bad in ("../*", "/etc/*", "~/x", "a\0b", ""):
        assert f(bad).startswith("error: ")


def test_tool_schemas_for_pydantic_ai(ws: Workspace) -> None:
    from pydantic_ai import Tool

    expected = {
        "grep": ["pattern", "path", "glob", "ignore_case", "max_results"],
        "read_file": ["path", "start_line", "end_line"],
        "list_dir": ["path"],
        "find_files": ["pattern"],
    }
    for fn in BUILTIN_SCHEMAS.values():
        td = Tool(fn).tool_def
        props = td.parameters_json_schema["properties"]
        assert list(props) == expected[td.name]
        assert td.description and all(p.get("description") for p in props.values()), td.name


def test_resolve(ws: Workspace) -> None:
    assert ws.resolve("src/app.py") == ws.root / "src/app.py"
    assert ws.resolve(".") == ws.root == Path(os.path.realpath(ws.root))
    # `..` is refused outright, even when it would stay inside: simpler to reason about.
    assert tools(ws)["read_file"]("src/../README.md") == "error: '..' is not allowed in paths"
    for bad in ("../x", "/etc/passwd", "~", "~/x", "a\0b", ".git/config", "src/../../x"):
        with pytest.raises(ToolError):
            ws.resolve(bad)


# ----------------------------------------------------------------- escapes and blocking files


def assert_refused(out: str, token: str | None = None) -> None:
    assert out.startswith("error: "), out
    if token:
        assert token not in out


@pytest.mark.timeout(20)
def test_path_escapes(ws: Workspace, outside: tuple[Path, str]) -> None:
    out_dir, token = outside
    root = ws.root
    (root / "sfile").symlink_to(out_dir / "secret.txt")
    (root / "sdir").symlink_to(out_dir)
    (root / "srel").symlink_to("../outside/secret.txt")
    (root / "src/deep").symlink_to("../../outside")
    (root / "gitlink").symlink_to(root / ".git")
    t = tools(ws)
    for p in (
        "../outside/secret.txt",
        str(out_dir / "secret.txt"),
        "~/secret.txt",
        "~",
        "sfile",
        "sdir/secret.txt",
        "srel",
        "src/deep/secret.txt",
        "gitlink/config",
        "secret.txt\0",
    ):
        assert_refused(t["read_file"](p), token)
        assert_refused(t["grep"]("hello", path=p), token)
    for p in ("sdir", "src/deep", "..", str(out_dir), "gitlink"):
        assert_refused(t["list_dir"](p), token)
    # Walking the whole workspace never follows the links out.
    assert token not in t["grep"](".")
    assert token not in t["find_files"]("**")
    assert "secret" not in t["find_files"]("**/secret*")


def test_hardlink_refused(ws: Workspace, outside: tuple[Path, str]) -> None:
    out_dir, token = outside
    try:
        os.link(out_dir / "secret.txt", ws.root / "hard.txt")
    except OSError as e:
        pytest.skip(f"cannot hardlink here: {e}")
    t = tools(ws)
    assert t["read_file"]("hard.txt") == "error: hard-linked file refused: hard.txt"
    assert token not in t["grep"]("hello")
    assert token not in t["grep"]("hello", path="hard.txt")
    assert "hard.txt" in t["grep"](".", glob="hard.txt")  # the skip is reported, the content is not


@pytest.mark.timeout(20)
def test_fifo_and_devices_never_block(ws: Workspace) -> None:
    os.mkfifo(ws.root / "fifo")  # no writer: a plain open() would block forever
    (ws.root / "zero").symlink_to("/dev/zero")
    (ws.root / "stdin").symlink_to("/proc/self/fd/0")
    t = tools(ws)  # a blocking open would hang: the test's timeout catches that
    assert t["read_file"]("fifo") == "error: not a regular file: fifo"
    assert t["grep"]("x", path="fifo").startswith("error: not a regular file")
    assert_refused(t["read_file"]("zero"))
    assert_refused(t["grep"]("x", path="zero"))
    assert_refused(t["read_file"]("stdin"))
    assert t["grep"]("Hello") == "README.md:2: Hello World\nsrc/util/helpers.py:2:     return 'Hello again'"
    assert "fifo" not in t["find_files"]("*")


@pytest.mark.timeout(20)
def test_socket_and_device_node(ws: Workspace) -> None:
    t = tools(ws)
    sock_path = ws.root / "s.sock"
    if len(str(sock_path)) < 100:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(sock_path))
            assert t["read_file"]("s.sock") == "error: not a regular file: s.sock"
    try:
        os.mknod(ws.root / "zero_node", 0o600 | 0o020000, os.makedev(1, 5))  # char device = /dev/zero
    except (OSError, AttributeError):
        return
    assert t["read_file"]("zero_node") == "error: not a regular file: zero_node"
    assert t["grep"]("x") == "no matches"


# ----------------------------------------------------------------- limits


def test_huge_file(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, ToolLimits(timeout_s=1.0, max_file_bytes=1000))
    write(tmp_path / "big.log", "needle line\n" * 500)
    t = tools(ws)
    out = t["grep"]("needle")
    assert out.startswith("no matches") and "larger than 1000 bytes: big.log" in out
    read = t["read_file"]("big.log")
    assert read.splitlines()[0] == "    1| needle line"
    assert "[file is 6000 bytes; only the first 1000 bytes were read]" in read


def test_huge_output_capped(tmp_path: Path) -> None:
    cap = 2000
    ws = Workspace(tmp_path, ToolLimits(timeout_s=1.0, max_output_chars=cap))
    write(tmp_path / "lines.txt", "some text here\n" * 3000)
    for i in range(300):
        write(tmp_path / f"d/f{i:03}.txt", "")
    t = tools(ws)
    for out in (
        t["read_file"]("lines.txt"),
        t["grep"]("text", max_results=5000),
        t["find_files"]("**"),
        t["list_dir"]("d"),
    ):
        assert len(out) <= cap
        assert TRUNCATED_MARKER in out.splitlines()[-1]
    assert t["read_file"]("lines.txt", 1, 2) == "    1| some text here\n    2| some text here"


def test_file_scan_limit(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, ToolLimits(timeout_s=1.0, max_files_scanned=10))
    for i in range(30):
        write(tmp_path / f"f{i:02}.txt", "x\n")
    out = tools(ws)["grep"]("x")
    assert out.count("\n") == 10 and "stopped after scanning 10 files" in out
    assert "f09.txt" in out and "f10.txt" not in out
    assert "stopped after scanning 10 files" in tools(ws)["find_files"]("*.txt")


def test_overall_deadline(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "x\n")
    out = tools(Workspace(tmp_path, ToolLimits(timeout_s=0.0)))["grep"]("x")
    assert "time limit" in out


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern", [r"(a|aa)+$", r"(a+)+b", r"(?:[ab]+c?){50}$"])
def test_catastrophic_regex_times_out(tmp_path: Path, pattern: str) -> None:
    write(tmp_path / "long.txt", "a" * 5000 + "!\n")
    ws = Workspace(tmp_path, ToolLimits(timeout_s=0.5))
    # The tool's own answer says its time limit stopped the search; the test's timeout catches a hang.
    out = tools(ws)["grep"](pattern)
    assert out.startswith("error: pattern timed out")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("pattern", ["(", "[a-", "a{2,1}", "a{1000000000}", "((a{1000}){1000}){1000}", "x" * 2000])
def test_bad_regex(ws: Workspace, pattern: str) -> None:
    out = tools(ws)["grep"](pattern)
    assert out.startswith("error: ") and ("bad regex" in out or "longer than" in out)


def test_determinism(ws: Workspace) -> None:
    calls = [
        ("grep", ("hello",), {"ignore_case": True}),
        ("grep", ("(",), {}),
        ("read_file", ("src/app.py",), {}),
        ("list_dir", (".",), {}),
        ("find_files", ("**/*",), {}),
        ("read_file", ("missing",), {}),
    ]
    first = [tools(ws)[n](*a, **k) for n, a, k in calls]
    again = [tools(Workspace(ws.root, FAST))[n](*a, **k) for n, a, k in calls]
    assert first == again


def test_tools_never_raise_on_wrong_types(ws: Workspace) -> None:
    t = tools(ws)
    for fn, args in (
        (t["grep"], (None,)),
        (t["grep"], ("x", 5)),
        (t["grep"], ("x", ".", None, False, 0)),
        (t["read_file"], (b"README.md",)),
        (t["list_dir"], (None,)),
        (t["find_files"], (3,)),
    ):
        assert fn(*args).startswith("error: ")


def test_load_custom_tool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "mytools_pkg/__init__.py", "")
    write(tmp_path / "mytools_pkg/mod.py", "def shout(text: str) -> str:\n    return text.upper()\nVALUE = 3\n")
    write(tmp_path / "broken_mod.py", "raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_custom_tool("mytools_pkg.mod:shout")("hi") == "HI"
    assert load_custom_tool("os.path:join") is os.path.join
    for spec, needle in (
        ("mytools_pkg.mod", "package.module:function"),
        ("no_such_module_xyz:f", "cannot import"),
        ("broken_mod:f", "boom"),
        ("mytools_pkg.mod:missing", "no attribute"),
        ("mytools_pkg.mod:VALUE", "not callable"),
    ):
        with pytest.raises(ToolSetupError, match=needle):
            load_custom_tool(spec)
    sys.modules.pop("broken_mod", None)


# ----------------------------------------------------------------- property-based


CAP = 1500
TIMEOUT = 0.3


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("world")
    token = uuid.uuid4().hex
    out = base / "outside"
    write(out / "secret.txt", f"hello {token}\n")
    write(out / "sub/secret2.txt", f"{token} again\n")
    root = base / "ws"
    write(root / "a.txt", "hello world\nalpha beta\n")
    write(root / "dir/b.py", "def f():\n    return 'hello'\n")
    write(root / "ünï/çødé.txt", "unicode ✓\n")
    write(root / "long.txt", "a" * 3000 + "!\n")
    write(root / "bin.dat", b"\0\1\2hello")
    write(root / ".git/config", f"{token}\n")  # stands in for credentials in a repo's config
    (root / "link_file").symlink_to(out / "secret.txt")
    (root / "link_dir").symlink_to(out)
    (root / "dir/rel_link").symlink_to("../../outside/sub")
    (root / "zero").symlink_to("/dev/zero")
    (root / "loop").symlink_to("loop")
    os.mkfifo(root / "fifo")
    try:
        os.link(out / "secret.txt", root / "hard.txt")
    except OSError:
        pass
    ws = Workspace(root, ToolLimits(timeout_s=TIMEOUT, max_output_chars=CAP))
    return {"ws": ws, "tools": tools(ws), "token": token, "outside": str(out)}


FRAGMENTS = [
    "", ".", "..", "~", "\0", "/", "//", "a.txt", "dir", "b.py", "link_file", "link_dir", "rel_link",
    "secret.txt", "sub", "secret2.txt", "hard.txt", "fifo", "zero", "loop", ".git", "config",
    "ünï", "çødé.txt", "long.txt", "bin.dat", "outside", "ws", "*", "**", "/dev/zero", "/etc/passwd",
]  # fmt: skip
segment = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6))
paths = st.one_of(
    st.lists(segment, max_size=5).map("/".join),
    st.builds(lambda p: "/" + p, st.lists(segment, max_size=4).map("/".join)),
    st.just("OUTSIDE"),  # replaced by the real absolute path of the outside dir
)
patterns = st.one_of(
    st.sampled_from([".", ".*", "", "hello", "(a|aa)+$", "(", "[", "\\", "a{99999}", "[0-9a-f]{32}", "(?s).*"]),
    st.text(max_size=12),
)
lines = st.one_of(st.none(), st.integers(-3, 10_000))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=paths,
    pattern=patterns,
    glob=st.one_of(st.none(), segment, paths),
    ignore_case=st.booleans(),
    max_results=st.integers(-1, 500),
    start=lines,
    end=lines,
)
def test_fuzz_tools_are_safe(world: dict, path, pattern, glob, ignore_case, max_results, start, end) -> None:
    path = path.replace("OUTSIDE", world["outside"])
    if isinstance(glob, str):
        glob = glob.replace("OUTSIDE", world["outside"])
    t, token = world["tools"], world["token"]
    calls = [
        lambda: t["grep"](pattern, path, glob, ignore_case, max_results),
        lambda: t["grep"](pattern),
        lambda: t["read_file"](path, 1 if start is None else start, end),
        lambda: t["list_dir"](path),
        lambda: t["find_files"](path),
        lambda: t["find_files"](glob or "*"),
    ]
    for call in calls:
        out = call()
        assert isinstance(out, str)
        assert len(out) <= CAP + 100
        assert token not in out


# ----------------------------------------------------------------- the core: outcomes, custom tools, preflight


CUSTOM_MODULE = '''
def shout(text: str) -> str:
    """Upper-cases the text."""
    return text.upper()

def empty_handed() -> str:
    """Answers as grep does when it finds nothing."""
    return "no matches"

def boom(reason: str) -> str:
    """Always raises."""
    raise ValueError(reason)

def flood() -> str:
    """Far more text than any answer may hold."""
    return "word " * 100_000

def gone() -> str:
    """Its backing service is down: no answer was had."""
    from distill.worker.toolcore import ToolUnavailable
    raise ToolUnavailable("the ticket service did not answer")

def grep(pattern: str) -> str:
    """A second tool called grep."""
    return pattern

class Holder:
    @staticmethod
    def shout(text: str) -> str:
        """Another tool called shout."""
        return text

def opaque(handle: "socket.socket") -> str:
    """No JSON schema can describe its parameter."""
    return ""

import socket
'''


@pytest.fixture
def custom_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"core_tools_{uuid.uuid4().hex[:8]}"
    write(tmp_path / "mods" / f"{name}.py", CUSTOM_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    return name


def test_nothing_found_is_a_real_answer_and_wrong_input_a_tool_error(ws: Workspace) -> None:
    core = ToolCore(ws.root, sandbox=ws.limits)
    # Nothing found is the tool's answer to a good question: ok, like any other answer.
    assert core.answer("grep", {"pattern": "nothing-like-this"}) == ("ok", "no matches")
    assert core.answer("grep", {"pattern": "ello", "glob": "*.rs"}).outcome == "ok"
    assert core.answer("find_files", {"pattern": "*.rs"}) == ("ok", "no files found")
    assert core.answer("list_dir", {"path": "empty"}) == ("ok", "(empty directory)")
    # A file whose line reads "no matches" is found, not mistaken for an empty answer.
    write(ws.root / "notes.txt", "no matches\n")
    assert core.answer("grep", {"pattern": "^no matches$"}) == ("ok", "notes.txt:1: no matches")
    # The tool saying the input is wrong: tool_error, the text the teacher sees.
    for name, arguments, needle in (
        ("grep", {"pattern": "("}, "bad regex"),
        ("grep", {"pattern": "x", "path": "missing"}, "no such file"),
        ("read_file", {"path": "../outside/secret.txt"}, "'..' is not allowed"),
        ("read_file", {"path": "src"}, "is a directory"),
        ("find_files", {"pattern": "/etc/*"}, "relative to the workspace"),
        ("grep", {"pattern": "x", "colour": "red"}, "unexpected keyword argument"),
        ("rm_rf", {"path": "."}, "unknown tool 'rm_rf'"),
    ):
        outcome, text = core.answer(name, arguments)
        assert outcome == "tool_error" and text.startswith("error: ") and needle in text, (name, text)


def test_a_walk_cut_short_is_an_infra_error_never_a_partial_answer(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "x\n")
    core = ToolCore(tmp_path, sandbox=ToolLimits(timeout_s=0.0))
    for name, arguments in (("grep", {"pattern": "x"}), ("find_files", {"pattern": "*.txt"})):
        outcome, text = core.answer(name, arguments)
        assert outcome == "infra_error" and "time limit" in text and "a.txt" not in text


def test_only_the_offered_builtins_answer(ws: Workspace) -> None:
    core = ToolCore(ws.root, limits=GenerationLimits(builtin_tools=["read_file"], tool_docs="brief"))
    assert list(core.offered) == ["read_file"]
    assert [s["function"]["name"] for s in core.schemas] == ["read_file"]
    assert core.answer("grep", {"pattern": "hello"}) == ("tool_error", "error: unknown tool 'grep'")
    assert core.answer("read_file", {"path": "src/app.py", "end_line": 1}) == ("ok", "    1| import os")


def test_custom_tools_get_the_same_outcomes_and_cap(tmp_path: Path, custom_module: str) -> None:
    names = ("shout", "empty_handed", "boom", "flood", "gone")
    core = ToolCore(tmp_path, [f"{custom_module}:{name}" for name in names], GenerationLimits(tool_max_output_chars=500))
    assert list(core.offered) == ["grep", "read_file", "list_dir", "find_files", *names]
    assert core.answer("shout", {"text": "hi"}) == ("ok", "HI")
    assert core.answer("empty_handed", {}) == ("ok", "no matches")
    assert core.answer("boom", {"reason": "disk on fire"}) == ("tool_error", "error: ValueError: disk on fire")
    assert core.answer("shout", {"txt": "hi"}).outcome == "tool_error"
    # A source whose machinery failed has no answer to give: ours to retry, never the teacher's to see.
    assert core.answer("gone", {}) == ("infra_error", "the ticket service did not answer")
    outcome, text = core.answer("flood", {})
    assert outcome == "ok" and len(text) <= 500 and TRUNCATED_MARKER in text.splitlines()[-1]


@pytest.mark.parametrize(("names", "needle"), [
    (["grep"], "named 'grep', like the built-in tool"),
    (["shout", "Holder.shout"], "are both named 'shout'"),
    (["opaque"], "no JSON schema can be made"),
    (["missing_function"], "has no attribute"),
])
def test_a_custom_tool_the_teacher_could_not_call_is_refused_before_the_run(
    tmp_path: Path, custom_module: str, names: list[str], needle: str
) -> None:
    with pytest.raises(ToolSetupError, match=needle) as refused:
        check_tools(tmp_path, [f"{custom_module}:{name}" for name in names], GenerationLimits())
    assert "\n" not in str(refused.value)


def test_a_custom_tool_may_take_the_name_of_a_builtin_left_out(tmp_path: Path, custom_module: str) -> None:
    core = check_tools(tmp_path, [f"{custom_module}:grep"], GenerationLimits(builtin_tools=["read_file"]))
    assert list(core.offered) == ["read_file", "grep"]
    assert core.answer("grep", {"pattern": "mine"}) == ("ok", "mine")


def test_a_workspace_that_is_no_folder_is_a_setup_error(tmp_path: Path) -> None:
    write(tmp_path / "file.txt", "x")
    for root in (tmp_path / "missing", tmp_path / "file.txt"):
        with pytest.raises(ToolSetupError, match="not a directory"):
            ToolCore(root)
