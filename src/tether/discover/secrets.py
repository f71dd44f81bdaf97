"""Secrets written in files: ``.env`` files, configuration (JSON, YAML, TOML, INI, cfg,
properties), shell scripts, Dockerfiles, docker-compose files, source code.

Detection is detect-secrets' named detectors (:mod:`tether.discover.detectors`: run
directly, no global detect-secrets settings touched, nothing verified, nothing sent
anywhere) plus the AI-provider key patterns of :mod:`tether.discover.ai_keys`. A value
found by a keyword, by its entropy or in a Kubernetes Secret is typed by the one
classifier every scanner uses, :func:`tether.discover.classify.secret_type` (by its form,
else by its name: ``password``, ``api-key``, ``token``, ``secret`` ...), so it is reported as
the same credential wherever it is found.

Speed (about 40 times detect-secrets' own ``scan_file``): each plugin first gets a cheap
whole-text test — a literal every match holds (``str`` search), or a "gate" pattern that
matches wherever the plugin may (run in C over the text or its lower-case copy) — and only
the lines that pass are analysed with the plugin's own patterns, the way detect-secrets
does; the AI prefixes are found with ``str.find`` and the key pattern tried only there;
entropy is computed only for quoted strings long enough to pass the limit and assigned to
a secret-sounding name.

Rules (one :class:`Finding` per secret, kind ``credential``, flags ``plaintext-secret`` and
``static-key`` — not ``static-key`` for a JWT, which is a token):

* **AI keys** anywhere, by prefix (``sk-proj-``, ``sk-ant-api03-``, ``gsk_``, ``hf_`` ...);
  keys without a prefix (Mistral, Cohere, DeepSeek ...) only when assigned to a name that
  says whose they are (``MISTRAL_API_KEY=...``).
* **detect-secrets' named detectors** (AWS, GitHub, GitLab, Slack, Stripe, private keys,
  JWTs, basic-auth URLs ...; not ``IPPublicDetector``: an address is not a credential). A
  private key is reported only as a PEM block with a body, fingerprinted by that body (not
  by the ``BEGIN`` line every key shares).
* **Keywords** (detect-secrets' ``KeywordDetector``: ``password = ...``, ``api_key: ...``;
  ``.env`` files, shell scripts, Dockerfiles and properties are read as configuration,
  where values need no quotes), without the values that are names of things
  (``secretName: openai-credentials``, ``password_file: /run/...``), paths, URLs, or
  sentences.
* **High-entropy strings** (detect-secrets' limits: base64 > 4.5, hex > 3.0) only when
  assigned to a secret-sounding name (``token``, ``secret``, ``key``, ``password`` ...):
  alone they are hashes, checksums and IDs far more often than secrets.
* **Kubernetes Secrets**: each ``data`` (base64-decoded) / ``stringData`` value that is a
  secret, fingerprinted decoded; any base64 value found by another rule that decodes to a
  recognised key is reported and fingerprinted decoded too, so the same key matches
  wherever it is found (a workload that uses it carries it: see
  :mod:`tether.discover.kubernetes`).
* ``name`` is the variable / key the secret is assigned to (``OPENAI_API_KEY``,
  ``DATABASE_URL``, ``apiKey``; for a YAML ``- name: X`` / ``value: ...`` pair, ``X``),
  else the credential type; ``pointer`` is the JSON / YAML / TOML path of the string that
  holds the secret (``$.openrouter.apiKey``, ``$[doc 1].data.token`` in a multi-document
  YAML file); when two secrets of a file would still have the same ID, the later ones get
  a pointer ``<name>#2`` ... (stable when lines are inserted above). ``where`` is the name,
  else ``<path>:<line>``.
* **Never reported**: placeholders (:func:`tether.discover.placeholders.is_placeholder`:
  ``sk-xxxx``, ``sk-...``, ``<OPENAI_API_KEY>``, ``${OPENAI_API_KEY}``, ``YOUR_API_KEY``,
  ``changeme``, ``scott:tiger``, one repeated character, runs, AWS' ``...EXAMPLE`` keys),
  values under 4 characters, a basic-auth password that decodes to words
  (``a%20secret``), detect-secrets' own false-positive filters (templated,
  ``$``-prefixed, sequential, UUID, ID-like, indirect references such as
  ``password = get_password()``), and lines allowlisted with
  detect-secrets' ``pragma: allowlist secret`` (or ``allowlist nextline secret`` above).
* **Documentation** (``*.md``, ``*.rst``, ``*.adoc``, ``*.txt``, anything under a
  ``docs/`` or ``doc/`` directory) and **example files** (``.env.example``,
  ``*.sample``, ``*.template``, ``*.dist``): only high-confidence patterns — prefixed AI
  keys and the distinctive named detectors (AWS, GitHub, GitLab, Slack, Stripe, SendGrid,
  PyPI, npm, Square, Azure storage, OpenAI, PEM private keys). A real key pasted into a
  README is a leak; ``password: secret`` in prose is not.
* **Not scanned** (:meth:`SecretsScanner.wants`): lockfiles, minified bundles and source
  maps, images / fonts / archives / media / model weights and other binary formats, and
  detect-secrets baselines (``.secrets.baseline``: hashes, not secrets).
"""

