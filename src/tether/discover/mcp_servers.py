"""One MCP server's configuration, whatever the client's format (Claude, Cursor, VS Code,
Zed's ``{path, args, env}``, Continue's ``transport``, Codex's ``*_env_var`` names ...),
read into a :class:`Spec`: its command and arguments, environment, URL, headers,
references and settings; its transport; a name for a server given without one.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PureWindowsPath
from typing import Any
from urllib.parse import urlsplit

from tether.discover.mcp_literals import is_secret_name

__all__ = [
    "MAX_ITEMS",
    "Spec",
    "derived_name",
    "is_scalar",
    "package_name",
    "read_spec",
    "scalar",
    "transport_of",
]

MAX_ITEMS = 500  # arguments / env entries / headers per server
_RUNNERS = frozenset(
    {"npx", "uvx", "bunx", "pnpx", "node", "python", "python3", "uv", "pipx", "deno", "bun"}
)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [scalar(v) for v in value[:MAX_ITEMS] if is_scalar(v)]
    return []


def is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not isinstance(value, complex)


def scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pairs(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, Mapping):
        return []
    out = []
    for key, item in list(value.items())[:MAX_ITEMS]:
        if is_scalar(key) and is_scalar(item):
            out.append((scalar(key), scalar(item)))
    return out


def package_name(word: str) -> str:
    """``@scope/pkg@1.2`` → ``@scope/pkg``; ``pkg==1.0`` → ``pkg``; image tags kept off."""
    text = word.strip()
    if text.startswith("@"):
        scope, _, rest = text.partition("/")
        return f"{scope}/{rest.split('@', 1)[0]}".lower()
    return re.split(r"@|==|>=|:(?!//)", text, maxsplit=1)[0].lower()


@dataclass
class Spec:
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


def read_spec(raw: Mapping[str, Any], depth: int = 0) -> Spec:
    """One server's configuration, whatever the client's format."""
    spec = Spec()
    _spec_command(raw, spec, depth)
    _spec_remote(raw, spec)
    transport = raw.get("transport")
    if isinstance(transport, Mapping) and depth == 0:  # Continue's experimental form
        inner = read_spec(transport, depth + 1)
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


def _spec_command(raw: Mapping[str, Any], spec: Spec, depth: int) -> None:
    command = raw.get("command")
    if isinstance(command, Mapping) and depth == 0:  # Zed's older {path, args, env}
        zed = {key: command.get(key) for key in ("args", "env")}
        inner = read_spec({"command": command.get("path"), **zed}, depth + 1)
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


def _spec_remote(raw: Mapping[str, Any], spec: Spec) -> None:
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


def _spec_codex(raw: Mapping[str, Any], spec: Spec) -> None:
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
        if is_secret_name(variable):
            spec.references.append((f"env:{variable}", "${" + variable + "}"))


def _flatten(value: Mapping[Any, Any], prefix: str = "", depth: int = 0) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for key, item in list(value.items())[:MAX_ITEMS]:
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and depth < 3:
            out.extend(_flatten(item, f"{name}.", depth + 1))
        elif isinstance(item, str):
            out.append((name, item))
    return out


def transport_of(spec: Spec, client: str) -> str:
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


def derived_name(spec: Spec, index: int) -> str:
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
                return package_name(word)
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
