"""MCP servers wired into the configuration of the common MCP clients.

Which files (by name and place, anywhere under a scanned path):

=================  ==========================================================================
client             file (container of the servers)
=================  ==========================================================================
claude-desktop     ``claude_desktop_config.json`` (``mcpServers``)
claude-code        ``.mcp.json`` (``mcpServers``); ``.claude.json`` (``mcpServers`` and
                   ``projects.<path>.mcpServers``)
cursor             ``.cursor/mcp.json`` (``mcpServers``)
vscode             ``.vscode/mcp.json`` and ``<Code>/User/mcp.json`` (``servers``, ``inputs``);
                   ``.vscode/settings.json`` and ``<Code>/User/settings.json`` (``mcp.servers``)
windsurf           ``.codeium/windsurf/mcp_config.json`` (``mcpServers``; ``serverUrl``)
continue           ``.continue/config.json`` / ``config.yaml`` (``mcpServers`` as a list or a
                   map, ``experimental.modelContextProtocolServers``) and the block files
                   ``.continue/mcpServers/*.yaml|yml|json``
gemini-cli         ``.gemini/settings.json`` (``mcpServers``; ``url`` is SSE, ``httpUrl`` HTTP)
codex              ``.codex/config.toml`` (``[mcp_servers.NAME]``; ``http_headers``,
                   ``env_http_headers``, ``bearer_token_env_var``, ``env_vars``)
zed                ``settings.json`` in a ``zed`` / ``.zed`` directory (``context_servers``;
                   ``command`` as a string or as ``{path, args, env}``)
cline, roo-code,   ``cline_mcp_settings.json``, ``.roo/mcp.json``, ``.amazonq/mcp.json`` /
amazon-q, generic  ``amazonq/mcp.json``, any other ``mcp.json`` (``mcpServers`` / ``servers``)
=================  ==========================================================================

JSON files are read as JSONC (comments and trailing commas are tolerated, as VS Code and
Zed do); a file that does not parse is a counted ``malformed`` warning, never an error.

One :class:`Finding` of kind ``mcp-server`` per server: ``name`` is the server's key (or,
in a list, its ``name``, else the package it runs), ``pointer`` the JSON path of the server
(``$.mcpServers.github``), ``line`` where its key is. ``detail``: ``client``, ``transport``
(``stdio`` | ``http`` | ``sse``), ``command`` (program and arguments, each secret-looking
argument replaced by ``<secret:FINGERPRINT>``), ``url`` (without userinfo, secret query
parameters or secret-looking path segments), and when known ``project`` (``.claude.json``),
``disabled``, ``source`` (Zed).

Access rules (``access``), from the command, its arguments, the environment and the URL:

* ``filesystem:<dir>`` for each directory given to ``server-filesystem``; for each host
  path a container mounts (``docker run -v HOST:... / --mount source=HOST``).
* ``git:<repo>`` for ``mcp-server-git --repository <repo>``.
* ``database:<scheme>://<host>/<db>`` for a database URL (postgres, mysql, mariadb,
  mongodb, redis, mssql, sqlite, ...) in an argument or an environment value, credentials
  stripped; ``database:sqlite:<path>`` for ``--db-path`` of an SQLite server.
* ``url:<origin>`` for the server URL of an HTTP/SSE server and for every http(s) URL in an
  argument (``mcp-remote https://...``) or an environment value.
* ``<service>:api`` for well-known servers (``github``, ``gitlab``, ``slack``, ``gdrive``,
  ``google-maps``, ``brave-search``, ``sentry``, ``notion``, ``linear``, ``jira``...), by
  package or image name, by hosted URL (``api.githubcopilot.com``) or by a credential
  variable's name (``GITHUB_PERSONAL_ACCESS_TOKEN``).
* ``browser`` for puppeteer / playwright servers, ``url:*`` for fetch servers,
  ``k8s:cluster`` for Kubernetes servers, ``docker:host`` when the Docker socket is mounted.
* ``shell`` for servers that run commands (shell / terminal / desktop-commander /
  commands servers).

Flags: ``plaintext-secret`` and ``static-key`` when a secret value is written in the file;
``wildcard`` for a filesystem root or home directory given to the server, and for ``shell``;
``admin`` for a database superuser in a URL (``root``, ``postgres``, ``sa``, ``admin``), a
privileged container or a mounted Docker socket.

Credentials (never their values): each environment variable, header, secret-looking
argument (``--api-key X``, ``--token=X``, ``NAME=VALUE``, ``--header "Authorization: ..."``,
a value with a known key prefix), Zed extension setting, and each secret in a URL (userinfo
password, ``?api_key=``, a path segment with a key prefix or
long mixed-case random text, typed ``url-token``). ``where`` says which:
``env:NAME``, ``header:Name``, ``arg:--flag`` / ``arg:<index>``, ``setting:name``,
``url:password`` / ``url:query:<param>`` / ``url:path`` (a URL inside an environment value or
an argument: ``env:NAME:password``, ``arg:2:password`` ...).

* A reference (``${VAR}``, ``${env:VAR}``, ``${input:id}``, ``${{ secrets.X }}``, ``$VAR``,
  ``%VAR%``, ``env:VAR``; Codex's ``bearer_token_env_var`` / ``env_http_headers`` /
  ``env_vars``) is ``Credential(type="env-reference", plaintext=False)``, fingerprinted from
  the reference text, when the variable, header or referenced name looks secret (or the
  VS Code input is a password).
* A literal is a secret when it has a known key prefix (``ghp_``, ``github_pat_``, ``sk-``,
  ``sk-ant-``, ``xoxb-``, ``AKIA``, ``AIza``, ``glpat-``, ``hf_`` ...) or when its name looks
  secret (``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*API_KEY*``, ``Authorization`` ...) and
  the value is not a placeholder (``<your-token>``, ``xxx``, ``YOUR_API_KEY``, ``changeme``,
  ``...``), not empty, not a path or plain URL, and not of very low entropy. Its type comes
  from the prefix, else from the name (``github-token``, ``openai-api-key``, ``password``,
  ``api-key``, ``token``, ``secret``).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import yaml

from tether.discover.interface import Credential, Finding, SourceFile, fingerprint

__all__ = ["McpConfigScanner", "user_locations"]

SCANNER = "mcp-configs"

_MAX_SERVERS = 2000  # per file: hostile files cannot make a scan quadratic
_MAX_ITEMS = 500  # arguments / env entries / headers per server
_MAX_DEPTH = 200  # JSONC nesting

Key = str | int
KeyPath = tuple[Key, ...]

# --------------------------------------------------------------------------------------
# Which files


_VSCODE_DIRS = frozenset({"code", "code - insiders", "vscodium", "code - oss"})
_CONTINUE_FILES = frozenset({"config.json", "config.yaml", "config.yml"})


_CLIENT_BY_NAME = {
    "claude_desktop_config.json": "claude-desktop",
    ".mcp.json": "claude-code",
    ".claude.json": "claude-code",
    "cline_mcp_settings.json": "cline",
}
_MCP_JSON_BY_PARENT = {
    ".cursor": "cursor",
    ".vscode": "vscode",
    ".roo": "roo-code",
    ".amazonq": "amazon-q",
    "amazonq": "amazon-q",
}
_SETTINGS_BY_PARENT = {".vscode": "vscode", ".gemini": "gemini-cli", "zed": "zed", ".zed": "zed"}


def _client_for(path: Path) -> str | None:
    """The MCP client whose configuration ``path`` is, by name and place (None: not one)."""
    lower = path.name.lower()
    parent = path.parent.name.lower()
    grand = path.parent.parent.name.lower()
    vscode_user = parent == "user" and grand in _VSCODE_DIRS
    if lower in _CLIENT_BY_NAME:
        return _CLIENT_BY_NAME[lower]
    if lower == "mcp.json":
        return _MCP_JSON_BY_PARENT.get(parent, "vscode" if vscode_user else "generic")
    if lower == "settings.json":
        return _SETTINGS_BY_PARENT.get(parent, "vscode" if vscode_user else None)
    if lower == "mcp_config.json" and ("windsurf" in parent or "windsurf" in grand):
        return "windsurf"
    if lower == "config.toml" and parent == ".codex":
        return "codex"
    if parent == ".continue" and lower in _CONTINUE_FILES:
        return "continue"
    continue_block = parent == "mcpservers" and grand == ".continue"
    if continue_block and path.suffix.lower() in (".yaml", ".yml", ".json"):
        return "continue"
    return None


def user_locations(home: Path, *, existing_only: bool = True) -> list[Path]:
    """The usual per-user MCP client configurations under ``home`` (macOS, Linux and
    Windows layouts), for scanning a user's own machine. With ``existing_only`` (the
    default) only those that exist; directories (``~/.continue/mcpServers``) are walked."""
    vscode_bases = ("Library/Application Support", ".config", "AppData/Roaming")
    relative: list[str] = [
        ".claude.json",
        ".mcp.json",
        "Library/Application Support/Claude/claude_desktop_config.json",
        ".config/Claude/claude_desktop_config.json",
        "AppData/Roaming/Claude/claude_desktop_config.json",
        ".cursor/mcp.json",
        ".codeium/windsurf/mcp_config.json",
        ".gemini/settings.json",
        ".codex/config.toml",
        ".continue/config.json",
        ".continue/config.yaml",
        ".continue/config.yml",
        ".continue/mcpServers",
        ".config/zed/settings.json",
        "AppData/Roaming/Zed/settings.json",
        "AppData/Local/Zed/settings.json",
        ".aws/amazonq/mcp.json",
    ]
    for base in vscode_bases:
        for product in ("Code", "Code - Insiders", "VSCodium"):
            user = f"{base}/{product}/User"
            relative += [
                f"{user}/settings.json",
                f"{user}/mcp.json",
                f"{user}/globalStorage/saoudrizwan.claude-dev/settings/cline_mcp_settings.json",
            ]
    found: list[Path] = []
    for rel in relative:
        candidate = home.joinpath(*rel.split("/"))
        if not existing_only:
            found.append(candidate)
            continue
        try:
            if candidate.exists():
                found.append(candidate)
        except OSError:
            continue
    return found


# --------------------------------------------------------------------------------------
# JSONC: JSON with comments and trailing commas, with the line of every key


class _ParseError(ValueError):
    pass


_JSONC_SPACE = re.compile(r"(?:[ \t\r\n\ufeff]+|//[^\n]*|/\*.*?\*/)*", re.S)
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LINE_DEPTH = 6  # keys deeper than this are not given lines (nothing there is reported)
_DECODER = json.JSONDecoder(strict=False)


def _json_string(text: str, pos: int) -> tuple[str, int]:
    """The JSON string starting at ``text[pos]`` (a double quote) and the offset after it."""
    value, end = _DECODER.raw_decode(text, pos)
    if not isinstance(value, str):  # pragma: no cover - callers check the quote
        raise _ParseError("expected a string")
    return value, end


class _Jsonc:
    def __init__(self, text: str) -> None:
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.lines: dict[KeyPath, int] = {}

    def line(self, pos: int) -> int:
        return bisect.bisect_left(self.newlines, pos) + 1

    def space(self, pos: int) -> int:
        match = _JSONC_SPACE.match(self.text, pos)
        return pos if match is None else match.end()

    def parse(self) -> Any:
        pos = self.space(0)
        if pos >= len(self.text):
            return None
        value, pos = self.value(pos, (), 0)
        pos = self.space(pos)
        if pos != len(self.text):
            raise _ParseError(f"unexpected text at line {self.line(pos)}")
        return value

    def fail(self, what: str, pos: int) -> _ParseError:
        return _ParseError(f"{what} at line {self.line(pos)}")

    def value(self, pos: int, path: KeyPath, depth: int) -> tuple[Any, int]:
        if depth > _MAX_DEPTH:
            raise self.fail("nested too deeply", pos)
        text = self.text
        if pos >= len(text):
            raise self.fail("unexpected end", pos)
        char = text[pos]
        if char == "{":
            return self.object(pos + 1, path, depth)
        if char == "[":
            return self.array(pos + 1, path, depth)
        if char == '"':
            return _json_string(text, pos)
        for word, constant in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, pos):
                return constant, pos + len(word)
        match = _JSON_NUMBER.match(text, pos)
        if match is not None:
            number = match.group()
            if any(c in number for c in ".eE"):
                return float(number), match.end()
            return int(number), match.end()
        raise self.fail(f"unexpected {char!r}", pos)

    def object(self, pos: int, path: KeyPath, depth: int) -> tuple[dict[str, Any], int]:
        text = self.text
        out: dict[str, Any] = {}
        pos = self.space(pos)
        if text.startswith("}", pos):
            return out, pos + 1
        while True:
            if not text.startswith('"', pos):
                raise self.fail("expected a key", pos)
            start = pos
            key, pos = _json_string(text, pos)
            if len(path) < _LINE_DEPTH:
                self.lines.setdefault((*path, key), self.line(start))
            pos = self.space(pos)
            if not text.startswith(":", pos):
                raise self.fail("expected ':'", pos)
            pos = self.space(pos + 1)
            out[key], pos = self.value(pos, (*path, key), depth + 1)
            pos = self.space(pos)
            if text.startswith(",", pos):
                pos = self.space(pos + 1)
                if text.startswith("}", pos):  # a trailing comma
                    return out, pos + 1
                continue
            if text.startswith("}", pos):
                return out, pos + 1
            raise self.fail("expected ',' or '}'", pos)

    def array(self, pos: int, path: KeyPath, depth: int) -> tuple[list[Any], int]:
        text = self.text
        out: list[Any] = []
        pos = self.space(pos)
        if text.startswith("]", pos):
            return out, pos + 1
        while True:
            if len(path) < _LINE_DEPTH:
                self.lines.setdefault((*path, len(out)), self.line(pos))
            item, pos = self.value(pos, (*path, len(out)), depth + 1)
            out.append(item)
            pos = self.space(pos)
            if text.startswith(",", pos):
                pos = self.space(pos + 1)
                if text.startswith("]", pos):
                    return out, pos + 1
                continue
            if text.startswith("]", pos):
                return out, pos + 1
            raise self.fail("expected ',' or ']'", pos)


def parse_jsonc(text: str) -> tuple[Any, dict[KeyPath, int]]:
    """JSONC ``text`` as Python values, and the 1-based line of each key / list item (by its
    path). Raises ``ValueError`` when it is not JSONC."""
    parser = _Jsonc(text)
    try:
        return parser.parse(), parser.lines
    except RecursionError as exc:  # pragma: no cover - the depth cap comes first
        raise _ParseError("nested too deeply") from exc


# --------------------------------------------------------------------------------------
# YAML (Continue) with lines


def _yaml_loader() -> type[Any]:
    loader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return loader


def _load_yaml(text: str) -> tuple[Any, dict[KeyPath, int]]:
    """YAML ``text`` (one document, safe types only) and the line of each key / item."""
    loader = _yaml_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        return loader.construct_document(node), _yaml_lines(node)
    finally:
        loader.dispose()


def _yaml_lines(node: Any, limit: int = 20000) -> dict[KeyPath, int]:
    """The line of each key / item down to :data:`_LINE_DEPTH`, from a composed node."""
    lines: dict[KeyPath, int] = {}
    stack: list[tuple[Any, KeyPath]] = [(node, ())]
    seen = 0
    while stack and seen < limit:
        current, path = stack.pop()
        seen += 1
        if len(path) >= _LINE_DEPTH:
            continue
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                if isinstance(key_node, yaml.ScalarNode):
                    key = str(key_node.value)
                    lines.setdefault((*path, key), key_node.start_mark.line + 1)
                    stack.append((value_node, (*path, key)))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                lines.setdefault((*path, index), item.start_mark.line + 1)
                stack.append((item, (*path, index)))
    return lines


# --------------------------------------------------------------------------------------
# Secrets, placeholders and references


_PREFIX_TYPES: tuple[tuple[str, str], ...] = (
    ("github_pat_", "github-token"),
    ("ghp_", "github-token"),
    ("gho_", "github-token"),
    ("ghu_", "github-token"),
    ("ghs_", "github-token"),
    ("ghr_", "github-token"),
    ("glpat-", "gitlab-token"),
    ("sk-ant-", "anthropic-api-key"),
    ("sk-or-", "openrouter-api-key"),
    ("sk-", "openai-api-key"),
    ("xoxb-", "slack-token"),
    ("xoxp-", "slack-token"),
    ("xoxa-", "slack-token"),
    ("xoxs-", "slack-token"),
    ("xapp-", "slack-token"),
    ("AIza", "google-api-key"),
    ("sk_live_", "stripe-api-key"),
    ("rk_live_", "stripe-api-key"),
    ("sk_test_", "stripe-api-key"),
    ("hf_", "huggingface-token"),
    ("npm_", "npm-token"),
    ("pplx-", "perplexity-api-key"),
    ("gsk_", "groq-api-key"),
    ("lin_api_", "linear-api-key"),
    ("ntn_", "notion-token"),
    ("sntrys_", "sentry-token"),
    ("dop_v1_", "digitalocean-token"),
    ("shpat_", "shopify-token"),
    ("eyJ", "jwt"),
)
_AWS_KEY = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}")
_PLACEHOLDER_PARTS = (
    "your",
    "changeme",
    "change_me",
    "change-me",
    "replace",
    "placeholder",
    "example",
    "insert",
    "xxxx",
    "****",
    "...",
    "\u2026",
    "redacted",
    "dummy",
    "fake",
    "sample",
    "todo",
    "fixme",
    "_here",
    "-here",
    " here",
    "<",
    ">",
    "enter_",
    "enter-",
)
_PLACEHOLDER_WORDS = frozenset(
    {
        "none",
        "null",
        "nil",
        "undefined",
        "true",
        "false",
        "secret",
        "password",
        "passwd",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "key",
        "test",
        "demo",
        "default",
        "required",
        "optional",
        "string",
        "xxx",
        "tbd",
    }
)
_SEQUENCES = (
    "0123456789abcdefghijklmnopqrstuvwxyz" * 2,
    "1234567890" * 4,
    "abcdefghijklmnopqrstuvwxyz" * 2,
    "qwertyuiopasdfghjklzxcvbnm",
)
_SECRET_NAME = re.compile(
    r"token|secret|passw|pwd|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
    r"(?:^|[_\-.])key(?:$|[_\-.])|auth(?!or(?!iz))|credential|cookie|session|bearer|"
    r"(?:^|[_\-.])pat(?:$|[_\-.])",
    re.I,
)
_BRACED_REFERENCE = re.compile(
    r"\$\{\{\s*[^{}]*?\s*\}\}"  # ${{ secrets.X }} (Continue)
    r"|\$\{[^{}\s]+\}"  # ${VAR} ${env:VAR} ${input:id}
    r"|\{env:[A-Za-z_][A-Za-z0-9_]*\}"  # {env:VAR}
)
_BARE_REFERENCE = re.compile(
    r"\$[A-Za-z_][A-Za-z0-9_]*"  # $VAR
    r"|%[A-Za-z_][A-Za-z0-9_]*%"  # %VAR%
    r"|env:[A-Za-z_][A-Za-z0-9_]*"  # env:VAR
)
_AUTH_SCHEME = re.compile(r"^(?:bearer|basic|token|bot|apikey)\s+", re.I)


def _is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name))


def _entropy(value: str) -> float:
    counts: dict[str, int] = {}
    for char in value:
        counts[char] = counts.get(char, 0) + 1
    total = len(value)
    return -sum(n / total * math.log2(n / total) for n in counts.values())


def _looks_random(rest: str) -> bool:
    """Whether what follows a key prefix looks like key material, not a word
    (``sk-learn-server`` is not a key)."""
    core = rest.strip("-_")
    return (
        len(core) >= 16
        and any(c.isdigit() for c in core)
        and any(c.isalpha() for c in core)
        and not any(c.isspace() for c in core)
        and _entropy(core) >= 3.0
    )


def _prefix_type(value: str) -> tuple[str, str] | None:
    """(type, what follows the prefix) for a value with a known key prefix."""
    if _AWS_KEY.fullmatch(value):
        return "aws-access-key", value[4:]
    for prefix, kind in _PREFIX_TYPES:
        if value.startswith(prefix) and _looks_random(value[len(prefix) :]):
            return kind, value[len(prefix) :]
    return None


def _is_placeholder(value: str) -> bool:
    text = value.strip()
    low = text.lower()
    if not text or low in _PLACEHOLDER_WORDS:
        return True
    if any(part in low for part in _PLACEHOLDER_PARTS):
        return True
    known = _prefix_type(text)
    rest = (known[1] if known else text).lower().strip("-_")
    if len(set(rest)) <= 3:  # xxxxxxxx, 00000000, abababab
        return True
    return _is_sequence(rest)  # 1234567890abcdef, abcdefgh12345678


def _is_sequence(text: str) -> bool:
    """Whether ``text`` is one or two runs of a keyboard / alphabet / digit sequence."""
    if len(text) < 6 or len(text) > 80:
        return False

    def run(part: str) -> bool:
        return any(part in sequence for sequence in _SEQUENCES)

    return run(text) or any(run(text[:k]) and run(text[k:]) for k in range(3, len(text) - 2))


def _looks_like_path_or_url(value: str) -> bool:
    if "://" in value:
        return True
    if value.startswith(("/", "~", "./", "../")) or re.match(r"^[A-Za-z]:[\\/]", value):
        return True
    return bool(" " in value.strip())


def _name_type(name: str) -> str:
    upper = name.upper()
    if "GITHUB" in upper or upper.startswith("GH_"):
        return "github-token"
    if "GITLAB" in upper:
        return "gitlab-token"
    if "OPENAI" in upper:
        return "openai-api-key"
    if "ANTHROPIC" in upper:
        return "anthropic-api-key"
    if "SLACK" in upper:
        return "slack-token"
    if "AWS" in upper and "SECRET" in upper:
        return "aws-secret-key"
    if "PASS" in upper or "PWD" in upper:
        return "password"
    if re.search(r"KEY", upper):
        return "api-key"
    if re.search(r"TOKEN|PAT|AUTH|BEARER|COOKIE|SESSION", upper):
        return "token"
    return "secret"


def _literal_secret_type(name: str, value: str) -> str | None:
    """The credential type of a literal ``value`` given as ``name``, or None when it is not a
    secret (a placeholder, empty, a path, a plain URL, low entropy, an innocent name)."""
    text = value.strip()
    if not text or _is_placeholder(text):
        return None
    known = _prefix_type(text)
    if known is not None:
        return known[0]
    if not _is_secret_name(name) or _looks_like_path_or_url(text):
        return None
    if len(text) < 8 or (text.isdigit() and len(text) < 16):
        return None
    if len(set(text)) < 5 or _entropy(text) < 2.5:
        return None
    return _name_type(name)


def _reference_in(value: str) -> str | None:
    """The reference that ``value`` is (``$VAR``, ``%VAR%``, ``env:VAR`` ...) or contains
    (``${VAR}``, ``${input:id}``, ``${{ secrets.X }}``), or None."""
    text = value.strip()
    if _BARE_REFERENCE.fullmatch(text) or _BRACED_REFERENCE.fullmatch(text):
        return text
    match = _BRACED_REFERENCE.search(text)
    return None if match is None else match.group()


def _referenced_name(reference: str) -> str:
    inner = reference.strip("${}% ")
    for lead in ("env:", "input:", "secrets.", "inputs."):
        if lead in inner:
            inner = inner.split(lead, 1)[1]
    return inner.strip("{} ")


# --------------------------------------------------------------------------------------
# URLs


_DB_SCHEMES = frozenset(
    {
        "postgres",
        "postgresql",
        "mysql",
        "mariadb",
        "mongodb",
        "mongodb+srv",
        "redis",
        "rediss",
        "mssql",
        "sqlserver",
        "sqlite",
        "oracle",
        "cockroachdb",
        "clickhouse",
        "snowflake",
    }
)
_ADMIN_USERS = frozenset({"root", "postgres", "sa", "admin", "administrator", "superuser"})
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


@dataclass
class _Url:
    """A URL taken apart: its sanitised form, its access, its secrets."""

    shown: str
    access: str | None
    admin: bool = False
    secrets: list[tuple[str, str, str]] = field(default_factory=list)  # (type, value, where)
    references: list[tuple[str, str]] = field(default_factory=list)  # (where, ref)


def _scheme(raw: str) -> str:
    """``postgresql+psycopg`` → ``postgresql`` (``mongodb+srv`` stays)."""
    low = raw.lower()
    return low if low == "mongodb+srv" else low.split("+", 1)[0]


def _analyse_url(url: str, where: str) -> _Url | None:
    """Sanitise ``url`` and say what it reaches and which secrets it holds."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
        user = parts.username
        password = parts.password
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not scheme:
        return None
    base = _scheme(scheme)
    is_db = base in _DB_SCHEMES
    found = _Url(shown=url, access=None)
    if password:
        ref = _reference_in(password)
        if ref is not None:
            found.references.append((f"{where}:password", ref))
        elif not _is_placeholder(password):
            kind = "database-password" if is_db else "url-password"
            found.secrets.append((kind, password, f"{where}:password"))
    query = _clean_query(parts.query, where, found)
    path = _clean_path(parts.path, where, found)
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    found.shown = urlunsplit((parts.scheme, netloc, path, query, ""))
    if is_db:
        found.admin = bool(user and user.lower() in _ADMIN_USERS)
        if base == "sqlite":
            found.access = f"database:sqlite:{parts.netloc}{parts.path}"
        else:
            database = parts.path.strip("/").split("/", 1)[0]
            found.access = f"database:{base}://{host}/{database}"
    elif scheme in ("http", "https", "ws", "wss"):
        found.access = f"url:{scheme}://{netloc}"
    return found


