"""distill's configuration: one place for every default.

Sources, strongest first: command-line flags, `DISTILL_*` environment variables, `distill.toml`.
Secrets are never values here: a teacher names the environment variable that holds its key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from distill.shared.errors import DistillError, describe_validation_error
from distill.shared.mcp_config import McpServerConfig, unique_servers
from distill.shared.secrets import SecretsConfig

DEFAULT_CONFIG_FILE = "distill.toml"
DEFAULT_OUT_DIR = Path("data/runs")


def cache_dir() -> Path:
    """distill's per-user cache (XDG_CACHE_HOME or ~/.cache): things rebuilt from installed files."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "distill"
DEFAULT_SYSTEM_PROMPT = (
    "You are a careful software engineer answering questions about the code in the current "
    "workspace. Use the tools to look at the real files before you answer: search with grep, "
    "find files with find_files, list folders with list_dir and read code with read_file. "
    "Call only the tools you need (usually one to three), then answer concisely, citing file paths."
)


Policy = Literal["local-first", "spread", "local-only", "cloud-only"]
BuiltinTool = Literal["grep", "read_file", "list_dir", "find_files"]
BUILTIN_TOOLS: tuple[BuiltinTool, ...] = get_args(BuiltinTool)


class ConfigError(DistillError):
    """A configuration problem, phrased for the user (file, field, reason)."""


class TeacherConfig(BaseModel):
    """One OpenAI-compatible teacher endpoint."""

    model_config = ConfigDict(extra="forbid")

    name: str = "teacher"
    base_url: str
    model: str
    kind: Literal["local", "cloud"] = "local"
    max_concurrency: int = Field(default=8, gt=0)
    api_key_env: str | None = None
    max_tokens: int = Field(default=1024, gt=0)
    # Sampling temperature sent with every request; unset, the endpoint's own default applies.
    # `--samples N` needs it above 0, or a deterministic endpoint answers N times the same.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    timeout_s: float = Field(default=120.0, gt=0)
    priority: int = 0
    extra_body: dict[str, Any] = Field(default_factory=dict)
    price_in_per_mtok: float | None = None
    price_out_per_mtok: float | None = None
    # launch = true: `distill generate` serves `model` (a local path) with a supervised
    # mlx_lm.server on base_url's port, restarted whenever it dies.
    launch: bool = False
    launch_adapter_path: str | None = None
    launch_args: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _launchable(self) -> TeacherConfig:
        if self.launch:
            parts = urlsplit(self.base_url)
            if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
                raise ValueError("a launched teacher needs a loopback base_url with a port, e.g. http://127.0.0.1:8080/v1")
            if self.kind != "local":
                raise ValueError("only a local teacher can be launched")
        return self

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    def api_key(self) -> str:
        """The key from the environment; local servers accept any non-empty key."""
        if self.api_key_env is None:
            return "not-needed"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise ConfigError(
                f"teacher {self.name!r}: environment variable {self.api_key_env} is not set"
            )
        return key


class JudgeConfig(TeacherConfig):
    """An OpenAI-compatible model that judges answers (the `[judge]` table, `distill verify --judge`).

    It is an endpoint like a teacher and shares a teacher's global caps, leases and breaker: a
    judge and a teacher on the same base_url and model share one `max_concurrency`.
    """

    name: str = "judge"
    temperature: float | None = Field(default=0.0, ge=0.0, le=2.0)
    # What a passing answer must do, beyond answering the question correctly (a text file).
    rubric_file: Path | None = None
    # Each tool result is shown to the judge up to this many characters.
    max_result_chars: int = Field(default=4_000, gt=100)

    @model_validator(mode="after")
    def _not_launched(self) -> JudgeConfig:
        if self.launch:
            raise ValueError("a judge is not launched by distill; serve it yourself and give its base_url")
        return self

    def rubric(self) -> str | None:
        """The rubric's text, or None; ConfigError if the file can't be read."""
        if self.rubric_file is None:
            return None
        try:
            return self.rubric_file.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{self.rubric_file}: cannot read the judge's rubric ({error})") from None


def eligible_teachers(teachers: Sequence[TeacherConfig], policy: Policy) -> list[TeacherConfig]:
    """The teachers a policy lets a run use."""
    if policy == "local-only":
        return [t for t in teachers if t.kind == "local"]
    if policy == "cloud-only":
        return [t for t in teachers if t.kind == "cloud"]
    return list(teachers)


