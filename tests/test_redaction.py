"""Secrets in the workspace and the prompts: found, tagged, withheld, and never written anywhere."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from starlette.testclient import TestClient
from trainer_fixtures import conversation, tiny_model, write_jsonl  # noqa: F401 - fixture

from distill.coordinator.collector import CONVERSATIONS_FILE
from distill.coordinator.progress import run_status
from distill.coordinator.run import generate
from distill.coordinator.stats import count_records
from distill.shared.connection import connect
from distill.shared.prompts import read_prompts
from distill.shared.records import PromptTask
from distill.shared.secrets import Redactor, SecretsConfig, SecretTags, new_key
from distill.shared.settings import Settings, TeacherConfig
from distill.teachers.sim_teacher import SimTeacher, SimTeacherConfig
from distill.trainer.convert import convert
from distill.trainer.convert_report import DropReason
from distill.viewer.app import create_app
from distill.viewer.catalog import discover
from distill.viewer.index import RunIndex
from distill.views import status_table, summary_table
from distill.worker.sandbox import ToolLimits
from distill.worker.tool_pool import ToolPool
from distill.worker.toolcore import ToolCore

# Made-up values in the real formats (none is a live credential).
AWS_KEY_ID = "AKIAQX7RTY2NBV4LMZPD"
AWS_SECRET = "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"
GITHUB_TOKEN = "ghp_R8kL2mN4pQ6sT8vX0zB2dF4hJ6kM8nP0rT2v"
LONG_LINE_TOKEN = "sk-proj-Zq4Wm8Yt2Rk6Hn0Lp3Vx7Cb1Dj5Fg9Ks2T3BlbkFJAbCdEf12345678901234567890"
PRIVATE_KEY_BODY = [
    "MIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MaOhRgEpOmFqRmCo",
    "xkzPq9T2v6T0YbXn2rM4oVb0tOy3kT1mhvD3Ud0P0LqLmQmCkNNyW7WvqfVq2Efa",
    "8m0qGSZ0aDmqBW1DJF9QmVyAcHfGbVUqUxDaJ5cHJz1RlSfNRzUEHhQ9Tq3mYhKc",
]
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(PRIVATE_KEY_BODY) + "\n-----END RSA PRIVATE KEY-----\n"
PROMPT_SECRET = "ghp_P9xC3vB7nM1qW5eR8tY2uI6oL4kJ0hG3fD5s"
RAW_VALUES = [AWS_KEY_ID, AWS_SECRET, GITHUB_TOKEN, LONG_LINE_TOKEN, *PRIVATE_KEY_BODY, PROMPT_SECRET]

# Ordinary code that looks a little like secrets and must stay as it is.
ORDINARY = {
    "package-lock.json": '{\n  "node_modules/left-pad": {\n    "version": "1.3.0",\n'
    '    "integrity": "sha512-XI5MPzVNApjAyhQzphX8BkmKsKUxD4LdyK24iZeQ8ur6RJrk9KAn7ZHMn8Yo/b5PTL5GKHtcufnLedVwLwGg4Q=="\n  }\n}\n',
    "poetry.lock": '[[package]]\nname = "idna"\nfiles = [\n'
    '    {file = "idna-3.7-py3-none-any.whl", hash = "sha256:82fee1fc78add43492d3a1898bfa6d8a904cc97d8427f683ed8e798d07761aa0"},\n]\n',
    "Cargo.lock": '[[package]]\nname = "serde"\nchecksum = "3fb1c873e1b9b056a4dc4c0c198b24c3ffa059243875552b2bd0933b1aee4ce2"\n',
    "ids.py": 'REQUEST_ID = "123e4567-e89b-12d3-a456-426614174000"\nNAMESPACE = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")\n'
    "def resolve_authentication_token_refresh_interval_for_service_account_v2(x):\n"
    "    token = get_refresh_token_v2(x)\n    api_key_env = \"OPENAI_API_KEY\"\n    max_tokens = 1024\n"
    "    secret_key = settings.SECRET_KEY\n    password = os.environ[\"DB_PASSWORD\"]\n    return token\n",
}


def make_workspace(root: Path) -> Path:
    (root / "app").mkdir(parents=True)
    (root / ".env").write_text(f"AWS_ACCESS_KEY_ID={AWS_KEY_ID}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}\nREGION=eu-west-1\n")
    (root / "app" / "github_client.py").write_text(
        "import requests\n\n"
        f'GITHUB_TOKEN = "{GITHUB_TOKEN}"\n\n'
        "def fetch_repo(name):\n    return requests.get(f'https://api.github.com/repos/{name}',\n"
        "                        headers={'Authorization': f'token {GITHUB_TOKEN}'})\n"
    )
    (root / "deploy.pem").write_text(PRIVATE_KEY)
    # The key block inside an ordinary file too: a grep hit on a body line must show none of it.
    (root / "app" / "fixtures.py").write_text(f'KEY = """\n{PRIVATE_KEY}"""\nAFTER_THE_KEY = 1\n')
    # A secret in the middle of a line far longer than the tools show (they clip at 300 characters).
    (root / "app" / "config.py").write_text("SETTINGS = {" + "'pad': 'x', " * 22 + f"'openai': '{LONG_LINE_TOKEN}', "
                                             + "'more': 'y', " * 40 + "}\n")
    for name, text in ORDINARY.items():
        (root / name).write_text(text)
    return root


def redactor(**config: Any) -> Redactor:
    return Redactor(SecretsConfig(**config), new_key())


def tagged(text: str, rules: Redactor | None = None, tags: SecretTags | None = None) -> str:
    return (tags or SecretTags()).apply((rules or redactor()).redact(text)[0])


# --- detection ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "kind"), [
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", "aws-secret-access-key"),
    (f'key_id = "{AWS_KEY_ID}"', "aws-access-key"),
    (f'GITHUB_TOKEN = "{GITHUB_TOKEN}"', "github-token"),
    (f"x = 1; client = Client('{LONG_LINE_TOKEN}')", "openai-token"),
    (PRIVATE_KEY, "private-key"),
    ('db_password = "correct-horse-battery"', "db-password"),
    ('"stripe_secret": "rk_prod_9fK2mX8qL4vN7pR1tZ6w"', "stripe-secret"),
    ("auth = eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "json-web-token"),
])
def test_secrets_are_found_and_tagged(text: str, kind: str) -> None:
    out = tagged(text)
    assert f"[REDACTED {kind} #1]" in out
    for value in RAW_VALUES:
        assert value not in out


@pytest.mark.parametrize("name", sorted(ORDINARY))
def test_ordinary_code_is_left_alone(name: str) -> None:
    """Lock-file hashes, UUIDs, long identifiers and names of secrets (not their values)."""
    assert redactor().findings(ORDINARY[name]) == []
    assert tagged(ORDINARY[name]) == ORDINARY[name]


def test_same_value_same_tag_within_a_conversation_and_numbered_per_conversation() -> None:
    rules = redactor()
    first, second = SecretTags(), SecretTags()
    a = tagged(f"token: {GITHUB_TOKEN}\nAWS_SECRET_ACCESS_KEY={AWS_SECRET}", rules, first)
    b = tagged(f"again {GITHUB_TOKEN}", rules, first)
    c = tagged(f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", rules, second)
    assert "[REDACTED github-token #1]" in a and "[REDACTED aws-secret-access-key #2]" in a
    assert b == "again [REDACTED github-token #1]"
    assert c == "AWS_SECRET_ACCESS_KEY=[REDACTED aws-secret-access-key #1]"  # another conversation's own numbers
    assert first.count == 2 and second.count == 1
    # A conversation continued from a history that already holds tags numbers after them.
    continued = SecretTags(["I saw [REDACTED github-token #3] there"])
    assert tagged(f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}", rules, continued).endswith("#4]")


def test_markers_from_another_pool_key_do_not_collide() -> None:
    """Fingerprints are keyed: two pools (two keys) give one value different markers."""
    one, two = redactor().redact(GITHUB_TOKEN)[0], redactor().redact(GITHUB_TOKEN)[0]
    assert one != two and GITHUB_TOKEN not in one + two


def test_a_marker_cut_by_the_length_cap_shows_as_a_bare_tag() -> None:
    marker = redactor().redact(f"x {GITHUB_TOKEN}")[0]
    assert SecretTags().apply(marker[:12] + "\n[truncated]") == "x [REDACTED]\n[truncated]"
    assert SecretTags().apply(marker[:20] + "...") == "x [REDACTED]..."  # a clipped grep line


def test_allow_list_and_extra_patterns() -> None:
    rules = redactor(allow=[AWS_KEY_ID], patterns=[r"internal-([0-9a-f]{24})"])
    out = tagged(f"id {AWS_KEY_ID} and internal-0123456789abcdef01234567", rules)
    assert AWS_KEY_ID in out
    assert "internal-[REDACTED custom-secret #1]" in out
    assert redactor(enabled=False).findings(f"token {GITHUB_TOKEN}") == []


def test_bad_extra_pattern_is_refused_with_its_field() -> None:
    with pytest.raises(ValueError, match="is not a regular expression"):
        SecretsConfig(patterns=["(unclosed"])


@pytest.mark.parametrize(("path", "withheld"), [
    (".env", True), ("app/.env.production", True), ("prod.env", True), ("deploy.pem", True), ("tls/server.key", True),
    ("home/.ssh/id_rsa", True), (".netrc", True), ("home/.aws/credentials", True),
    (".env.example", False), ("home/.ssh/id_rsa.pub", False), ("app/env.py", False), ("keys.py", False),
    ("credentials.md", False),
])
def test_files_that_hold_secrets_by_nature(path: str, withheld: bool) -> None:
    assert redactor().withholds(path) is withheld
    assert redactor(withhold_files=["*.secret.yaml"]).withholds("ops/db.secret.yaml")


# --- the tools ---------------------------------------------------------------------------------


def answer(core: ToolCore, name: str, tags: SecretTags | None = None, **arguments: Any) -> tuple[str, str]:
    outcome, text = core.answer(name, arguments)
    return outcome, (tags or SecretTags()).apply(text)


def test_tools_withhold_and_redact(tmp_path: Path) -> None:
    ws = ToolCore(make_workspace(tmp_path / "ws"), sandbox=ToolLimits(timeout_s=5.0))
    outcome, text = answer(ws, "read_file", path=".env")
    assert outcome == "tool_error" and ".env is withheld" in text and AWS_SECRET not in text
    # Names stay visible: the teacher knows the file is there.
    assert ".env" in answer(ws, "list_dir", path=".")[1]
    _, source = answer(ws, "read_file", path="app/github_client.py")
    assert '3| GITHUB_TOKEN = "[REDACTED github-token #1]"' in source
    # grep as an oracle: a pattern for the secret's characters finds nothing.
    assert answer(ws, "grep", pattern="ghp_R8k")[1].startswith("no matches\n[skipped 2 files withheld")
    tags = SecretTags()
    _, hits = answer(ws, "grep", tags, pattern="GITHUB_TOKEN|AWS_|MII|openai")
    assert "[skipped 2 files withheld because they hold secrets: .env, deploy.pem]" in hits
    assert tags.count == 3  # two withheld files and one token
    # A key body line inside an ordinary file is part of a redacted block: no hit shows any of it.
    _, fixtures = answer(ws, "read_file", path="app/fixtures.py")
    assert "[REDACTED private-key #1]" in fixtures and "AFTER_THE_KEY" in fixtures
    # Line numbers stay true after a redacted multi-line value.
    assert "    8| AFTER_THE_KEY = 1" in fixtures and "bytes were read" not in fixtures
    # The long line is clipped after the secret was replaced: no prefix of it survives the clip.
    _, config = answer(ws, "read_file", path="app/config.py")
    assert "[REDACTED openai-token #1]" in config
    for value in RAW_VALUES:
        for text in (source, hits, fixtures, config):
            assert value[:12] not in text
    # The same reads with the scan off do show the values: the checks above could fail.
    off = ToolCore(tmp_path / "ws", sandbox=ToolLimits(timeout_s=5.0, secrets=SecretsConfig(enabled=False)))
    assert GITHUB_TOKEN in answer(off, "read_file", path="app/github_client.py")[1]
    assert AWS_SECRET in answer(off, "read_file", path=".env")[1]
    assert PRIVATE_KEY_BODY[1] in answer(off, "grep", pattern="xkzPq9")[1]


LEAKY_TOOL = f'''
def deploy_status(service: str = "api") -> str:
    """What the deploy system says about a service."""
    return "service " + service + " ok; deploy key {GITHUB_TOKEN}; again {GITHUB_TOKEN}"
'''


def test_a_custom_tools_answer_is_redacted_before_it_leaves_the_tool_process(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "pkgs"
    package.mkdir()
    (package / "leaky_tools_secrets.py").write_text(LEAKY_TOOL)
    monkeypatch.syspath_prepend(str(package))
    pool = ToolPool(ToolCore(tmp_path, ["leaky_tools_secrets:deploy_status"]), processes=1)
    try:
        run = asyncio.run(pool.call("deploy_status", {"service": "web"}))
    finally:
        pool.close()
    assert GITHUB_TOKEN not in run.text and run.outcome == "ok"
    tags = SecretTags()
    assert tags.apply(run.text) == "service web ok; deploy key [REDACTED github-token #1]; again [REDACTED github-token #1]"
    assert tags.count == 1


# --- prompts -----------------------------------------------------------------------------------


def test_prompt_and_history_secrets_are_redacted_before_queueing(tmp_path: Path) -> None:
    line = {"prompt": f"Why does {PROMPT_SECRET} fail?", "system": f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}",
            "history": [{"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "grep", "arguments": {"pattern": GITHUB_TOKEN}}}]},
                {"role": "tool", "tool_call_id": "c1", "content": f"a.py:1: {GITHUB_TOKEN}", "outcome": "ok"}]}
    path = write_jsonl(tmp_path / "p.jsonl", [line])
    [task] = list(read_prompts(path, "r"))
    assert isinstance(task, PromptTask)
    dumped = task.model_dump_json()
    for value in RAW_VALUES:
        assert value not in dumped
    assert task.prompt == "Why does [REDACTED github-token #1] fail?"
    # One table per line: the token in the call and in its result get the same tag.
    assert "[REDACTED github-token #3]" in dumped.split('"history"')[1]


def test_prompt_secret_refused_with_file_line_and_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "fine"}, {"prompt": "ok", "system": f"use {GITHUB_TOKEN}"}])
    first, bad = list(read_prompts(path, "r", SecretsConfig(prompts="refuse")))
    assert isinstance(first, PromptTask)
    assert str(bad) == f"{path}:2: field system: holds a secret (github-token); remove it, or set [secrets] prompts = \"redact\""
    assert GITHUB_TOKEN not in str(bad)


# --- end to end --------------------------------------------------------------------------------


CALLS = {
    "env-file": [("read_file", {"path": ".env"}), ("grep", {"pattern": "AWS_SECRET_ACCESS_KEY"})],
    "github-module": [("grep", {"pattern": "GITHUB_TOKEN"}), ("read_file", {"path": "app/github_client.py"})],
    "pem-key": [("read_file", {"path": "deploy.pem"}), ("grep", {"pattern": "MIIE|xkzPq9"})],
    "long-line": [("grep", {"pattern": "openai"}), ("read_file", {"path": "app/config.py"})],
    "split-key": [("grep", {"pattern": "xkzPq9T2v6"}), ("read_file", {"path": "app/fixtures.py"})],
    "ordinary": [("read_file", {"path": "poetry.lock"}), ("read_file", {"path": "ids.py"})],
}


def rendered(table: Any) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(table)
    return console.export_text()


def redis_contents(client: Any, pattern: str) -> str:
    """Everything the run's keys hold now, as text (the append-only file holds their history)."""
    out = []
    for key in client.scan_iter(match=pattern):
        kind = client.type(key)
        if kind == "stream":
            out.append(repr(client.xrange(key)))
        elif kind == "hash":
            out.append(repr(client.hgetall(key)))
        elif kind in ("set", "zset"):
            out.append(repr(client.smembers(key) if kind == "set" else client.zrange(key, 0, -1)))
        elif kind == "string":
            out.append(repr(client.get(key)))
        elif kind == "list":
            out.append(repr(client.lrange(key, 0, -1)))
    assert out, "the run left no keys to search"
    return "\n".join(out)


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def test_a_run_on_a_workspace_with_secrets_writes_and_sends_none(
    tmp_path, ray_session, redis_url, redis_server, run_name
) -> None:
    workspace = make_workspace(tmp_path / "ws")
    request_log = tmp_path / "requests.jsonl"
    client = connect(redis_url)
    # Every write of this run on disk before the append-only file is searched.
    client.config_set("appendfsync", "always")
    teacher = SimTeacher(SimTeacherConfig(latency_s=0.01, calls={k: list(v) for k, v in CALLS.items()},
                                          request_log=str(request_log)))
    teacher.start()
    prompts = [{"id": key, "prompt": f"{key}: what does this part of the code hold?"} for key in CALLS]
    prompts.append({"id": "quoted", "prompt": f"ordinary: is {PROMPT_SECRET} still used?"})
    settings = Settings(run=run_name, out_dir=tmp_path / "runs", workspace=workspace, redis_url=redis_url,
                        teachers=[TeacherConfig(name="sim", base_url=teacher.base_url, model="sim", timeout_s=10)],
                        concurrency=4)
    try:
        result = generate(settings, write_jsonl(tmp_path / "prompts.jsonl", prompts))
    finally:
        teacher.stop()
        client.config_set("appendfsync", "everysec")

    # Every prompt ends exactly once.
    assert (result.total, result.conversations, result.dead) == (7, 7, 0)
    records = [json.loads(line) for line in (settings.run_dir() / CONVERSATIONS_FILE).read_text().splitlines()]
    assert sorted(r["task_id"] for r in records) == sorted(p["id"] for p in prompts)
    by_id = {r["task_id"]: r for r in records}
    # The teacher read real answers: a withheld file is a tool_error it can act on, code is still code.
    env_read = next(m for m in by_id["env-file"]["messages"] if m["role"] == "tool")
    assert env_read["outcome"] == "tool_error" and "is withheld" in env_read["content"]
    assert "[REDACTED github-token #1]" in json.dumps(by_id["github-module"]["messages"])
    assert by_id["ordinary"]["redactions"] == 0
    ordinary = json.dumps(by_id["ordinary"]["messages"])
    assert "82fee1fc78add43492d3a1898bfa6d8a904cc97d8427f683ed8e798d07761aa0" in ordinary
    assert "123e4567-e89b-12d3-a456-426614174000" in ordinary and "get_refresh_token_v2(x)" in ordinary
    assert by_id["quoted"]["redactions"] == 1 and "[REDACTED github-token #1]" in by_id["quoted"]["prompt"]
    assert all(by_id[key]["redactions"] >= 1 for key in ("env-file", "github-module", "pem-key", "long-line", "split-key"))
    # The summary says how many were withheld (the files count them too).
    assert result.redactions == sum(r["redactions"] for r in records) and result.redacted == 6
    assert count_records(settings.run_dir())["redactions"] == result.redactions

    # The summary, `distill status` and the viewer say how many were withheld.
    shown = f"{result.redactions} (6)"
    assert shown in rendered(summary_table(result)) and shown in rendered(status_table(run_status(settings.run_dir())))
    with TestClient(create_app([settings.run_dir()], index_dir=tmp_path / "indexes")) as viewer:
        page = viewer.get(f"/runs/{settings.run_dir().name}").text
        assert f"<b>{result.redactions}</b><span>secrets withheld, in 6 conversations</span>" in page
        line = 1 + [r["task_id"] for r in records].index("github-module")
        assert "secrets withheld" in viewer.get(f"/runs/{settings.run_dir().name}/conversation/{line}").text
    [run] = discover([settings.run_dir()]).runs
    index = RunIndex(run, tmp_path / "indexes")
    assert index.summary()["total"] == 7
    index.close()

    requests = request_log.read_text()
    assert requests.count('"messages"') >= 14
    searched = {"teacher requests": requests.encode()}
    for folder in (settings.run_dir(), tmp_path / "indexes", redis_server.data_dir):
        for path in files_under(folder):
            searched[str(path)] = path.read_bytes()
    searched["redis keys"] = redis_contents(client, f"*{run_name}*").encode()
    with sqlite3.connect(next((tmp_path / "indexes").rglob("*.sqlite"))) as db:
        searched["index rows"] = repr(db.execute("SELECT * FROM records").fetchall()).encode()
    for value in RAW_VALUES:
        for where, data in searched.items():
            # Any 12 characters of a value would be a leak (a clipped line, a fragment of a key).
            assert value[:12].encode() not in data and value[-12:].encode() not in data, (value[:6], where)


def test_convert_drop_redacted(tmp_path: Path, tiny_model: Path) -> None:
    redacted = {**conversation("r", prompt="Where is the token read?"), "redactions": 2}
    tagged_plain = conversation("t", prompt="Which token?", results=["a.py:1: TOKEN = [REDACTED github-token #1]"])
    source = write_jsonl(tmp_path / "run" / "conversations.jsonl", [conversation(), redacted, tagged_plain])
    kept_all = convert(source, tiny_model, tmp_path / "all")
    dropped = convert(source, tiny_model, tmp_path / "clean", drop_redacted=True)
    assert kept_all.dropped[DropReason.REDACTED] == 0
    assert dropped.dropped[DropReason.REDACTED] == 2 and dropped.kept == 1