def _clean_query(query: str, where: str, found: _Url) -> str:
    """The query without its secrets (noted in ``found``)."""
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        ref = _reference_in(value)
        if _is_secret_name(key) and ref is not None:
            found.references.append((f"{where}:query:{key}", ref))
            continue
        kind = _literal_secret_type(key, value)
        if kind is not None:
            found.secrets.append((kind, value, f"{where}:query:{key}"))
            continue
        kept.append((key, value))
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in kept)


def _clean_path(path: str, where: str, found: _Url) -> str:
    """The path with secret-looking segments replaced: a known key prefix (Zapier-style
    ``sk-ak-...``), or a long mixed-case random token (not a hex ID or a UUID)."""
    segments = []
    for segment in path.split("/"):
        known = _prefix_type(segment)
        kind = known[0] if known is not None else None
        if kind is None and _random_token(segment):
            kind = "url-token"
        if kind is not None and not _is_placeholder(segment):
            found.secrets.append((kind, segment, f"{where}:path"))
            segments.append(f"<secret:{fingerprint(segment)}>")
        else:
            segments.append(segment)
    return "/".join(segments)


def _random_token(segment: str) -> bool:
    return (
        len(segment) >= 32
        and re.fullmatch(r"[A-Za-z0-9_\-]+", segment) is not None
        and any(c.islower() for c in segment)
        and any(c.isupper() for c in segment)
        and _looks_random(segment)
    )