class GenerationLimits(BaseModel):
    """Per-conversation limits, shipped to every worker."""

    model_config = ConfigDict(extra="forbid")

    max_tool_calls: int = Field(default=8, ge=0)
    max_requests: int = Field(default=16, gt=0)
    # Execution time of one tool call in a tool process; waiting for a free process doesn't count.
    tool_timeout_s: float = Field(default=5.0, gt=0)
    # Tool processes per worker; unset: one per core of the worker's node.
    tool_processes: int | None = Field(default=None, gt=0)
    # Executions of one tool call before an infrastructure error fails the conversation (retryable).
    tool_attempts: int = Field(default=3, ge=1)
    tool_max_output_chars: int = Field(default=16_000, gt=100)
    conversation_timeout_s: float = Field(default=600.0, gt=0)
    # The built-in tools offered (custom tools come on top). Every schema offered is rendered into
    # every request and every training example: a task that needs only grep trains faster on grep alone.
    builtin_tools: list[BuiltinTool] = Field(default_factory=lambda: list(BUILTIN_TOOLS))
    # "brief": each built-in tool is described by its first sentence, without parameter and return
    # descriptions: about a third of the tokens, for small students and short training sequences.
    tool_docs: Literal["full", "brief"] = "full"


class Settings(BaseSettings):
    """Everything `distill generate` needs; any field can come from flag, env or TOML."""

    model_config = SettingsConfigDict(
        env_prefix="DISTILL_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    run: str = "default"
    out_dir: Path = DEFAULT_OUT_DIR
    workspace: Path = Path(".")
    redis_url: str | None = None
    ray_address: str | None = None
    teachers: list[TeacherConfig] = Field(default_factory=list)
    # Judges every conversation that has no reference answer while the run generates.
    judge: JudgeConfig | None = None
    # Each prompt runs this many times (sample 0 .. N-1), each sample exactly once.
    samples: int = Field(default=1, ge=1, le=1000)
    # local-first: cloud teachers take only the overflow; local-only is the fallback mode.
    policy: Policy = "local-first"
    breaker_failures: int = Field(default=3, gt=0)
    breaker_cooldown_s: float = Field(default=10.0, ge=0)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    custom_tools: list[str] = Field(default_factory=list)
    # MCP servers whose tools the teacher is offered beside the built-in ones (shared/mcp_config.py).
    mcp_servers: list[McpServerConfig] = Field(default_factory=list)
    limits: GenerationLimits = Field(default_factory=GenerationLimits)
    # Conversations in flight over the whole run. Unset: the teachers' slots plus a quarter, since a
    # slot is held per request and a conversation running its tools holds none.
    concurrency: int | None = Field(default=None, gt=0)
    workers: int = Field(default=1, gt=0)
    max_attempts: int = Field(default=3, gt=0)
    visibility_timeout_s: float = Field(default=120.0, gt=0)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    # How long the coordinator waits for a vanished Redis before it stops (resumably).
    redis_outage_s: float = Field(default=120.0, gt=0)
    limit: int | None = Field(default=None, gt=0)
    skip_invalid: bool = False
    # Secrets in the workspace and the prompts: found, tagged, withheld (shared/secrets.py).
    secrets: SecretsConfig = Field(default_factory=SecretsConfig)

    @field_validator("run")
    @classmethod
    def _safe_run_name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_." for c in value) or value.startswith("."):
            raise ValueError("use letters, digits, '-', '_' and '.' only")
        return value

    @field_validator("teachers")
    @classmethod
    def _unique_names(cls, teachers: list[TeacherConfig]) -> list[TeacherConfig]:
        names = [t.name for t in teachers]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"teacher names must be unique; repeated: {', '.join(duplicated)}")
        return teachers

    @field_validator("mcp_servers")
    @classmethod
    def _unique_servers(cls, servers: list[McpServerConfig]) -> list[McpServerConfig]:
        return unique_servers(servers)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    def conversations_in_flight(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        slots = sum(t.max_concurrency for t in eligible_teachers(self.teachers, self.policy))
        return max(1, slots + max(1, slots // 4))

    def run_dir(self) -> Path:
        return self.out_dir / self.run


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from TOML < env < overrides; None-valued overrides are ignored.

    Raises ConfigError with the file and the field that is wrong.
    """
    path = config_file
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    if path is not None:
        _check_toml_syntax(path)
    given = {key: value for key, value in overrides.items() if value is not None}

    class _FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=str(path) if path else None)

    try:
        loaded = _FileSettings(**given)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, str(path or "settings"))) from None
    return Settings.model_validate(loaded.model_dump())


def _check_toml_syntax(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None
