"""Secrets found in text are replaced by tags; files that hold secrets by nature are withheld.

Detection: detect-secrets' regex plugins (AWS, GitHub, GitLab, OpenAI, private keys, JWTs, Slack,
Stripe, ...; only `analyze_string`, which never touches the network), whole private-key blocks,
high-entropy values assigned to names ending in KEY, SECRET, TOKEN, PASSWORD (...), and the
patterns of `[secrets]`. Values on the allow list stay.

Tags in two steps, because one tool process serves many conversations:
- where the text is read (a tool process, the prompts file), each value becomes a *marker*
  `⟦S <kind> <fingerprint>⟧`, the fingerprint an HMAC of the value under a key the worker draws
  once and gives every tool process (so the same value has the same fingerprint in all of them,
  and no fingerprint can be compared across runs or reversed by hashing guesses offline);
- the caller, who knows the conversation, turns markers into `[REDACTED <kind> #n]` with its own
  `SecretTags` table: the same value gets the same number within one conversation, numbered from 1
  in the order first seen. A withheld file's marker (kind `file`) is counted and shows as nothing.
The raw value never leaves the process that read it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from detect_secrets.plugins.artifactory import ArtifactoryDetector
from detect_secrets.plugins.aws import AWSKeyDetector
from detect_secrets.plugins.azure_storage_key import AzureStorageKeyDetector
from detect_secrets.plugins.base import RegexBasedDetector
from detect_secrets.plugins.basic_auth import BasicAuthDetector
from detect_secrets.plugins.discord import DiscordBotTokenDetector
from detect_secrets.plugins.github_token import GitHubTokenDetector
from detect_secrets.plugins.gitlab_token import GitLabTokenDetector
from detect_secrets.plugins.high_entropy_strings import Base64HighEntropyString
from detect_secrets.plugins.jwt import JwtTokenDetector
from detect_secrets.plugins.mailchimp import MailchimpDetector
from detect_secrets.plugins.npm import NpmDetector
from detect_secrets.plugins.openai import OpenAIDetector
from detect_secrets.plugins.pypi_token import PypiTokenDetector
from detect_secrets.plugins.sendgrid import SendGridDetector
from detect_secrets.plugins.slack import SlackDetector
from detect_secrets.plugins.square_oauth import SquareOAuthDetector
from detect_secrets.plugins.stripe import StripeDetector
from detect_secrets.plugins.twilio import TwilioKeyDetector
from pydantic import BaseModel, ConfigDict, Field, field_validator

# Keyword-only plugins (IBM, SoftLayer, Cloudant), Telegram's (anchored to a whole line) and the bare high-entropy scanners are left out:
# on ordinary code they flag lock-file hashes and long identifiers. High entropy counts only where
# a value is assigned to a secret-sounding name (the rule below).
_PLUGINS: tuple[RegexBasedDetector, ...] = (
    AWSKeyDetector(), GitHubTokenDetector(), GitLabTokenDetector(), OpenAIDetector(), JwtTokenDetector(),
    SlackDetector(), StripeDetector(), TwilioKeyDetector(), SendGridDetector(), NpmDetector(),
    PypiTokenDetector(), DiscordBotTokenDetector(), MailchimpDetector(),
    AzureStorageKeyDetector(), ArtifactoryDetector(), BasicAuthDetector(), SquareOAuthDetector(),
)
_ENTROPY = Base64HighEntropyString()

# A whole PEM/OpenSSH/PGP private key block (detect-secrets' plugin flags only its first line);
# an unterminated one (a file cut short) runs to the end of the text.
_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----.*?(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)",
    re.DOTALL,
)
_PUTTY_KEY = re.compile(r"PuTTY-User-Key-File-\d:.*?(?:Private-MAC: \S+|\Z)", re.DOTALL)
# NAME = value, NAME: value, "NAME": "value", with NAME ending in a secret-sounding word.
_ASSIGNED = re.compile(
    r"""(?<![\w.\-])(?P<name>[\w.\-]+)["']?[ \t]*(?::=|=>|=|:)[ \t]*(?P<quote>["'`]?)"""
    r"""(?P<value>[^\s"'`,;()\[\]{}<>]+)(?P=quote)"""
)
_SECRET_NAME = re.compile(r"(?:key|secret|token|passw(?:or)?d|pwd|passphrase|credentials?)$", re.IGNORECASE)
# Only lines that name a secret are parsed for assignments (most lines of code name none).
_SECRET_WORDS = ("key", "secret", "token", "passw", "pwd", "passphrase", "credential")
_PASSWORD_NAME = re.compile(r"(?:passw(?:or)?d|pwd|passphrase)$", re.IGNORECASE)
_REFERENCE = re.compile(r"^(?:\$|%|os\.|process\.env|env\.|self\.|settings\.|config\.)")