# --------------------------------------------------------------------------------------
# One server


_SERVICE_PACKAGES: tuple[tuple[str, str], ...] = (
    ("server-github", "github:api"),
    ("github-mcp-server", "github:api"),
    ("server-gitlab", "gitlab:api"),
    ("gitlab-mcp", "gitlab:api"),
    ("server-slack", "slack:api"),
    ("slack-mcp", "slack:api"),
    ("server-gdrive", "gdrive:api"),
    ("server-google-maps", "google-maps:api"),
    ("server-brave-search", "brave-search:api"),
    ("brave-search-mcp", "brave-search:api"),
    ("server-sentry", "sentry:api"),
    ("sentry-mcp", "sentry:api"),
    ("notion-mcp", "notion:api"),
    ("linear-mcp", "linear:api"),
    ("mcp-atlassian", "jira:api"),
    ("server-puppeteer", "browser"),
    ("puppeteer-mcp", "browser"),
    ("playwright", "browser"),
    ("server-fetch", "url:*"),
    ("mcp-server-fetch", "url:*"),
    ("kubernetes", "k8s:cluster"),
    ("k8s-mcp", "k8s:cluster"),
    ("server-shell", "shell"),
    ("shell-mcp", "shell"),
    ("mcp-shell", "shell"),
    ("mcp-server-shell", "shell"),
    ("terminal-mcp", "shell"),
    ("mcp-terminal", "shell"),
    ("desktop-commander", "shell"),
    ("server-commands", "shell"),
    ("cli-mcp-server", "shell"),
)
_SERVICE_HOSTS: tuple[tuple[str, str], ...] = (
    ("githubcopilot.com", "github:api"),
    ("api.github.com", "github:api"),
    ("gitlab.com", "gitlab:api"),
    ("slack.com", "slack:api"),
    ("mcp.sentry.dev", "sentry:api"),
    ("mcp.notion.com", "notion:api"),
    ("mcp.linear.app", "linear:api"),
    ("mcp.atlassian.com", "jira:api"),
)
_SERVICE_ENV: tuple[tuple[str, str], ...] = (
    ("GITHUB", "github:api"),
    ("GITLAB", "gitlab:api"),
    ("SLACK", "slack:api"),
    ("SENTRY", "sentry:api"),
    ("NOTION", "notion:api"),
    ("LINEAR", "linear:api"),
    ("BRAVE", "brave-search:api"),
    ("JIRA", "jira:api"),
    ("AWS_", "aws:api"),
)
_WIDE_DIRS = frozenset(
    {"/", "~", "~/", "$HOME", "${HOME}", "%USERPROFILE%", "C:\\", "C:/", "/home", "/Users"}
)
_SECRET_FLAG = re.compile(r"^--?([A-Za-z][\w.\-]*)$")
_ASSIGNMENT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.S)
_RUNNERS = frozenset(
    {"npx", "uvx", "bunx", "pnpx", "node", "python", "python3", "uv", "pipx", "deno", "bun"}
)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [_scalar(v) for v in value[:_MAX_ITEMS] if _is_scalar(v)]
    return []


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not isinstance(value, complex)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pairs(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping):
        return []
    out = []
    for key, item in list(value.items())[:_MAX_ITEMS]:
        if _is_scalar(key) and _is_scalar(item):
            out.append((_scalar(key), _scalar(item)))
    return out