from __future__ import annotations

import bisect
import json
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from detect_secrets.filters.heuristic import (
    is_indirect_reference,
    is_likely_id_string,
    is_not_alphanumeric_string,
    is_potential_uuid,
    is_prefixed_with_dollar_sign,
    is_sequential_string,
    is_templated_secret,
)
from detect_secrets.plugins.keyword import (
    CONFIG_DENYLIST_REGEX_TO_GROUP,
    QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP,
    REGEX_BY_FILETYPE,
)
from detect_secrets.util.filetype import determine_file_type

from tether.discover import ai_keys, detectors
from tether.discover.classify import (
    classify_source,
    decode_base64,
    is_placeholder,
    name_type,
    secret_type,
)
from tether.discover.interface import Credential, Finding, SourceFile
from tether.discover.safe_yaml import YamlRejected, load_yaml

__all__ = ["SecretsScanner"]

# -- which files ------------------------------------------------------------------------------

_SKIP_NAMES = frozenset(
    {
        "package-lock.json",
        "npm-shrinkwrap.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "bun.lockb",
        "poetry.lock",
        "pipfile.lock",
        "uv.lock",
        "pdm.lock",
        "cargo.lock",
        "composer.lock",
        "gemfile.lock",
        "podfile.lock",
        "go.sum",
        "gradle.lockfile",
        "packages.lock.json",
        "brewfile.lock.json",
        "cartfile.resolved",
        "package.resolved",
        "flake.lock",
        "mix.lock",
        "pubspec.lock",
        ".secrets.baseline",
        ".ds_store",
    }
)
_SKIP_SUFFIXES = (
    ".min.js",
    ".min.css",
    ".min.mjs",
    ".bundle.js",
    ".chunk.js",
    ".map",
    ".lock",
    ".svg",
    ".css",
    ".scss",
    ".less",
    ".snap",
)
_SKIP_EXTENSIONS = frozenset(
    {
        # images, fonts, media
        ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".ico", ".webp", ".tif", ".tiff", ".psd",
        ".eot", ".ttf", ".otf", ".woff", ".woff2", ".mp3", ".mp4", ".wav", ".ogg", ".avi",
        ".mov", ".webm", ".flac",
        # archives, packages, binaries
        ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".tar", ".s7z", ".jar", ".war",
        ".whl", ".egg", ".exe", ".dll", ".so", ".dylib", ".bin", ".class", ".pyc", ".pyo",
        ".o", ".a", ".dmg", ".iso", ".deb", ".rpm", ".wasm",
        # documents and data that are not text configuration
        ".pdf", ".doc", ".docx", ".xls", ".xlsx", ".ppt", ".pptx", ".realm", ".mo",
        ".parquet", ".avro", ".orc", ".arrow", ".feather", ".npy", ".npz", ".pkl",
        ".pickle", ".h5", ".hdf5", ".onnx", ".pt", ".pth", ".safetensors", ".gguf", ".ckpt",
        ".tflite", ".db", ".sqlite", ".sqlite3",
        # IDE files detect-secrets skips too
        ".iml", ".ipr", ".iws", ".prefs", ".sum",
    }
)  # fmt: skip
_DOC_EXTENSIONS = frozenset({".md", ".markdown", ".mdx", ".rst", ".adoc", ".asciidoc", ".txt"})
_DOC_DIRS = frozenset({"docs", "doc"})
_EXAMPLE_SUFFIXES = (".example", ".sample", ".template", ".tmpl", ".dist")
# Read as configuration (unquoted values) by the keyword detector.
_CONFIG_LIKE = frozenset(
    {".env", ".sh", ".bash", ".zsh", ".ksh", ".fish", ".envrc", ".cnf", ".conf", ".cfg", ".ini"}
)


