"""deploy/ can't rot: every file parses, every distill config loads with distill's own config model,
every command line in a unit or plist uses options the real CLIs accept, and the Redis config
starts a real server with the promised settings."""

from __future__ import annotations

import configparser
import plistlib
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis
import typer
import yaml
from conftest import REPO

from distill.coordinator.redis_server import server_binary
from distill.shared.connection import free_port
from distill.shared.settings import Settings, load_settings

DEPLOY = REPO / "deploy"
CONFIGS = sorted(DEPLOY.rglob("*.toml"))
YAMLS = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
PLISTS = sorted((DEPLOY / "launchd").glob("*.plist"))


@pytest.fixture(autouse=True)
def clean_distill_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the files decide: no DISTILL_* variable of the test machine leaks into the settings."""
    import os

    for name in list(os.environ):
        if name.startswith("DISTILL_"):
            monkeypatch.delenv(name)


def names(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(DEPLOY)) for path in paths]


def test_the_three_modes_have_an_example_config():
    assert names(CONFIGS) == ["config/cloud-offload.toml", "config/local-only.toml", "config/multi-machine.toml"]


@pytest.mark.parametrize("path", CONFIGS, ids=names(CONFIGS))
def test_every_example_config_loads_with_distills_config_model(path: Path):
    tomllib.loads(path.read_text())
    settings = load_settings(path)
    assert settings.teachers, "an example without a teacher can't run"
    # Secrets are never values in a config: keys are named by variable, the Redis URL comes from
    # DISTILL_REDIS_URL or --redis-url.
    assert settings.redis_url is None
    values = "\n".join(line.split("#", 1)[0] for line in path.read_text().splitlines())
    assert not re.search(r"(sk-|password|redis://)", values, re.IGNORECASE)


def test_each_config_is_the_mode_it_says():
    multi, offload, local = (load_settings(DEPLOY / "config" / name) for name in
                             ("multi-machine.toml", "cloud-offload.toml", "local-only.toml"))
    assert multi.ray_address and len(multi.teachers) >= 2 and all(t.kind == "local" for t in multi.teachers)
    assert multi.workers >= len(multi.teachers)
    assert offload.policy == "local-first"
    assert {t.kind for t in offload.teachers} == {"local", "cloud"}
    assert all(t.api_key_env for t in offload.teachers if t.kind == "cloud")
    assert local.policy == "local-only" and all(t.launch for t in local.teachers)
    assert local.ray_address is None


@pytest.mark.parametrize("path", YAMLS, ids=names(YAMLS))
def test_every_yaml_file_parses(path: Path):
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert documents and all(isinstance(doc, dict) for doc in documents)


def k8s_documents(name: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text()) if doc}


def test_the_kubernetes_config_map_holds_a_loadable_distill_toml(tmp_path: Path):
    config_map = k8s_documents("raycluster.yaml")["ConfigMap"]
    path = tmp_path / "distill.toml"
    path.write_text(config_map["data"]["distill.toml"])
    settings = load_settings(path)
    assert settings.ray_address == "auto" and settings.teachers
    # The teacher it names is the Service vllm.yaml creates, serving the model it names.
    vllm = k8s_documents("vllm.yaml")
    service = vllm["Service"]["metadata"]["name"]
    args = vllm["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    teacher = settings.teachers[0]
    assert f"//{service}:8000/v1" in teacher.base_url
    assert args[args.index("--served-model-name") + 1] == teacher.model


def test_kuberay_cluster_runs_the_distill_image_everywhere():
    cluster = k8s_documents("raycluster.yaml")["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    workers = [group["template"]["spec"]["containers"][0] for group in cluster["spec"]["workerGroupSpecs"]]
    assert {head["image"]} == {worker["image"] for worker in workers}
    dockerfile = (DEPLOY / "k8s" / "Dockerfile").read_text()
    base = re.search(r"^FROM rayproject/ray:([\d.]+)-py311", dockerfile, re.MULTILINE)
    assert base and base.group(1) == cluster["spec"]["rayVersion"]
    for source in re.findall(r"^COPY (?:--\S+ )*(\S+)/? ", dockerfile, re.MULTILINE):
        assert (REPO / source.rstrip("/")).exists(), source
    env = {item["name"] for item in head["env"]}
    assert {"DISTILL_REDIS_URL", "DISTILL_VLLM_KEY"} <= env
    assert {item["name"] for item in workers[0]["env"]} == env


def test_the_vllm_deployment_enables_tool_calls():
    args = k8s_documents("vllm.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable-auto-tool-choice" in args and args[args.index("--tool-call-parser") + 1] == "hermes"


def test_ray_cluster_launcher_config_passes_rays_own_schema():
    from ray.autoscaler._private.util import validate_config

    config = yaml.safe_load((DEPLOY / "ray-cluster-vllm.yaml").read_text())
    validate_config(config)
    command = " ".join(config["head_start_ray_commands"])
    assert "vllm serve" in command and "--enable-auto-tool-choice --tool-call-parser hermes" in command
    served = re.search(r"--served-model-name (\S+)", command).group(1)
    cloud = [t for t in load_settings(DEPLOY / "config" / "cloud-offload.toml").teachers if t.kind == "cloud"]
    assert [t.model for t in cloud] == [served]
    # The key is copied from a local file, never written into the YAML.
    assert not re.search(r"VLLM_API_KEY=[\w-]{8,}", (DEPLOY / "ray-cluster-vllm.yaml").read_text())


# -- command lines in units and plists use options the real CLIs have ---------------------------


def distill_command(tokens: list[str]) -> Any:
    from distill.cli import app

    command = typer.main.get_command(app)
    for token in tokens:
        if token.startswith("-") or token not in getattr(command, "commands", {}):
            break
        command = command.commands[token]
    assert not hasattr(command, "commands"), f"distill has no command {' '.join(tokens[:2])}"
    return command


def check_options(argv: list[str]) -> None:
    """argv is a full command line; fail if it passes an option its program doesn't have."""
    program = Path(argv[0]).name
    if program == "distill":
        command = distill_command(argv[1:])
    elif program == "ray":
        from ray.scripts.scripts import cli

        assert argv[1] in cli.commands, f"ray has no command {argv[1]}"
        command = cli.commands[argv[1]]
    else:
        return
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for token in argv[1:]:
        if token.startswith("-") and token[1:2].isalpha() or token.startswith("--"):
            assert token.split("=", 1)[0] in known, f"{' '.join(argv)}: {command.name} has no option {token}"