def _package(word: str) -> str:
    """``@scope/pkg@1.2`` → ``@scope/pkg``; ``pkg==1.0`` → ``pkg``; image tags kept off."""
    text = word.strip()
    if text.startswith("@"):
        scope, _, rest = text.partition("/")
        return f"{scope}/{rest.split('@', 1)[0]}".lower()
    return re.split(r"@|==|>=|:(?!//)", text, maxsplit=1)[0].lower()


@dataclass
class _Spec:
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: list[tuple[str, str]] = field(default_factory=list)
    url: str | None = None
    url_key: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    transport: str | None = None
    references: list[tuple[str, str]] = field(default_factory=list)  # (where, reference)
    settings: list[tuple[str, str]] = field(default_factory=list)
    disabled: bool = False
    source: str | None = None


def _spec(raw: Mapping[str, Any], depth: int = 0) -> _Spec:
    """One server's configuration, whatever the client's format."""
    spec = _Spec()
    _spec_command(raw, spec, depth)
    _spec_remote(raw, spec)
    transport = raw.get("transport")
    if isinstance(transport, Mapping) and depth == 0:  # Continue's experimental form
        inner = _spec(transport, depth + 1)
        for name in ("command", "args", "url", "url_key", "transport", "env", "headers"):
            if getattr(spec, name) in (None, []):
                setattr(spec, name, getattr(inner, name))
    _spec_codex(raw, spec)
    spec.disabled = raw.get("disabled") is True or raw.get("enabled") is False
    source = raw.get("source")
    spec.source = source if isinstance(source, str) else None
    settings = raw.get("settings")
    if isinstance(settings, Mapping):
        spec.settings = _flatten(settings)
    return spec