def _is_config_like(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered.startswith(".env")
        or lowered.startswith("dockerfile")
        or lowered.endswith(".dockerfile")
        or lowered.endswith(".env")
        or PurePosixPath(lowered).suffix in _CONFIG_LIKE
        or lowered in (".npmrc", ".pypirc", ".netrc", "credentials", ".pgpass")
    )


def _is_doc(relpath: str) -> bool:
    path = PurePosixPath(relpath)
    name = path.name.lower()
    if path.suffix.lower() in _DOC_EXTENSIONS:
        return True
    if any(part.lower() in _DOC_DIRS for part in path.parts[:-1]):
        return True
    return name.endswith(_EXAMPLE_SUFFIXES)


# -- detectors ------------------------------------------------------------------------------


# Rank: which detector wins when several find the same secret on one line.
_RANK_AI, _RANK_AI_HINTED, _RANK_K8S, _RANK_NAMED, _RANK_KEYWORD, _RANK_ENTROPY = range(6)


@dataclass(frozen=True)
class _Hit:
    line: int  # 1-based
    col: int  # where the value starts in the line (-1: unknown)
    value: str  # never leaves this module: only its fingerprint does
    type: str
    detector: str
    rank: int
    name: str | None = None
    pointer: str | None = None
    owns_line: bool = False  # a Kubernetes Secret entry: other rules' hits there are its


class _Text:
    """The text, its lines (split on ``\\n`` only, like line numbers elsewhere) and the
    line an offset is on, computed on first use."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] | None = None
        self._lines: list[str] | None = None
        self._lower: str | None = None

    @property
    def lower(self) -> str | None:
        """The text in lower case, when that keeps every offset (None otherwise)."""
        if self._lower is None:
            self._lower = self.text.lower()
        return self._lower if len(self._lower) == len(self.text) else None

    @property
    def starts(self) -> list[int]:
        if self._starts is None:
            self._starts = [0, *(m.end() for m in re.finditer("\n", self.text))]
        return self._starts

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = [line.rstrip() for line in self.text.split("\n")]
        return self._lines

    def lineno(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)

    def line(self, number: int) -> str:
        lines = self.lines
        return lines[number - 1] if 0 < number <= len(lines) else ""


class _Parsed:
    """The file read as JSON / YAML / TOML, on first use (for pointers and Kubernetes
    Secrets); no documents when it is none of those or does not parse: the secrets scanner
    does not warn about malformed configuration, the scanners that read it do."""

    def __init__(self, filename: str, text: str) -> None:
        self.suffix = PurePosixPath(filename.lower()).suffix
        self.text = text
        self._documents: list[Any] | None = None
        self.lines: list[int] = []

    def documents(self) -> list[Any]:
        if self._documents is None:
            self._documents = self._parse()
        return self._documents

    def _parse(self) -> list[Any]:
        try:
            if self.suffix == ".json":
                return [json.loads(self.text)]
            if self.suffix == ".toml":
                return [tomllib.loads(self.text)]
            if self.suffix in (".yaml", ".yml"):
                docs = load_yaml(self.text)
                self.lines = docs.lines
                return docs.documents
        except (YamlRejected, ValueError, RecursionError):
            return []
        return []

    def root(self, index: int) -> str:
        return f"$[doc {index}]" if len(self.documents()) > 1 else "$"


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _step(key: object) -> str:
    if isinstance(key, int) and not isinstance(key, bool):
        return f"[{key}]"
    text = str(key)
    return f".{text}" if _IDENTIFIER.fullmatch(text) else f"[{json.dumps(text)}]"


_WALK_BUDGET = 200_000


def _with_pointers(hits: list[_Hit], parsed: _Parsed) -> list[_Hit]:
    """Each hit found in a string of a JSON / YAML / TOML file gets that string's path."""
    wanted = [h for h in hits if h.pointer is None]
    if not wanted or parsed.suffix not in (".json", ".toml", ".yaml", ".yml"):
        return hits
    documents = parsed.documents()
    found: dict[str, str] = {}
    budget = _WALK_BUDGET
    for index, document in enumerate(documents):
        stack: list[tuple[Any, str]] = [(document, parsed.root(index))]
        while stack and budget > 0 and len(found) < len(wanted):
            node, path = stack.pop()
            budget -= 1
            if isinstance(node, dict):
                stack.extend((v, path + _step(k)) for k, v in reversed(list(node.items())))
            elif isinstance(node, list):
                stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(node))))
            elif isinstance(node, str):
                for hit in wanted:
                    if hit.value not in found and hit.value in node:
                        found[hit.value] = path
    return [
        replace(h, pointer=found[h.value]) if h.pointer is None and h.value in found else h
        for h in hits
    ]