MARKER = re.compile(r"⟦S (?P<kind>[a-z0-9-]+) (?P<fp>[0-9a-f]{16})⟧")
# What is left of a marker cut by a length cap or a clipped line (whole ones are gone by then).
_PARTIAL_MARKER = re.compile(r"⟦S(?: [a-z0-9-]*(?: [0-9a-f]{0,16})?)?|⟦$", re.MULTILINE)
TAG = re.compile(r"\[REDACTED [a-z0-9-]+ #(?P<n>\d+)\]")

# Files that hold secrets by their nature: withheld whole, by name (a pattern with a '/' is
# matched against the path from the workspace root, any other against the file's name).
DEFAULT_WITHHELD_FILES: tuple[str, ...] = (
    ".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx",
    "id_rsa", "id_dsa", "id_ecdsa", "id_ed25519", ".netrc", "_netrc", ".pgpass", ".git-credentials",
    ".htpasswd", "*/.aws/credentials", ".aws/credentials", "*/.docker/config.json", ".docker/config.json",
    "*/.kube/config", ".kube/config", "credentials.json", "service-account*.json",
)
# ... except these, which by convention hold placeholders (their content is still scanned).
NOT_WITHHELD_FILES: tuple[str, ...] = (".env.example", ".env.sample", ".env.template", ".env.dist", "*.pub")

MIN_VALUE_CHARS = 8
MIN_ASSIGNED_CHARS = 12
MIN_ASSIGNED_ENTROPY = 3.0


class SecretsConfig(BaseModel):
    """The `[secrets]` table of distill.toml."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    # More secrets: regular expressions; the first group, where there is one, is the value.
    patterns: list[str] = Field(default_factory=list)
    # More files to withhold whole (globs, as DEFAULT_WITHHELD_FILES).
    withhold_files: list[str] = Field(default_factory=list)
    # Known false positives: regular expressions, each matched against a whole value.
    allow: list[str] = Field(default_factory=list)
    # A secret in a prompt, system prompt or history line: replaced by a tag, or the line refused.
    prompts: Literal["redact", "refuse"] = "redact"

    @field_validator("patterns", "allow")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"{pattern!r} is not a regular expression ({error})") from None
        return patterns


@dataclass(frozen=True)
class Finding:
    kind: str
    value: str


def _globs(patterns: list[str]) -> re.Pattern[str]:
    """Shell globs as one regex over a whole name (matching nothing when there are none)."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns) or r"(?!)")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "secret"