def _spec_command(raw: Mapping[str, Any], spec: _Spec, depth: int) -> None:
    command = raw.get("command")
    if isinstance(command, Mapping) and depth == 0:  # Zed's older {path, args, env}
        zed = {key: command.get(key) for key in ("args", "env")}
        inner = _spec({"command": command.get("path"), **zed}, depth + 1)
        spec.command, spec.args, spec.env = inner.command, inner.args, inner.env
    elif isinstance(command, str):
        spec.command = command
    elif isinstance(command, list):
        words = _strings(command)
        spec.command, spec.args = (words[0], words[1:]) if words else (None, [])
    if spec.command is not None and not spec.args:
        spec.args = _strings(raw.get("args"))
        if not spec.args and " " in spec.command.strip():  # "npx -y pkg" in one string
            try:
                words = shlex.split(spec.command)
            except ValueError:
                words = spec.command.split()
            if words:
                spec.command, spec.args = words[0], words[1:]
    if not spec.env:
        spec.env = _pairs(raw.get("env"))


def _spec_remote(raw: Mapping[str, Any], spec: _Spec) -> None:
    for key in ("httpUrl", "serverUrl", "url", "uri", "endpoint"):
        value = raw.get(key)
        if isinstance(value, str) and value.strip():
            spec.url, spec.url_key = value.strip(), key
            break
    headers = raw.get("headers")
    if headers is None:
        headers = raw.get("http_headers")
    request_options = raw.get("requestOptions")
    if headers is None and isinstance(request_options, Mapping):
        headers = request_options.get("headers")
    spec.headers = _pairs(headers)
    kind = raw.get("type")
    if not isinstance(kind, str):
        kind = raw.get("transport")
    spec.transport = kind if isinstance(kind, str) else None


