"""What one MCP server reaches and holds, from its command, arguments, environment,
headers and URL: access rules (``filesystem:<dir>``, ``database:...``, ``url:<origin>``,
``<service>:api``, ``browser``, ``shell`` ...), flags (``wildcard``, ``admin``,
``plaintext-secret``, ``static-key``) and credentials (fingerprints only), gathered by a
:class:`Collector`; :func:`command_words` is the command line shown, secrets replaced.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from pathlib import PureWindowsPath

from tether.discover.classify import classify, is_placeholder
from tether.discover.interface import Credential, fingerprint
from tether.discover.mcp_literals import (
    AUTH_SCHEME,
    is_secret_name,
    literal_secret_type,
    reference_in,
    referenced_name,
)
from tether.discover.mcp_servers import MAX_ITEMS, Spec, package_name
from tether.discover.mcp_urls import URL_IN_TEXT, analyse_url

__all__ = ["Collector", "command_words"]

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


class Collector:
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
        found = analyse_url(url, where)
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
            ref = reference_in(password)
            if ref is not None:
                self.reference(f"{where}:password", ref)
            elif password and not is_placeholder(password):
                self.secret("url-password", password, f"{where}:password")
        return match.group(1) + match.group(3)

    def value(self, name: str, value: str, where: str, *, header: bool = False) -> None:
        """An environment / header / setting value: a reference, a secret, a URL, or none."""
        text = value.strip()
        bare = AUTH_SCHEME.sub("", text) if header else text
        secretish = is_secret_name(name) or (header and name.lower() == "authorization")
        ref = reference_in(bare)
        if ref is not None and "://" not in bare:
            referenced = referenced_name(ref)
            is_input = ref.startswith("${input:")
            password_input = is_input and self.inputs.get(referenced, False)
            if secretish or is_secret_name(referenced) or password_input:
                self.reference(where, ref)
                self.service_from_name(name if secretish else referenced)
            return
        for match in URL_IN_TEXT.finditer(bare):
            self.url(match.group(), where)
        if "://" in bare:
            return
        kind = literal_secret_type(name, bare)
        if kind is not None:
            self.secret(kind, bare, where)
            self.service_from_name(name)

    def service_from_name(self, name: str) -> None:
        """A credential's variable names the service it is for (``GITHUB_TOKEN``)."""
        upper = name.upper()
        for marker, service in _SERVICE_ENV:
            if marker in upper:
                self.reach(service)


def command_words(spec: Spec, collector: Collector) -> list[str]:
    """The command line for ``detail``, secrets replaced; access and credentials noted."""
    if spec.command is None:
        return []
    words = [spec.command, *spec.args[:MAX_ITEMS]]
    shown = [words[0]] + [_argument(words, index, collector) for index in range(1, len(words))]
    program = PureWindowsPath(words[0]).name.lower()
    _service_access(words, collector)
    _path_access(words, collector)
    if program in ("docker", "podman", "docker.exe", "podman.exe"):
        _container_access(words, collector)
    return shown


def _argument(words: list[str], index: int, collector: Collector) -> str:
    """``words[index]`` as shown; a secret in it is noted and replaced by its fingerprint."""
    word = words[index]
    if "://" in word:
        shown = word
        for match in URL_IN_TEXT.finditer(word):
            url = match.group()
            shown = shown.replace(url, collector.url(url, f"arg:{index - 1}"))
        return shown
    header = _HEADER_ARGUMENT.match(word)
    after_flag = words[index - 1] in _HEADER_FLAGS
    if header is not None and (after_flag or is_secret_name(header.group(1))):
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
        if literal_secret_type(name, value) is not None:
            return f"{name}=<secret:{fingerprint(value)}>"
        return word
    if not word.startswith("-") and _SECRET_FLAG.match(words[index - 1]):  # --token VALUE
        hidden = _flag_value(words[index - 1], word, collector)
        return word if hidden is None else hidden
    known = classify(word)
    if known is not None:
        collector.secret(known, word, f"arg:{index - 1}")
        return f"<secret:{fingerprint(word)}>"
    return word


_HEADER_ARGUMENT = re.compile(r"^([A-Za-z][\w-]*):\s*(\S.*)$", re.S)
_HEADER_FLAGS = frozenset({"--header", "-H", "--headers"})


def _header_argument(name: str, value: str, collector: Collector) -> str | None:
    """``Authorization: Bearer ...`` given as an argument (``mcp-remote --header``): noted;
    the text to show instead, if secret."""
    collector.value(name, value, f"header:{name}", header=True)
    bare = AUTH_SCHEME.sub("", value.strip())
    if reference_in(bare) is None and literal_secret_type(name, bare) is not None:
        return f"{name}: <secret:{fingerprint(bare)}>"
    return None


def _flag_value(flag: str, value: str, collector: Collector) -> str | None:
    """The value of a secret-looking flag: noted; the text to show instead, if secret."""
    name = flag.lstrip("-")
    if not is_secret_name(name):
        known = classify(value)
        if known is None:
            return None
        collector.secret(known, value, f"arg:{flag}")
        return f"<secret:{fingerprint(value)}>"
    if reference_in(value) is not None:
        collector.reference(f"arg:{flag}", value)
        return None
    kind = literal_secret_type(name, value)
    if kind is None:
        return None
    collector.secret(kind, value, f"arg:{flag}")
    return f"<secret:{fingerprint(value)}>"


def _is_path(word: str) -> bool:
    return word.startswith(("/", "~", ".", "\\", "$")) or bool(re.match(r"^[A-Za-z]:[\\/]", word))


def _service_access(words: list[str], collector: Collector) -> None:
    """Well-known servers, by package or image name."""
    for word in words:
        if _is_path(word) or "://" in word or word.startswith("-"):
            continue
        package = package_name(word)
        for marker, service in _SERVICE_PACKAGES:
            if marker in package:
                collector.reach(service)
                if service == "shell":
                    collector.flags.add("wildcard")


def _path_access(words: list[str], collector: Collector) -> None:
    """Directories given to a filesystem server, the repository of a git server, the
    database file of an SQLite server."""
    packages = [package_name(word) for word in words]
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


def _container_access(words: list[str], collector: Collector) -> None:
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