# -- the scanner ------------------------------------------------------------------------------


class SecretsScanner:
    """Secrets in files (see the module documentation for the rules)."""

    name = "secrets"

    def wants(self, path: Path) -> bool:
        name = path.name.lower()
        if name in _SKIP_NAMES or name.endswith(_SKIP_SUFFIXES):
            return False
        return path.suffix.lower() not in _SKIP_EXTENSIONS

    def scan(self, file: SourceFile) -> Iterable[Finding]:
        text = file.read()
        if text is None:
            return []
        if not text:
            return []
        relpath = file.relpath
        hits = _detect(file, text, relpath)
        return _findings(hits, relpath)


def _detect(file: SourceFile, text: str, relpath: str) -> list[_Hit]:
    engine = detectors.engine()
    doc = _is_doc(relpath)
    filename = file.path.name
    source = _Text(text)
    parsed = _Parsed(filename, text)
    hits = _patterned(engine, source, doc)
    if not doc:
        hits.extend(_keywords(engine, source, filename))
        hits.extend(_hinted(source))
        hits.extend(_entropy(engine, source))
        if filename.lower().endswith((".yaml", ".yml", ".json")):
            hits.extend(_yaml_env_pairs(engine, source, filename))
            hits.extend(_k8s_secrets(parsed, source))
    return _with_pointers(_filter(hits, source), parsed)


def _patterned(
    engine: detectors.Engine, source: _Text, doc: bool, *, pem: bool = True
) -> list[_Hit]:
    """The prefixed AI keys and what detect-secrets' named detectors find (in a document,
    only the high-confidence ones; PEM private keys only with ``pem``)."""
    hits: list[_Hit] = []
    for match in ai_keys.find_keys(source.text):
        line = source.lineno(match.start)
        col = match.start - source.starts[line - 1]
        hits.append(_Hit(line, col, match.value, match.type, "tether:ai-keys", _RANK_AI))
    for regex_plugin in engine.regex_plugins:
        if doc and not regex_plugin.high_confidence:
            continue
        if not pem and regex_plugin.name == "PrivateKeyDetector":
            continue
        hits.extend(_named(regex_plugin, source))
    return hits


def _lines_matching(probes: Iterable[tuple[re.Pattern[str], bool]], source: _Text) -> list[int]:
    """The lines where any probe matches (every line a match spans); a probe marked for
    the lower-case text runs case-insensitively when lower-casing would move offsets."""
    found: set[int] = set()
    for probe, on_lower in probes:
        text = source.text
        if on_lower:
            lower = source.lower
            if lower is None:
                probe = re.compile(probe.pattern, probe.flags | re.IGNORECASE)  # noqa: PLW2901
            else:
                text = lower
        at = 0
        while (match := probe.search(text, at)) is not None:
            first = source.lineno(match.start())
            last = source.lineno(max(match.end() - 1, match.start()))
            found.update(range(first, last + 1))
            # on to the next line: one search per line marked, not one per match on it
            at = source.starts[last] if last < len(source.starts) else len(text) + 1
            if at > len(text):
                break
    return sorted(found)


def _named(regex_plugin: detectors.RegexPlugin, source: _Text) -> Iterator[_Hit]:
    name = regex_plugin.name
    if regex_plugin.literals and not any(lit in source.text for lit in regex_plugin.literals):
        return
    for number in _lines_matching(regex_plugin.gates, source):
        line = source.line(number)
        if name == "PrivateKeyDetector":
            hit = _private_key(source, number)
            if hit is not None:
                yield hit
            continue
        for value in detectors.regex_values(regex_plugin, line):
            kind = detectors.type_of(name, value)
            yield _Hit(number, line.find(value), value, kind, f"detect-secrets:{name}", _RANK_NAMED)


_PEM = re.compile(
    r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY((?: BLOCK)?)-----(?P<body>.*?)"
    r"-----END \1PRIVATE KEY\2-----",
    re.DOTALL,
)
_PEM_NOISE = re.compile(r"\\[nr]|[\s\"',]|^[A-Za-z-]+:.*$", re.MULTILINE)