class Redactor:
    """Finds secrets in text and replaces them with markers; says which files are withheld."""

    def __init__(self, config: SecretsConfig, key: bytes) -> None:
        self.config = config
        self._key = key
        self._patterns = [re.compile(p) for p in config.patterns]
        self._allow = [re.compile(p) for p in config.allow]
        withheld = DEFAULT_WITHHELD_FILES + tuple(config.withhold_files)
        # One regex per kind of glob: checked for every file a walk reads, so no fnmatch loop.
        self._withheld_names = _globs([p for p in withheld if "/" not in p])
        self._withheld_paths = _globs([p for p in withheld if "/" in p])
        self._kept_names = _globs(list(NOT_WITHHELD_FILES))

    # ----------------------------------------------------------------- files

    def withholds(self, rel_path: str) -> bool:
        """Whether a file (its path from the workspace root) is withheld whole."""
        if not self.config.enabled:
            return False
        rel = rel_path.replace(os.sep, "/")
        while rel.startswith("./"):
            rel = rel[2:]
        name = rel.rsplit("/", 1)[-1]
        if self._kept_names.match(name):
            return False
        return bool(self._withheld_names.match(name) or self._withheld_paths.match(rel))

    def file_marker(self, rel_path: str) -> str:
        return self._marker("file", "\0file\0" + rel_path)

    # ----------------------------------------------------------------- text

    def findings(self, text: str) -> list[Finding]:
        """Every distinct secret value in `text`, longest first (a value inside another goes after it)."""
        if not self.config.enabled or not text:
            return []
        found: dict[str, str] = {}
        for value, kind in self._candidates(text):
            if len(value) >= MIN_VALUE_CHARS and value not in found and not self._allowed(value):
                found[value] = kind
        return [Finding(kind, value) for value, kind in sorted(found.items(), key=lambda item: -len(item[0]))]

    def redact(self, text: str) -> tuple[str, int]:
        """`text` with every secret value replaced by its marker, and how many distinct values."""
        findings = self.findings(text)
        for finding in findings:
            # A value over several lines (a private key) keeps its line breaks: line numbers stay true.
            marker = self._marker(finding.kind, finding.value) + "\n" * finding.value.count("\n")
            text = text.replace(finding.value, marker)
        return text, len(findings)

    def _candidates(self, text: str) -> Iterator[tuple[str, str]]:
        for match in _PRIVATE_KEY_BLOCK.finditer(text):
            yield match.group(0), "private-key"
        for match in _PUTTY_KEY.finditer(text):
            yield match.group(0), "private-key"
        lowered = text.lower()
        present = _hints_in(text, lowered)
        for detector in _DETECTORS:
            for value in detector.values(text, present):
                yield value, detector.kind
        for line in _lines_naming_secrets(text, lowered):
            for match in _ASSIGNED.finditer(line):
                if _SECRET_NAME.search(match.group("name")) and _assigned_secret(match):
                    yield match.group("value"), _slug(match.group("name"))
        for pattern in self._patterns:
            for match in pattern.finditer(text):
                yield (match.group(1) if pattern.groups else match.group(0)), "custom-secret"

    def _allowed(self, value: str) -> bool:
        return any(pattern.fullmatch(value) for pattern in self._allow)

    def _marker(self, kind: str, value: str) -> str:
        fingerprint = hmac.new(self._key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]
        return f"⟦S {kind} {fingerprint}⟧"


@dataclass(frozen=True)
class _Detector:
    """One of a plugin's patterns, with literal text each of its matches holds (a cheap test first)."""

    kind: str
    pattern: re.Pattern[str]
    hints: tuple[str, ...]
    # Characters one of which must come before a match (or the text's start), checked here: as a
    # leading group of the regex it made `re` try the pattern at every position (10x slower).
    after: str | None = None

    def values(self, text: str, present: set[str]) -> Iterator[str]:
        """`present`: the hints found in the text (see _hints_in)."""
        if self.hints and present.isdisjoint(self.hints):
            return
        # The value is a group where the pattern captures one (a password in a URL, the key after
        # `aws_secret = `), else the whole match (detect-secrets' own findall would give "ghp" for
        # a GitHub token: it only needs to know a line holds one, we need the value).
        for match in self.pattern.finditer(text):
            if self.after is not None and match.start() > 0 and text[match.start() - 1] not in self.after:
                continue
            yield next((group for group in match.groups() if group and len(group) >= MIN_VALUE_CHARS), match.group(0))


# Patterns whose literal text isn't (all of) their prefix, by how the pattern starts.
_HINTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("(?:A3T[A-Z0-9]|ABIA", ("A3T", "ABIA", "ACCA", "AKIA", "ASIA")),
    ("(ghp|gho|ghu|ghs|ghr)_", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    ("(glpat|gldt|glft|glsoat|glrt)-", ("glpat-", "gldt-", "glft-", "glsoat-", "glrt-")),
    ("https://hooks", ("hooks.slack.com",)),
    ("(?:r|s)k_live_", ("k_live_",)),
    ("[0-9a-z]{32}-us", ("-us",)),
    (r"\/\/.+\/:_authToken", ("_authToken",)),
    ("://", ("://",)),
    (r'(?:\s|=|:|"|^)AKC', ("AKC",)),
    (r'(?:\s|=|:|"|^)AP', tuple(f"AP{c}" for c in "0123456789ABCDEF")),
)


def _literal_prefix(pattern: re.Pattern[str]) -> tuple[str, ...]:
    for start, hints in _HINTS:
        if pattern.pattern.startswith(start):
            return hints
    match = re.match(r"[A-Za-z0-9_\-]+", pattern.pattern)
    if match is None:
        return ()
    prefix = match.group(0)
    if pattern.pattern[len(prefix):len(prefix) + 1] in ("?", "*", "{"):
        prefix = prefix[:-1]  # its last character is optional
    if len(prefix) < 2:
        return ()
    return (prefix.lower(),) if pattern.flags & re.IGNORECASE else (prefix,)


_LEADING_SEPARATOR = r'(?:\s|=|:|"|^)'


