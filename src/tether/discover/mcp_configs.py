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

The table above is :mod:`tether.discover.mcp_clients`'. JSON files are read as JSONC
(:mod:`tether.discover.jsonc`: comments and trailing commas are tolerated, as VS Code and
Zed do), YAML with :mod:`tether.discover.safe_yaml`; a file that does not parse is a
counted ``malformed`` warning, never an error. A server's configuration is read by
:mod:`tether.discover.mcp_servers`, what it reaches and holds by
:mod:`tether.discover.mcp_access` (its URLs: :mod:`tether.discover.mcp_urls`, its
literals and references: :mod:`tether.discover.mcp_literals`).

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
  ``...``), not empty, not a path or plain URL, and not of very low entropy. Its type is
  the one classifier's (:func:`tether.discover.classify.secret_type`): from its form, else
  from the name (``github-token``, ``openai-api-key``, ``password``, ``api-key``, ``token``,
  ``secret``), as every other scanner types it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.discover.classify import classify
from tether.discover.interface import Finding, SourceFile
from tether.discover.jsonc import LINE_DEPTH, KeyPath, parse_jsonc
from tether.discover.mcp_access import Collector, command_words
from tether.discover.mcp_clients import client_for, user_locations
from tether.discover.mcp_literals import is_secret_name, referenced_name
from tether.discover.mcp_servers import (
    MAX_ITEMS,
    derived_name,
    is_scalar,
    read_spec,
    scalar,
    transport_of,
)
from tether.discover.safe_yaml import YamlRejected, key_lines, load_yaml

__all__ = ["McpConfigScanner", "parse_jsonc", "user_locations"]

SCANNER = "mcp-configs"

_MAX_SERVERS = 2000  # per file: hostile files cannot make a scan quadratic


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
            if isinstance(raw, Mapping) and is_scalar(key):
                yield _Entry((*path, scalar(key)), scalar(key), raw, project)
    elif isinstance(found, list):
        for index, raw in enumerate(found[:_MAX_SERVERS]):
            if isinstance(raw, Mapping):
                name = raw.get("name")
                label = name.strip() if isinstance(name, str) and name.strip() else ""
                if not label:
                    label = derived_name(read_spec(raw), index)
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
            for item in items[:MAX_ITEMS]:
                if isinstance(item, Mapping) and isinstance(item.get("id"), str):
                    found[item["id"]] = item.get("password") is True
    return found


# --------------------------------------------------------------------------------------
# The scanner


class McpConfigScanner:
    """MCP servers in the configuration files of MCP clients (see the module docstring)."""

    name = SCANNER

    def wants(self, path: Path) -> bool:
        return client_for(path) is not None

    def scan(self, file: SourceFile) -> Iterator[Finding]:
        client = client_for(file.path)
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
                docs = load_yaml(text, max_documents=1)
                if not docs.nodes:
                    return None, {}
                return docs.documents[0], key_lines(docs.nodes[0], depth=LINE_DEPTH)
            return parse_jsonc(text)
        except YamlRejected as exc:
            file.warn("malformed", str(exc))
            return None
        except (ValueError, RecursionError, MemoryError, TypeError) as exc:
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
        spec = read_spec(entry.raw)
        collector = Collector(inputs)
        command = command_words(spec, collector)
        url = collector.url(spec.url, "url") if spec.url else None
        for name, value in spec.env:
            collector.value(name, value, f"env:{name}")
        for name, value in spec.headers:
            collector.value(name, value, f"header:{name}", header=True)
        for name, value in spec.settings:
            if is_secret_name(name) or classify(value.strip()):
                collector.value(name, value, f"setting:{name}")
        for where, reference in spec.references:
            collector.reference(where, reference)
            collector.service_from_name(referenced_name(reference))
        detail: dict[str, Any] = {
            "client": client,
            "transport": transport_of(spec, client),
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
    """Why a file did not parse, without quoting it."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return message[:200]