def _private_key(source: _Text, number: int) -> _Hit | None:
    """A PEM private key starting on this line, fingerprinted by its body."""
    start = source.starts[number - 1]
    line = source.line(number)
    match = _PEM.search(source.text, start, min(len(source.text), start + 64 * 1024))
    if match is None or source.lineno(match.start()) != number:
        return None
    body = _pem_body(match)
    if body is None:
        return None
    col = line.find("-----BEGIN")
    return _Hit(number, col, body, "private-key", "detect-secrets:PrivateKeyDetector", _RANK_NAMED)


def _pem_body(match: re.Match[str]) -> str | None:
    """The body of a PEM private key block (what it is fingerprinted by: the base64 without
    line breaks, quotes or headers), or None when it holds no key."""
    body = _PEM_NOISE.sub("", match.group("body"))
    if len(body) < 64 or len(set(body)) < 20 or not re.fullmatch(r"[A-Za-z0-9+/=]+", body):
        return None
    return body


def _keyword_regexes(filename: str) -> Any:
    if _is_config_like(filename):
        return CONFIG_DENYLIST_REGEX_TO_GROUP
    return REGEX_BY_FILETYPE.get(
        determine_file_type(filename), QUOTES_REQUIRED_DENYLIST_REGEX_TO_GROUP
    )


_NOT_A_SECRET_NAME = re.compile(
    r"(?i)(?:name|names|ref|refs|file|files|path|paths|dir|directory|type|kind|id|ids|len|"
    r"length|field|header|env|var|variable|mount|volume|provider|manager|version|rotation|"
    r"policy|url|uri|endpoint|host|hash|hashed|sha|sha256|digest|checksum|rounds|"
    r"format|regex|pattern|prompt|label|description|help|hint|placeholder|template|schema|"
    r"count|min|max|timeout|ttl|expiry|expires|enabled|required|store|backend|"
    r"fingerprint|thumbprint)$"
)
_NAME_PARTS = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_KEBAB_NAME = re.compile(r"^[a-z]+(?:[-.][a-z0-9]+)+$")
# A class or constant name, not a password: _EllipticCurvePrivateKey, RSAPrivateKey.
_IDENTIFIER_LIKE = re.compile(r"^_[A-Za-z_]+$|^[A-Z]*[a-z]*(?:[A-Z][a-z]+){2,}$")


def _not_a_secret_name(name: str | None) -> bool:
    if not name:
        return False
    parts = [p for p in _NAME_PARTS.split(name) if p]
    return bool(parts) and bool(_NOT_A_SECRET_NAME.fullmatch(parts[-1]))


def _clean_keyword_value(value: str) -> str | None:
    value = value.strip()
    if " #" in value:
        value = value.split(" #", 1)[0].strip()
    value = value.rstrip(";,)").strip().strip("\"'`")
    if (
        len(value) < 4
        or any(c.isspace() for c in value)
        or _IDENTIFIER_LIKE.match(value)
        or value.startswith(("/", "./", "../", "~/", "http://", "https://", "file:"))
        or "(" in value
        or _KEBAB_NAME.match(value)
    ):
        return None
    return value


def _line_type(line: str) -> str:
    """A keyword's value with no name to go by: a password when the line says so."""
    return "password" if re.search(r"(?i)pass|pwd|contrase", line) else "secret"


def _keywords(engine: detectors.Engine, source: _Text, filename: str) -> Iterator[_Hit]:
    regexes = _keyword_regexes(filename)
    gate = (
        (engine.keyword_gate, True) if source.lower is not None else (engine.keyword_gate_ci, False)
    )
    for number in _lines_matching((gate,), source):
        yield from _keyword_line(engine, source.line(number), number, regexes)


def _keyword_line(engine: detectors.Engine, line: str, number: int, regexes: Any) -> Iterator[_Hit]:
    if len(line) > 4000 or is_indirect_reference(line):
        return
    for raw in engine.keyword.analyze_string(line, denylist_regex_to_group=regexes):
        if not isinstance(raw, str):
            continue
        value = _clean_keyword_value(raw)
        if value is None:
            continue
        col = line.find(value)
        name = _name_at(line, col) if col >= 0 else None
        if _not_a_secret_name(name):
            continue
        kind = secret_type(value, name) if name else _line_type(line)
        yield _Hit(number, col, value, kind, "detect-secrets:KeywordDetector", _RANK_KEYWORD, name)