def _detector(plugin: RegexBasedDetector, pattern: re.Pattern[str]) -> _Detector:
    hints = _literal_prefix(pattern)
    if pattern.pattern.startswith(_LEADING_SEPARATOR):
        rest = re.compile(pattern.pattern[len(_LEADING_SEPARATOR):], pattern.flags)
        return _Detector(_slug(plugin.secret_type), rest, hints, after=' \t\n\r\f\v=:"')
    return _Detector(_slug(plugin.secret_type), pattern, hints)


_DETECTORS = tuple(_detector(plugin, pattern) for plugin in _PLUGINS for pattern in plugin.denylist)
_CASED_HINTS = frozenset(h for d in _DETECTORS if not d.pattern.flags & re.IGNORECASE for h in d.hints)
_LOWER_HINTS = frozenset(h for d in _DETECTORS if d.pattern.flags & re.IGNORECASE for h in d.hints)


def _hints_in(text: str, lowered: str) -> set[str]:
    """Every detector hint the text holds (`in` is a fast substring search; a regex alternation of
    the hints was 50x slower on large files)."""
    return {h for h in _CASED_HINTS if h in text} | {h for h in _LOWER_HINTS if h in lowered}


def _lines_naming_secrets(text: str, lowered: str) -> Iterator[str]:
    """The lines of `text` holding one of _SECRET_WORDS (found with str.find, far faster than a regex)."""
    starts: set[int] = set()
    for word in _SECRET_WORDS:
        at = lowered.find(word)
        while at != -1:
            start = lowered.rfind("\n", 0, at) + 1
            end = lowered.find("\n", at)
            end = len(lowered) if end == -1 else end
            if start not in starts:
                starts.add(start)
                yield text[start:end]
            at = lowered.find(word, end)


def _assigned_secret(match: re.Match[str]) -> bool:
    """A value assigned to a secret-sounding name that looks like a secret, not a reference or word."""
    value = match.group("value")
    if _REFERENCE.match(value) or value.lower() in {"none", "null", "true", "false", "changeme", "redacted"}:
        return False
    if value.startswith(("⟦", "[REDACTED")):
        return False
    if not match.group("quote"):
        following = match.string[match.end():match.end() + 1]
        if following in ("(", "[", ".") or re.fullmatch(r"[a-z_][a-z0-9]*(?:_[a-z0-9]+)+", value):
            return False  # a call, an index or a snake_case name: code, not a value
    if _PASSWORD_NAME.search(match.group("name")):
        # A password need not look random; an unquoted name-like word is a reference, not a value.
        return len(value) >= MIN_VALUE_CHARS and (bool(match.group("quote")) or any(c.isdigit() for c in value))
    if len(value) < MIN_ASSIGNED_CHARS or not any(c.isdigit() for c in value) or not any(c.isalpha() for c in value):
        return False
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+", value):
        return False  # a dotted name (module.attribute), not a value
    return _ENTROPY.calculate_shannon_entropy(value) >= MIN_ASSIGNED_ENTROPY


class SecretTags:
    """One conversation's table from marker fingerprints to tag numbers, kept by the caller."""

    def __init__(self, seen: Iterable[str] = ()) -> None:
        self._numbers: dict[str, int] = {}
        self._files: set[str] = set()
        # A continued conversation already holds tags: new ones are numbered after them.
        self._next = 1 + max((int(m.group("n")) for text in seen for m in TAG.finditer(text or "")), default=0)
        self._seeded = self._next - 1

    def apply(self, text: str) -> str:
        """Markers in `text` turned into tags (a withheld file's marker into nothing)."""
        if "⟦" not in text:
            return text
        # A marker cut in two by an answer's length cap shows as a bare tag.
        return _PARTIAL_MARKER.sub("[REDACTED]", MARKER.sub(self._tag, text))

    def _tag(self, match: re.Match[str]) -> str:
        kind, fingerprint = match.group("kind"), match.group("fp")
        if kind == "file":
            self._files.add(fingerprint)
            return ""
        number = self._numbers.get(fingerprint)
        if number is None:
            number = self._numbers[fingerprint] = self._next
            self._next += 1
        return f"[REDACTED {kind} #{number}]"

    @property
    def count(self) -> int:
        """Values tagged and files withheld in this conversation (tags it started with included)."""
        return self._seeded + len(self._numbers) + len(self._files)


def new_key() -> bytes:
    return os.urandom(32)