def command_lines(text: str) -> list[list[str]]:
    """The distill/ray invocations inside a command line, including `sh -c '...; exec ...'`."""
    argv = shlex.split(text)
    if Path(argv[0]).name in ("sh", "bash") and "-c" in argv:
        found = []
        for part in argv[argv.index("-c") + 1].split(";"):
            words = shlex.split(part)
            if words and words[0] == "exec":
                words = words[1:]
            if words and Path(words[0]).name in ("distill", "ray"):
                found.append(words)
        return found
    return [argv]


@pytest.mark.parametrize("path", UNITS, ids=names(UNITS))
def test_systemd_units_parse_and_run_real_commands(path: Path):
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(path.read_text())
    assert {"Unit", "Service", "Install"} <= set(unit.sections())
    service = unit["Service"]
    assert service.get("ExecStart") and service.get("Restart") and unit["Install"].get("WantedBy")
    for key in ("ExecStartPre", "ExecStart", "ExecStop"):
        if service.get(key):
            for argv in command_lines(service[key]):
                check_options(argv)
    if "ray start" in service["ExecStart"]:
        assert "--block" in service["ExecStart"], "systemd must supervise the node in the foreground"


@pytest.mark.parametrize("path", PLISTS, ids=names(PLISTS))
def test_launchd_plists_parse_and_run_real_commands(path: Path):
    plist = plistlib.loads(path.read_bytes())
    assert plist["Label"] == path.stem
    assert plist["ProgramArguments"] and plist.get("RunAtLoad") is True and "KeepAlive" in plist
    argv = plist["ProgramArguments"]
    lines = command_lines(shlex.join(argv)) if Path(argv[0]).name == "sh" else [argv]
    for line in lines:
        check_options(line)
    if Path(argv[0]).name == "ray":
        assert plist["EnvironmentVariables"]["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
        assert "--block" in argv


def test_the_env_file_example_only_names_settings_or_keys():
    lines = [line for line in (DEPLOY / "systemd" / "distill.env.example").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    names_set = {line.split("=", 1)[0] for line in lines}
    assert "DISTILL_REDIS_URL" in names_set
    assert ":6380/" in next(line for line in lines if line.startswith("DISTILL_REDIS_URL="))
    offload_keys = {t.api_key_env for t in load_settings(DEPLOY / "config" / "cloud-offload.toml").teachers if t.api_key_env}
    assert offload_keys <= names_set


# -- Redis ------------------------------------------------------------------------------------


def test_redis_conf_starts_a_real_server_with_aof_and_a_password(tmp_path: Path):
    conf = (DEPLOY / "redis.conf").read_text()
    assert re.search(r"^port 6380$", conf, re.MULTILINE), "6379 belongs to Ray's head"
    port = free_port()
    # The file as shipped, with only the lines a user edits for their machine replaced.
    edits = {"port": str(port), "bind": "127.0.0.1", "dir": str(tmp_path), "requirepass": "test-password"}
    lines = [f"{line.split()[0]} {edits[line.split()[0]]}" if line.split() and line.split()[0] in edits else line
             for line in conf.splitlines()]
    local_conf = tmp_path / "redis.conf"
    local_conf.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen([str(server_binary()), str(local_conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, password="test-password", decode_responses=True, socket_timeout=5)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                import time

                time.sleep(0.05)
        config = {key: client.config_get(key)[key] for key in ("appendonly", "appendfsync", "maxmemory-policy", "save")}
        assert config == {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction", "save": ""}
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port, password="wrong", retry=Retry(NoBackoff(), 0)).ping()
        client.xadd("s", {"a": "1"})  # streams
        client.close()
    finally:
        process.terminate()
        process.wait(10)


# -- documentation --------------------------------------------------------------------------


def test_the_readme_explains_every_file():
    readme = (DEPLOY / "README.md").read_text()
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.name != "README.md":
            assert path.name in readme, f"deploy/README.md does not explain {path.relative_to(DEPLOY)}"


def test_scale_out_doc_names_only_files_that_exist():
    doc = (REPO / "docs" / "scale-out.md").read_text()
    mentioned = set(re.findall(r"deploy/[\w./-]+\w", doc))
    assert mentioned
    for name in mentioned:
        assert (REPO / name).exists(), name
    blocks = "\n".join(re.findall(r"^```bash\n(.*?)^```", doc, re.MULTILINE | re.DOTALL))
    commands = re.findall(r"^\s*((?:distill|ray) [^\n]+)$", blocks.replace("\\\n", " "), re.MULTILINE)
    assert any(command.startswith("distill generate") for command in commands)
    assert any(command.startswith("ray start --head") for command in commands)
    for command in commands:
        words = shlex.split(command, comments=True)
        while "&&" in words:
            check_options(words[:words.index("&&")])
            words = words[words.index("&&") + 1:]
        check_options(words)


def test_settings_in_examples_are_settings():
    """Keys in the examples are fields of Settings (caught by load_settings too; this names them)."""
    for path in CONFIGS:
        data = tomllib.loads(path.read_text())
        assert set(data) <= set(Settings.model_fields), path