def _hinted(source: _Text) -> Iterator[_Hit]:
    lower = source.lower if source.lower is not None else source.text.lower()
    numbers: set[int] = set()
    for word in ai_keys.HINT_LITERALS:
        at = lower.find(word)
        while at >= 0:
            numbers.add(source.lineno(at) if source.lower is not None else 0)
            at = lower.find(word, at + 1)
    if 0 in numbers:  # offsets moved by lower-casing: look at every line
        numbers = set(range(1, len(source.lines) + 1))
    for number in sorted(numbers):
        line = source.line(number)
        for name, value, col, kind in ai_keys.find_hinted(line):
            yield _Hit(number, col, value, kind, "tether:ai-keys", _RANK_AI_HINTED, name)


_SECRET_NAME = re.compile(
    r"(?i)key|token|secret|passw|pwd|credential|auth|private|signature|cookie|session|bearer"
)


def _entropy(engine: detectors.Engine, source: _Text) -> Iterator[_Hit]:
    for plugin in engine.entropy:
        # Shannon entropy over n symbols is at most log2(n): shorter strings cannot pass.
        shortest = int(2**plugin.entropy_limit) + 1
        for match in plugin.regex.finditer(source.text):
            value = match.group(2)
            if len(value) < shortest:
                continue
            number = source.lineno(match.start(2))
            line = source.line(number)
            col = match.start(2) - source.starts[number - 1]
            name = _name_at(line, col - 1)
            if not name or not _SECRET_NAME.search(name) or _not_a_secret_name(name):
                continue
            if plugin.calculate_shannon_entropy(value) <= plugin.entropy_limit:
                continue
            detector = f"detect-secrets:{type(plugin).__name__}"
            yield _Hit(number, col, value, secret_type(value, name), detector, _RANK_ENTROPY, name)


_ENV_PAIR = re.compile(
    r"""^[ \t]*-?[ \t]*name:[ \t]*["']?(?P<name>[A-Za-z_][\w.-]*)["']?[ \t]*\r?\n"""
    r"""[ \t]*value:[ \t]*(?P<value>\S.*)$""",
    re.MULTILINE,
)


def _yaml_env_pairs(engine: detectors.Engine, source: _Text, filename: str) -> Iterator[_Hit]:
    """``- name: DB_PASSWORD`` / ``value: ...`` (Kubernetes, compose): read as
    ``DB_PASSWORD: ...``."""
    if "value:" not in source.text:
        return
    regexes = _keyword_regexes(filename)
    for match in _ENV_PAIR.finditer(source.text):
        name, value = match.group("name"), match.group("value")
        number = source.lineno(match.start("value"))
        col = match.start("value") - source.starts[number - 1]
        synthetic = f"{name}: {value}"
        shift = col - (len(name) + 2)
        for hit in _keyword_line(engine, synthetic, number, regexes):
            yield replace(hit, col=hit.col + shift, name=name)
        for _, hinted, at, kind in ai_keys.find_hinted(synthetic):
            yield _Hit(number, at + shift, hinted, kind, "tether:ai-keys", _RANK_AI_HINTED, name)


_K8S_SECRET = re.compile(r"""(?m)^\s*["']?kind["']?\s*:\s*["']?Secret["']?\s*,?\s*$""")


def _k8s_secrets(parsed: _Parsed, source: _Text) -> Iterator[_Hit]:
    """Each secret value of a Kubernetes Secret manifest (``data`` decoded)."""
    if not _K8S_SECRET.search(source.text):
        return
    documents = parsed.documents()
    for index, doc in enumerate(documents):
        if not isinstance(doc, dict) or doc.get("kind") != "Secret":
            continue
        start = source.starts[parsed.lines[index] - 1] if index < len(parsed.lines) else 0
        for field in ("data", "stringData"):
            entries = doc.get(field)
            if not isinstance(entries, dict):
                continue
            for key, raw in entries.items():
                if not isinstance(key, str) or not isinstance(raw, str):
                    continue
                value = decode_base64(raw) if field == "data" else raw.strip()
                root = parsed.root(index)
                hit = _k8s_entry(source, start, root, field, key, raw, value)
                if hit is not None:
                    yield hit


_SECRETISH_KEY = re.compile(
    r"(?i)pass|pwd|token|secret|key|credential|auth|private|\.pem$|\.p12$|\.pfx$|\.jks$"
)
_PUBLIC_KEY = re.compile(r"(?i)(?:\.crt|cert|ca\.pem|public|pub|user|username|name|host|port|url)$")