def _spec_codex(raw: Mapping[str, Any], spec: _Spec) -> None:
    """Codex names the variables that hold the secrets."""
    bearer_var = raw.get("bearer_token_env_var")
    if isinstance(bearer_var, str) and bearer_var.strip():
        spec.references.append(("header:Authorization", "${" + bearer_var.strip() + "}"))
    bearer = raw.get("bearer_token")
    if isinstance(bearer, str):
        spec.headers.append(("Authorization", bearer))
    for header, variable in _pairs(raw.get("env_http_headers")):
        spec.references.append((f"header:{header}", "${" + variable + "}"))
    for variable in _strings(raw.get("env_vars")):
        if _is_secret_name(variable):
            spec.references.append((f"env:{variable}", "${" + variable + "}"))


def _flatten(value: Mapping[Any, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, item in list(value.items())[:_MAX_ITEMS]:
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and depth < 3:
            out.extend(_flatten(item, f"{name}.", depth + 1))
        elif isinstance(item, str):
            out.append((name, item))
    return out


def _transport(spec: _Spec, client: str) -> str:
    hint = (spec.transport or "").lower().replace("_", "-")
    if hint == "stdio":
        return "stdio"
    if hint == "sse":
        return "sse"
    if hint in ("http", "streamable-http", "streamablehttp", "streamable", "https", "ws"):
        return "http"
    if spec.command is not None:
        return "stdio"
    if spec.url is not None:
        if spec.url_key == "httpUrl":
            return "http"
        if spec.url_key == "url" and client == "gemini-cli":
            return "sse"
        path = spec.url.split("?", 1)[0].rstrip("/")
        return "sse" if path.endswith("/sse") else "http"
    return "stdio"


class _Collector:
    """What one server reaches and holds, gathered as it is read."""

    def __init__(self, inputs: Mapping[str, bool]) -> None:
        self.inputs = inputs
        self.access: list[str] = []
        self.credentials: list[Credential] = []
        self.flags: set[str] = set()

    def reach(self, what: str | None) -> None:
        if what and what not in self.access:
            self.access.append(what)

    def secret(self, kind: str, value: str, where: str) -> None:
        credential = Credential.of(kind, value, where)
        if credential not in self.credentials:
            self.credentials.append(credential)
        self.flags.update(("plaintext-secret", "static-key"))

    def reference(self, where: str, reference: str) -> None:
        credential = Credential("env-reference", where, fingerprint(reference), plaintext=False)
        if credential not in self.credentials:
            self.credentials.append(credential)

    def url(self, url: str, where: str) -> str:
        """Record what ``url`` reaches and the secrets in it; return it sanitised."""
        found = _analyse_url(url, where)
        if found is None:
            return self.unparsable_url(url, where)
        self.reach(found.access)
        for host, service in _SERVICE_HOSTS:
            if found.access and found.access.startswith("url:") and host in found.access:
                self.reach(service)
        if found.admin:
            self.flags.add("admin")
        for kind, value, at in found.secrets:
            self.secret(kind, value, at)
        for at, ref in found.references:
            self.reference(at, ref)
        return found.shown

    def unparsable_url(self, url: str, where: str) -> str:
        """A URL that does not parse: its password noted, shown without userinfo or query."""
        match = re.match(r"^([A-Za-z][\w+.\-]*://)(?:([^/?#@]*)@)?([^?#]*)", url.strip())
        if match is None:
            return "<unparsable url>"
        userinfo = match.group(2) or ""
        if ":" in userinfo:
            password = userinfo.split(":", 1)[1]
            ref = _reference_in(password)
            if ref is not None:
                self.reference(f"{where}:password", ref)
            elif password and not _is_placeholder(password):
                self.secret("url-password", password, f"{where}:password")
        return match.group(1) + match.group(3)

    def value(self, name: str, value: str, where: str, *, header: bool = False) -> None:
        """An environment / header / setting value: a reference, a secret, a URL, or none."""
        text = value.strip()
        bare = _AUTH_SCHEME.sub("", text) if header else text
        secretish = _is_secret_name(name) or (header and name.lower() == "authorization")
        ref = _reference_in(bare)
        if ref is not None and "://" not in bare:
            referenced = _referenced_name(ref)
            is_input = ref.startswith("${input:")
            password_input = is_input and self.inputs.get(referenced, False)
            if secretish or _is_secret_name(referenced) or password_input:
                self.reference(where, ref)
                self.service_from_name(name if secretish else referenced)
            return
        for match in _URL_IN_TEXT.finditer(bare):
            self.url(match.group(), where)
        if "://" in bare:
            return
        kind = _literal_secret_type(name, bare)
        if kind is not None:
            self.secret(kind, bare, where)
            self.service_from_name(name)

    def service_from_name(self, name: str) -> None:
        """A credential's variable names the service it is for (``GITHUB_TOKEN``)."""
        upper = name.upper()
        for marker, service in _SERVICE_ENV:
            if marker in upper:
                self.reach(service)


def _command_words(spec: _Spec, collector: _Collector) -> list[str]:
    """The command line for ``detail``, secrets replaced; access and credentials noted."""
    if spec.command is None:
        return []
    words = [spec.command, *spec.args[:_MAX_ITEMS]]
    shown = [words[0]] + [_argument(words, index, collector) for index in range(1, len(words))]
    program = PureWindowsPath(words[0]).name.lower()
    _service_access(words, collector)
    _path_access(words, collector)
    if program in ("docker", "podman", "docker.exe", "podman.exe"):
        _container_access(words, collector)
    return shown


def _argument(words: list[str], index: int, collector: _Collector) -> str:
    """``words[index]`` as shown; a secret in it is noted and replaced by its fingerprint."""
    word = words[index]
    if "://" in word:
        shown = word
        for match in _URL_IN_TEXT.finditer(word):
            url = match.group()
            shown = shown.replace(url, collector.url(url, f"arg:{index - 1}"))
        return shown
    header = _HEADER_ARGUMENT.match(word)
    after_flag = words[index - 1] in _HEADER_FLAGS
    if header is not None and (after_flag or _is_secret_name(header.group(1))):
        return _header_argument(header.group(1), header.group(2), collector) or word
    if word.startswith("-") and "=" in word:  # --api-key=VALUE
        flag, _, value = word.partition("=")
        header = _HEADER_ARGUMENT.match(value)
        if flag in _HEADER_FLAGS and header is not None:  # --header=Name: value
            hidden = _header_argument(header.group(1), header.group(2), collector)
        else:
            hidden = _flag_value(flag, value, collector)
        return word if hidden is None else f"{flag}={hidden}"
    assignment = _ASSIGNMENT.match(word)
    if assignment is not None:  # NAME=VALUE (docker -e, env)
        name, value = assignment.group(1), assignment.group(2)
        collector.value(name, value, f"env:{name}")
        if _literal_secret_type(name, value) is not None:
            return f"{name}=<secret:{fingerprint(value)}>"
        return word
    if not word.startswith("-") and _SECRET_FLAG.match(words[index - 1]):  # --token VALUE
        hidden = _flag_value(words[index - 1], word, collector)
        return word if hidden is None else hidden
    known = _prefix_type(word)
    if known is not None and not _is_placeholder(word):
        collector.secret(known[0], word, f"arg:{index - 1}")
        return f"<secret:{fingerprint(word)}>"
    return word


_HEADER_ARGUMENT = re.compile(r"^([A-Za-z][\w-]*):\s*(\S.*)$", re.S)
_HEADER_FLAGS = frozenset({"--header", "-H", "--headers"})


def _header_argument(name: str, value: str, collector: _Collector) -> str | None:
    """``Authorization: Bearer ...`` given as an argument (``mcp-remote --header``): noted;
    the text to show instead, if secret."""
    collector.value(name, value, f"header:{name}", header=True)
    bare = _AUTH_SCHEME.sub("", value.strip())
    if _reference_in(bare) is None and _literal_secret_type(name, bare) is not None:
        return f"{name}: <secret:{fingerprint(bare)}>"
    return None


def _flag_value(flag: str, value: str, collector: _Collector) -> str | None:
    """The value of a secret-looking flag: noted; the text to show instead, if secret."""
    name = flag.lstrip("-")
    if not _is_secret_name(name):
        known = _prefix_type(value)
        if known is None or _is_placeholder(value):
            return None
        collector.secret(known[0], value, f"arg:{flag}")
        return f"<secret:{fingerprint(value)}>"
    if _reference_in(value) is not None:
        collector.reference(f"arg:{flag}", value)
        return None
    kind = _literal_secret_type(name, value)
    if kind is None:
        return None
    collector.secret(kind, value, f"arg:{flag}")
    return f"<secret:{fingerprint(value)}>"


def _is_path(word: str) -> bool:
    return word.startswith(("/", "~", ".", "\\", "$")) or bool(re.match(r"^[A-Za-z]:[\\/]", word))


def _service_access(words: list[str], collector: _Collector) -> None:
    """Well-known servers, by package or image name."""
    for word in words:
        if _is_path(word) or "://" in word or word.startswith("-"):
            continue
        package = _package(word)
        for marker, service in _SERVICE_PACKAGES:
            if marker in package:
                collector.reach(service)
                if service == "shell":
                    collector.flags.add("wildcard")


def _path_access(words: list[str], collector: _Collector) -> None:
    """Directories given to a filesystem server, the repository of a git server, the
    database file of an SQLite server."""
    packages = [_package(word) for word in words]
    for index, package in enumerate(packages):
        if package.endswith(("server-filesystem", "mcp-filesystem")):
            for directory in words[index + 1 :]:
                if directory.startswith("-"):
                    continue
                collector.reach(f"filesystem:{directory}")
                if directory.strip() in _WIDE_DIRS or directory.strip().rstrip("/\\") in ("", "~"):
                    collector.flags.add("wildcard")
            break
    is_git = any("git" in package for package in packages)
    is_sqlite = any("sqlite" in package for package in packages)
    for flag, value in itertools.pairwise(words):
        if flag in ("--repository", "-r") and is_git:
            collector.reach(f"git:{value}")
        sqlite_file = is_sqlite and "://" not in value and not value.startswith("-")
        if flag in ("--db-path", "--db", "--database") and sqlite_file:
            collector.reach(f"database:sqlite:{value}")


def _container_access(words: list[str], collector: _Collector) -> None:
    """``docker run``: host paths mounted, a privileged container, the Docker socket."""
    for index, word in enumerate(words):
        if word == "--privileged":
            collector.flags.add("admin")
        following = words[index + 1] if index + 1 < len(words) else ""
        mount: str | None = None
        if word in ("-v", "--volume") and ":" in following:
            mount = _volume_source(following)
        elif word.startswith(("--volume=", "-v=")):
            mount = _volume_source(word.split("=", 1)[1])
        elif word == "--mount":
            for part in following.split(","):
                key, _, value = part.partition("=")
                if key.strip() in ("source", "src"):
                    mount = value.strip()
        if not mount:
            continue
        if "docker.sock" in mount:
            collector.reach("docker:host")
            collector.flags.add("admin")
            continue
        collector.reach(f"filesystem:{mount}")
        if mount.rstrip("/\\") in ("", "~", "$HOME", "${HOME}"):
            collector.flags.add("wildcard")


def _volume_source(volume: str) -> str:
    """``/host:/ctr:ro`` → ``/host``; ``C:\\data:/ctr`` → ``C:\\data``."""
    parts = volume.split(":")
    if len(parts) > 2 and re.fullmatch(r"[A-Za-z]", parts[0]):
        return f"{parts[0]}:{parts[1]}"
    return parts[0]


_DOCKER_VALUE_FLAGS = frozenset(
    {
        "-e",
        "--env",
        "-v",
        "--volume",
        "--mount",
        "--name",
        "--network",
        "-p",
        "--publish",
        "-w",
        "--workdir",
        "-u",
        "--user",
        "--env-file",
        "--entrypoint",
        "-l",
        "--label",
        "--platform",
        "--pull",
        "-m",
        "--memory",
        "--cpus",
    }
)


def _derived_name(spec: _Spec, index: int) -> str:
    """A name for a server given without one (Continue's lists): the package, script or
    image it runs, else the URL's host."""
    if spec.command is not None:
        words = [spec.command, *spec.args]
        skip_next = False
        for word in words:
            base = PureWindowsPath(word).name or word
            if skip_next:
                skip_next = False
                continue
            if base.lower() in ("docker", "podman"):
                continue
            if word in _DOCKER_VALUE_FLAGS:
                skip_next = True
                continue
            if word.startswith("-") or base.lower() in _RUNNERS or word in ("run", "dlx", "exec"):
                continue
            if word.startswith("@"):
                return _package(word)
            name = re.split(r"@|==|:", base, maxsplit=1)[0]
            return name or base
    if spec.url:
        try:
            host = urlsplit(spec.url).hostname
        except ValueError:
            host = None
        if host:
            return host
    return f"server-{index}"


def pointer_of(path: KeyPath) -> str:
    """``("mcpServers", "github")`` → ``$.mcpServers.github``; other keys in brackets."""
    out = "$"
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", key):
            out += f".{key}"
        else:
            out += "[" + json.dumps(key) + "]"
    return out


# --------------------------------------------------------------------------------------
# Where the servers are in a parsed file


@dataclass
class _Entry:
    path: KeyPath
    name: str
    raw: Mapping[str, Any]
    project: str | None = None


def _at(data: Any, path: KeyPath) -> Any:
    current = data
    for key in path:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current


def _container(data: Any, path: KeyPath, project: str | None = None) -> Iterator[_Entry]:
    found = _at(data, path)
    if isinstance(found, Mapping):
        for key, raw in list(found.items())[:_MAX_SERVERS]:
            if isinstance(raw, Mapping) and _is_scalar(key):
                yield _Entry((*path, _scalar(key)), _scalar(key), raw, project)
    elif isinstance(found, list):
        for index, raw in enumerate(found[:_MAX_SERVERS]):
            if isinstance(raw, Mapping):
                name = raw.get("name")
                label = name.strip() if isinstance(name, str) and name.strip() else ""
                if not label:
                    label = _derived_name(_spec(raw), index)
                yield _Entry((*path, index), label, raw, project)


def _entries(data: Any, filename: str) -> Iterator[_Entry]:
    if not isinstance(data, Mapping):
        return
    yield from _container(data, ("mcpServers",))
    if filename.lower() == "mcp.json":
        yield from _container(data, ("servers",))
    yield from _container(data, ("mcp", "servers"))
    yield from _container(data, ("mcp.servers",))
    yield from _container(data, ("context_servers",))
    yield from _container(data, ("mcp_servers",))
    yield from _container(data, ("experimental", "modelContextProtocolServers"))
    projects = data.get("projects")
    if isinstance(projects, Mapping):
        for project in list(projects)[:_MAX_SERVERS]:
            if isinstance(project, str):
                yield from _container(data, ("projects", project, "mcpServers"), project)


def _inputs(data: Any) -> dict[str, bool]:
    """VS Code's ``inputs``: id → whether it is a password."""
    found: dict[str, bool] = {}
    for path in (("inputs",), ("mcp", "inputs"), ("mcp.inputs",)):
        items = _at(data, path)
        if isinstance(items, list):
            for item in items[:_MAX_ITEMS]:
                if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                    found[item["id"]] = item.get("password") is True
    return found


# --------------------------------------------------------------------------------------
# The scanner


class McpConfigScanner:
    """MCP servers in the configuration files of MCP clients (see the module docstring)."""

    name = SCANNER

    def wants(self, path: Path) -> bool:
        return _client_for(path) is not None

    def scan(self, file: SourceFile) -> Iterator[Finding]:
        client = _client_for(file.path)
        if client is None:
            return
        text = file.read()
        if text is None:
            return
        parsed = self._parse(file, text)
        if parsed is None:
            return
        data, lines = parsed
        inputs = _inputs(data)
        seen: set[KeyPath] = set()
        for entry in _entries(data, file.path.name):
            if entry.path in seen:
                continue
            seen.add(entry.path)
            line = lines.get(entry.path)
            if line is None and entry.path and entry.path[0] == "mcp_servers":
                line = _toml_line(text, str(entry.path[-1]))
            yield self._finding(file, client, entry, line, inputs)

    def _parse(self, file: SourceFile, text: str) -> tuple[Any, dict[KeyPath, int]] | None:
        suffix = file.path.suffix.lower()
        try:
            if suffix == ".toml":
                return tomllib.loads(text), {}
            if suffix in (".yaml", ".yml"):
                return _load_yaml(text)
            return parse_jsonc(text)
        except (ValueError, yaml.YAMLError, RecursionError, MemoryError, TypeError) as exc:
            file.warn("malformed", f"{suffix.lstrip('.') or 'json'}: {_why(exc)}")
            return None

    def _finding(
        self,
        file: SourceFile,
        client: str,
        entry: _Entry,
        line: int | None,
        inputs: Mapping[str, bool],
    ) -> Finding:
        spec = _spec(entry.raw)
        collector = _Collector(inputs)
        command = _command_words(spec, collector)
        url = collector.url(spec.url, "url") if spec.url else None
        for name, value in spec.env:
            collector.value(name, value, f"env:{name}")
        for name, value in spec.headers:
            collector.value(name, value, f"header:{name}", header=True)
        for name, value in spec.settings:
            if _is_secret_name(name) or _prefix_type(value.strip()):
                collector.value(name, value, f"setting:{name}")
        for where, reference in spec.references:
            collector.reference(where, reference)
            collector.service_from_name(_referenced_name(reference))
        detail: dict[str, Any] = {
            "client": client,
            "transport": _transport(spec, client),
            "command": command or None,
            "url": url,
        }
        if entry.project is not None:
            detail["project"] = entry.project
        if spec.disabled:
            detail["disabled"] = True
        if spec.source is not None:
            detail["source"] = spec.source
        return Finding(
            kind="mcp-server",
            name=entry.name,
            scanner=SCANNER,
            path=file.relpath,
            line=line,
            pointer=pointer_of(entry.path),
            access=tuple(collector.access),
            credentials=tuple(collector.credentials),
            flags=tuple(sorted(collector.flags)),
            detail=detail,
        )


def _toml_line(text: str, name: str) -> int | None:
    quoted = re.escape(name)
    pattern = re.compile(
        r"^[ \t]*\[[ \t]*mcp_servers[ \t]*\.[ \t]*(?:"
        + quoted
        + r'|"'
        + quoted
        + r'"|\''
        + quoted
        + r"')[ \t]*\]",
        re.M,
    )
    match = pattern.search(text)
    if match is None:
        return None
    return text.count("\n", 0, match.start()) + 1


def _why(exc: BaseException) -> str:
    """Why a file did not parse, without quoting it (YAML errors quote the line)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return f"{exc.problem or type(exc).__name__}{where}"[:200]
    if isinstance(exc, yaml.YAMLError):
        return type(exc).__name__
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return message[:200]