def _k8s_entry(
    source: _Text, start: int, root: str, field: str, key: str, raw: str, value: str | None
) -> _Hit | None:
    if not value or is_placeholder(value) or len(value) < 6:
        return None
    typed = classify_source(value, key)
    kind, detector = typed or (ai_keys.type_for_name(key), "tether:k8s-secret")
    if kind is None:
        if not _SECRETISH_KEY.search(key) or _PUBLIC_KEY.search(key):
            return None
        kind = name_type(key)
    where = re.compile(rf"""(?m)^[ \t]*["']?{re.escape(key)}["']?[ \t]*:""")
    found = where.search(source.text, start)
    number = source.lineno(found.start()) if found else source.lineno(start)
    line = source.line(number)
    col = line.find(raw[:16]) if raw else -1
    pointer = f"{root}.{field}{_step(key)}"
    return _Hit(number, col, value, kind, detector, _RANK_K8S, key, pointer, owns_line=True)


# -- filtering and naming ---------------------------------------------------------------------

_ALLOW = re.compile(r"pragma:\s*(?:allow|white)list[ -]secret")
_ALLOW_NEXT = re.compile(r"pragma:\s*allowlist[ -]nextline[ -]secret")
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")


def _ds_filtered(hit: _Hit, line: str) -> bool:
    """detect-secrets' default false-positive filters for a value."""
    value = hit.value
    if hit.detector == "detect-secrets:PrivateKeyDetector":
        return False
    plugin: Any = None
    if hit.rank in (_RANK_KEYWORD, _RANK_ENTROPY):
        engine = detectors.engine()
        plugin = engine.keyword if hit.rank == _RANK_KEYWORD else engine.entropy[0]
    else:
        # any regex-based plugin: not ID-filtered
        plugin = detectors.engine().regex_plugins[0].plugin
    return bool(
        is_sequential_string(value)
        or is_potential_uuid(value)
        or is_likely_id_string(value, line, plugin)
        or is_templated_secret(value)
        or is_prefixed_with_dollar_sign(value)
        or is_not_alphanumeric_string(value)
    )


def _upgrade_base64(hit: _Hit) -> _Hit:
    """A base64 value that decodes to a recognised key (an AI key, or one of
    detect-secrets' named kinds): reported, and fingerprinted, decoded."""
    if hit.rank < _RANK_NAMED or len(hit.value) % 4 or not _BASE64.fullmatch(hit.value):
        return hit
    decoded = decode_base64(hit.value)
    if not decoded or is_placeholder(decoded):
        return hit
    typed = classify_source(decoded, hit.name)
    if typed is None:
        return hit
    return replace(hit, value=decoded, type=typed[0], detector=typed[1] + "+base64", rank=_RANK_AI)


def _filter(hits: list[_Hit], source: _Text, *, file: bool = True) -> list[_Hit]:
    """The hits that are secrets (see the rules), named. In a ``file``, detect-secrets'
    allowlist comments are obeyed and a base64 value that decodes to a key is reported
    decoded; in a free text (a tool's result, :mod:`tether.discover.redaction`) neither:
    whoever wrote the text may not say what is a secret, and what is redacted is the value
    as written."""
    kept: list[_Hit] = []
    for found in hits:
        hit = found
        line = source.line(hit.line)
        if file and (_ALLOW.search(line) or _ALLOW_NEXT.search(source.line(hit.line - 1))):
            continue
        if is_placeholder(hit.value) or (hit.rank >= _RANK_NAMED and len(hit.value) < 4):
            continue
        if hit.type == "basic-auth-password":
            decoded = unquote(hit.value)
            if any(c.isspace() for c in decoded) or is_placeholder(decoded):
                continue
        if hit.rank >= _RANK_NAMED and _ds_filtered(hit, line):
            continue
        if hit.name is None:
            hit = replace(hit, name=_name_at(line, hit.col, source.line(hit.line - 1)))
        kept.append(_upgrade_base64(hit) if file else hit)
    return _dedupe(kept)


def _dedupe(hits: list[_Hit]) -> list[_Hit]:
    """One hit per secret per line: the best-ranked detector; the others' name/pointer
    fill in what it lacks."""
    by_line: dict[int, list[_Hit]] = {}
    for hit in hits:
        by_line.setdefault(hit.line, []).append(hit)
    out: list[_Hit] = []
    for number in sorted(by_line):
        group = sorted(by_line[number], key=lambda h: (h.rank, -len(h.value), h.col))
        owned = any(h.owns_line for h in group)
        chosen: list[_Hit] = []
        for hit in group:
            same = next((c for c in chosen if _overlaps(c.value, hit.value)), None)
            if same is not None:
                merged = replace(
                    same,
                    name=same.name or hit.name,
                    pointer=same.pointer or hit.pointer,
                    col=same.col if same.col >= 0 else hit.col,
                    owns_line=same.owns_line or hit.owns_line,
                )
                chosen[chosen.index(same)] = merged
                continue
            if owned and not hit.owns_line and hit.rank > _RANK_AI:
                continue
            chosen.append(hit)
        out.extend(sorted(chosen, key=lambda h: h.col))
    return out


def _overlaps(a: str, b: str) -> bool:
    return a == b or (len(b) >= 8 and b in a) or (len(a) >= 8 and a in b)


_NAME_BEFORE = (
    # name: Type = "..." (TypeScript, Python annotations, Kotlin); var name Type = (Go)
    re.compile(r"""(?P<name>[A-Za-z_$][\w$]*)\s*:\s*[A-Za-z_][\w<>\[\]|., ]*\s*=\s*["'`]?\s*$"""),
    re.compile(r"""\b(?:var|const)\s+(?P<name>\w+)\s+[\w.\[\]*]+\s*=\s*["'`]?\s*$"""),
    re.compile(
        r"""(?P<name>[A-Za-z_$@][\w.$@\-]*)\s*["'`]?\s*\]?\s*(?::=|=>|\?=|\+=|==|=|:)\s*"""
        r"""[(\[]?\s*@?[rbuRBUf]?["'`]?\s*$"""
    ),
    re.compile(r"""(?i)^\s*(?:ENV|ARG)\s+(?P<name>[\w.-]+)\s+["']?$"""),
    re.compile(r"""(?i)\b(?:setenv|export|set)\s+(?P<name>[A-Za-z_]\w*)\s+["']?$"""),
    re.compile(r"""--?(?P<name>[A-Za-z][\w-]*)(?:\s+|=)["']?$"""),
    re.compile(r"""(?i)(?P<name>[A-Za-z][\w-]*)\s*:\s*(?:Bearer|Basic|Token|Bot)\s+$"""),
    re.compile(r"""<(?P<name>[\w.:-]+)(?:\s[^>]*)?>\s*$"""),
)
_URL_TAIL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S*$")
_JSON_NAME = re.compile(r""""name"\s*:\s*"(?P<name>[^"]{1,100})\"""")


_YAML_NAME = re.compile(
    r"""^[ \t]*-?[ \t]*name:[ \t]*["']?(?P<name>[A-Za-z_][\w.-]*)["']?[ \t]*$"""
)


def _name_at(line: str, col: int, previous: str = "") -> str | None:
    """The variable / key a value starting at ``col`` is assigned to (for ``value``: the
    ``name`` beside it, on the line or the one above)."""
    if col < 0:
        return None
    prefix = _URL_TAIL.sub("", line[max(0, col - 400) : col])
    for pattern in _NAME_BEFORE:
        match = pattern.search(prefix)
        if match:
            name = match.group("name").strip(".-$@")[:100]
            if name.lower() == "value":
                named = _JSON_NAME.search(line) or _YAML_NAME.match(previous)
                return named.group("name") if named else name
            return name or None
    return None


def _findings(hits: list[_Hit], relpath: str) -> list[Finding]:
    findings: list[Finding] = []
    ids: dict[str, int] = {}
    for hit in hits:
        label = hit.name or hit.type
        pointer = hit.pointer
        key = pointer if pointer is not None else label
        seen = ids.get(key, 0) + 1
        ids[key] = seen
        if seen > 1:
            pointer = f"{key}#{seen}"
        flags = ("plaintext-secret",) if hit.type == "jwt" else ("plaintext-secret", "static-key")
        findings.append(
            Finding(
                kind="credential",
                name=label,
                scanner=SecretsScanner.name,
                path=relpath,
                line=hit.line,
                pointer=pointer,
                credentials=(
                    Credential.of(hit.type, hit.value, where=hit.name or f"{relpath}:{hit.line}"),
                ),
                flags=flags,
                detail={"detector": hit.detector},
            )
        )
    return findings
