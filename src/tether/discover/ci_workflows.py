"""CI jobs that run agents: GitHub Actions workflows (``.github/workflows/*.yml|yaml``).

A job is an *agent job* when one of these holds (each is a reason in ``detail.agent``):

* a step (or the job itself, for a reusable workflow or a ``container:``) uses an agent
  action: a known one (``anthropics/claude-code-action``, ``openai/codex-action``,
  ``google-github-actions/run-gemini-cli``, ``actions/ai-inference``, ``coderabbitai/*``,
  ``paul-gauthier/aider``, ``Aider-AI/*``, ``qodo-ai/pr-agent`` ...), or one whose name holds
  an agent word (``claude``, ``codex``, ``gemini``, ``copilot``, ``aider``, ``openai``,
  ``anthropic``, ``mcp``, ``llm``, ``gpt``, ``langgraph``, ``crewai`` ..., or ``pr-agent`` /
  ``ai-agent`` / ``coding-agent``), or a ``docker://`` image whose name holds ``agent`` (an
  ``ssh-agent`` or ``gpg-agent`` is not one);
* a ``run:`` script runs an agent CLI (``claude``, ``codex``, ``gemini``, ``aider``,
  ``opencode``, ``gh copilot``, ``langgraph``, ``crewai``, an ``mcp`` server ...;
  also behind ``npx``/``uvx``/``pipx run``/``sudo``/``VAR=x``), ``python -m`` an agent module
  (a module name holding ``agent(s)``, ``mcp``, ``aider``, ``crewai``, ``langgraph`` ...), or
  installs/runs an agent package (``@anthropic-ai/claude-code``, ``@openai/codex``,
  ``@google/gemini-cli``, ``@modelcontextprotocol/...``, ``aider-chat``);
* the job's environment carries an AI provider's key: an ``env``/``with``/``secrets`` entry or
  a ``secrets.X`` reference whose name names a provider (``OPENAI_API_KEY``,
  ``ANTHROPIC_API_KEY``, ``CLAUDE_CODE_OAUTH_TOKEN``, ``GEMINI_API_KEY`` ...). The
  workflow-level ``env`` is part of every job's environment, so a provider key there makes
  every job of the workflow an agent job.

Other jobs (lint, test, build) are not reported. One :class:`Finding` per agent job: kind
``ci-workflow``, name ``<workflow file stem>/<job id>``, pointer ``$.jobs.<job id>``, the line
of the job's key.

Credentials: every ``${{ secrets.X }}`` (or ``secrets['X']``) the job can see (its own keys,
and the workflow-level ``env``) is a ``ci-secret`` credential ``where="secrets.X"`` whose
fingerprint is that of the reference (GitHub keeps the value); ``toJSON(secrets)`` is
``secrets.*``, and so is ``secrets: inherit`` (a reusable workflow given every secret). A
literal key written in the file (a known key format anywhere in the job,
or a secret-looking value under a secret-looking ``env``/``with`` name, typed by
:mod:`tether.discover.classify` as every scanner types it; placeholders such as
``sk-your-key-here`` or ``AKIA...EXAMPLE`` are not keys) is kept as a fingerprint only and
flags the job ``plaintext-secret`` and ``static-key``. A ``secrets.X`` whose name ends in
``KEY`` (an API or access key: long-lived) also flags ``static-key``.

Access is the job's effective ``GITHUB_TOKEN`` permissions, as GitHub computes them: the
job's ``permissions`` when it has them (they *replace* the workflow's, scopes left out are
``none``), else the workflow's, else the repository default. Each scope granted is
``github:<scope>:<read|write>``; ``write-all``/``read-all`` are ``github:*:write``/
``github:*:read``; the repository default is ``github:default``. Flags: ``admin`` and
``wildcard`` for ``write-all``; ``admin`` also when no ``permissions`` apply and a trigger
runs with the base repository's token — any trigger but ``pull_request``,
``pull_request_review``, ``pull_request_review_comment`` (read-only for forks; a
same-repository branch's author can write already) and ``workflow_call`` (the caller
decides) — because the default token is read/write on every scope in repositories and
organisations still on the permissive (pre-2023) default, which a workflow file cannot
rule out. ``pull_request_target`` on an agent job is a risk in ``detail.risks`` (the agent
runs with secrets and a writable token on untrusted pull requests), more so when the job
checks out the pull request's head.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tether.discover.ai_keys import type_for_name
from tether.discover.classify import classify, find_keys, is_placeholder, name_type
from tether.discover.interface import Credential, Finding, SourceFile
from tether.discover.safe_yaml import YamlRejected, key_lines, load_yaml

__all__ = ["CiWorkflowScanner"]

_NAME = "ci-workflows"
_MAX_NODES = 50_000  # values visited per workflow (anchors are visited once)
_MAX_LIST = 50  # entries kept in a detail list

# -- what makes a job an agent job ---------------------------------------------------------

_KNOWN_ACTIONS = (
    "anthropics/claude-code-action",
    "anthropics/claude-code-base-action",
    "openai/codex-action",
    "google-github-actions/run-gemini-cli",
    "actions/ai-inference",
    "coderabbitai/",
    "paul-gauthier/aider",
    "aider-ai/",
    "qodo-ai/pr-agent",
    "codium-ai/pr-agent",
    "sweepai/",
    "github/copilot-",
)
_AGENT_WORDS = frozenset(
    {
        "claude",
        "codex",
        "gemini",
        "copilot",
        "aider",
        "openai",
        "anthropic",
        "anthropics",
        "mcp",
        "llm",
        "gpt",
        "chatgpt",
        "langchain",
        "langgraph",
        "crewai",
        "autogen",
        "coderabbit",
        "coderabbitai",
        "smolagents",
        "opencode",
    }
)
_AGENT_COMPOUND = re.compile(r"(?:^|[^a-z0-9])(?:ai|pr|coding|code|swe|llm|review)[-_]agents?\b")
_NOT_AGENTS = frozenset({"ssh", "gpg"})  # ssh-agent, gpg-agent
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")

_AGENT_CLIS = frozenset(
    {
        "claude",
        "claude-code",
        "codex",
        "gemini",
        "aider",
        "opencode",
        "cursor-agent",
        "qwen",
        "crewai",
        "langgraph",
        "copilot",
    }
)
_MODULE_WORDS = frozenset(
    {
        "agent",
        "agents",
        "aider",
        "crewai",
        "langgraph",
        "autogen",
        "mcp",
        "smolagents",
        "claude",
        "openai",
        "anthropic",
    }
)
_AGENT_PACKAGES = re.compile(
    r"@anthropic-ai/claude-code\b|@openai/codex\b|@google/gemini-cli\b"
    r"|@modelcontextprotocol/[A-Za-z0-9._-]+|(?<![\w-])aider-chat\b"
)
_WRAPPERS = frozenset(  # words before the command that runs (and shell keywords)
    {
        *("sudo", "time", "exec", "env", "nohup", "timeout", "command", "xargs"),
        *("npx", "bunx", "pnpx", "uvx"),
        *("if", "then", "else", "elif", "do", "while", "until", "!"),
    }
)
_DURATION = re.compile(r"^\d+(?:\.\d+)?[smhd]?$")  # timeout 600 claude ...
_RUNNERS = {  # two-word wrappers: "pipx run claude", "uv run python -m agents"
    ("pipx", "run"),
    ("uv", "run"),
    ("poetry", "run"),
    ("pipenv", "run"),
    ("pnpm", "dlx"),
    ("yarn", "dlx"),
    ("npm", "exec"),
}
_SEGMENTS = re.compile(r"&&|\|\||\$\(|[;|&()`\n{}]")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(?:\d+(?:\.\d+)?)?$")

# -- credentials ---------------------------------------------------------------------------

# ${{ ... }}; the body stops at the next "${{" so that unclosed ones cost linear time
_EXPRESSION = re.compile(r"\$\{\{((?:(?!\}\}|\$\{\{).)*)\}\}", re.DOTALL)
_SECRET_DOT = re.compile(r"(?<![\w.])secrets\s*\.\s*([A-Za-z_][A-Za-z0-9_-]*)")
_SECRET_INDEX = re.compile(r"(?<![\w.])secrets\s*\[\s*(['\"])([^'\"]+)\1\s*\]")
_ALL_SECRETS = re.compile(r"toJSON\s*\(\s*secrets\s*\)", re.IGNORECASE)
_SECRET_NAME = re.compile(  # not a bare "key" (actions/cache's), nor a cache key
    r"^(?!.*cache)(?:.*[_-])?(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$"
    r"|^(?!.*cache).+[_-]KEY$",
    re.IGNORECASE,
)

# -- permissions ---------------------------------------------------------------------------

_READ_ONLY_FOR_FORKS = frozenset(
    {"pull_request", "pull_request_review", "pull_request_review_comment", "workflow_call"}
)
_LEVELS = ("read", "write")
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class CiWorkflowScanner:
    """Agent jobs in GitHub Actions workflows."""

    name = _NAME

    def wants(self, path: Path) -> bool:
        parts = path.parts
        return (
            path.suffix.lower() in (".yml", ".yaml")
            and len(parts) >= 3
            and parts[-2] == "workflows"
            and parts[-3] == ".github"
        )

    def scan(self, file: SourceFile) -> Iterable[Finding]:
        parsed = _parse(file)
        if parsed is None:
            return []
        data, job_lines = parsed
        jobs = data.get("jobs")
        if jobs is None:
            if data:
                file.warn("malformed", "no jobs")
            return []
        if not isinstance(jobs, dict):
            file.warn("malformed", "jobs is not a mapping")
            return []
        workflow = _Workflow(file, data)
        found: list[Finding] = []
        for job_key, job in jobs.items():
            job_id = str(job_key)
            if not isinstance(job, dict):
                file.warn("malformed", f"job {job_id[:40]} is not a mapping")
                continue
            finding = workflow.job(job_id, job, job_lines.get(job_id))
            if finding is not None:
                found.append(finding)
        return found


def _parse(file: SourceFile) -> tuple[dict[Any, Any], dict[str, int]] | None:
    """The workflow and the line of each job's key; None (warned) when it is not YAML."""
    text = file.text
    if not text.strip():
        return None
    try:
        docs = load_yaml(text, max_documents=1)  # (the reader refuses control characters)
    except YamlRejected as exc:
        file.warn("malformed", str(exc))
        return None
    data = docs.documents[0] if docs.documents else None
    if data is None:
        return None
    if not isinstance(data, dict):
        file.warn("malformed", "not a mapping")
        return None
    lines = key_lines(docs.nodes[0], depth=2)
    return data, {str(k[1]): v for k, v in lines.items() if len(k) == 2 and k[0] == "jobs"}


class _Workflow:
    def __init__(self, file: SourceFile, data: dict[Any, Any]) -> None:
        self.file = file
        self.data = data
        self.stem = Path(file.relpath).stem
        name = data.get("name")
        self.title = name if isinstance(name, str) and name.strip() else self.stem
        self.triggers = _triggers(data.get("on", data.get(True)))
        self.env = data.get("env")
        self.has_permissions = "permissions" in data
        self.permissions = data.get("permissions")

    def job(self, job_id: str, job: dict[Any, Any], line: int | None) -> Finding | None:
        pointer = _pointer("$.jobs", job_id)
        seen = _Seen(self, pointer)
        if self.env is not None:
            for path, value in _strings(self.env, ("env",)):
                seen.string(path, value, workflow_level=True)
        for path, value in _strings(job, ()):
            seen.string(path, value, workflow_level=False)
        if not seen.agent:
            return None
        if job.get("secrets") == "inherit":  # a reusable workflow given every secret
            seen.credentials.setdefault(
                ("ci-secret", "secrets.*"),
                Credential.of("ci-secret", "secrets.*", "secrets.*", plaintext=False),
            )
        access, flags, shown, source = self._access(job)
        flags |= seen.flags
        detail: dict[str, Any] = {
            "workflow": self.title,
            "triggers": self.triggers,
            "actions": seen.actions[:_MAX_LIST],
            "agent": seen.agent[:_MAX_LIST],
            "runs_on": _plain(job.get("runs-on")),
            "permissions": shown,
            "permissions_from": source,
        }
        risks = self._risks(seen)
        if risks:
            detail["risks"] = risks
        if job.get("secrets") == "inherit":
            detail["secrets_inherited"] = True
        environment = job.get("environment")
        if environment is not None:
            detail["environment"] = _plain(environment)
        return Finding(
            kind="ci-workflow",
            name=f"{self.stem}/{job_id}",
            scanner=_NAME,
            path=self.file.relpath,
            line=line,
            pointer=pointer,
            access=tuple(access),
            credentials=tuple(seen.credentials.values()),
            flags=tuple(sorted(flags)),
            detail=detail,
        )

    def _access(self, job: dict[Any, Any]) -> tuple[list[str], set[str], Any, str]:
        if "permissions" in job:
            value, source = job.get("permissions"), "job"
        elif self.has_permissions:
            value, source = self.permissions, "workflow"
        else:
            writes = any(t not in _READ_ONLY_FOR_FORKS for t in self.triggers)
            return ["github:default"], {"admin"} if writes else set(), "default", "default"
        if value == "write-all":
            return ["github:*:write"], {"admin", "wildcard"}, "write-all", source
        if value == "read-all":
            return ["github:*:read"], set(), "read-all", source
        if value is None or value == {}:
            return [], set(), {}, source
        if not isinstance(value, dict):
            self.file.warn("malformed", "permissions is neither a mapping nor read/write-all")
            return [], set(), _plain(value), source
        access: list[str] = []
        shown: dict[str, str] = {}
        for scope, level in value.items():
            level_text = str(level).lower()
            shown[str(scope)] = level_text
            if level_text in _LEVELS:
                access.append(f"github:{scope}:{level_text}")
        return sorted(access), set(), shown, source

    def _risks(self, seen: _Seen) -> list[str]:
        risks: list[str] = []
        if "pull_request_target" in self.triggers:
            risks.append(
                "pull_request_target: the agent runs with the base repository's secrets and "
                "token on untrusted pull requests"
            )
            if seen.checks_out_head:
                risks.append("pull_request_target checks out the pull request's head")
        return risks


class _Seen:
    """What one job's strings say: agent reasons, actions, credentials, flags."""

    def __init__(self, workflow: _Workflow, pointer: str) -> None:
        self.workflow = workflow
        self.pointer = pointer
        self.agent: list[str] = []
        self.actions: list[str] = []
        self.credentials: dict[tuple[str, str], Credential] = {}
        self.flags: set[str] = set()
        self.checks_out_head = False

    def reason(self, why: str) -> None:
        if why not in self.agent:
            self.agent.append(why)

    def string(self, path: tuple[str, ...], value: str, *, workflow_level: bool) -> None:
        key = path[-1] if path else ""
        container = path[-2] if len(path) >= 2 else ""
        where = ("$" if workflow_level else self.pointer) + "".join(
            _pointer("", part) if not part.startswith("[") else part for part in path
        )
        if not workflow_level:
            self._job_string(path, key, value)
        if "github.event.pull_request.head" in value:
            self.checks_out_head = True
        self._secrets(value, key)
        if container in ("env", "with", "secrets") and value.strip():
            kind = type_for_name(key)
            if kind is not None:
                self.reason(f"{container} {key} ({kind})")
        self._literal(where, key, container, value)

    def _job_string(self, path: tuple[str, ...], key: str, value: str) -> None:
        is_step_uses = key == "uses" and (len(path) == 1 or (len(path) == 3 and path[0] == "steps"))
        if is_step_uses:
            action = value.strip()
            if action not in self.actions:
                self.actions.append(action)
            if _agent_action(action):
                self.reason(f"uses {action}")
        elif path in (("container",), ("container", "image")) and _agent_image(value):
            self.reason(f"container {value.strip()}")
        elif key == "run" and len(path) == 3 and path[0] == "steps":
            for why in _agent_commands(value):
                self.reason(why)

    def _secrets(self, value: str, key: str) -> None:
        texts = [m.group(1) for m in _EXPRESSION.finditer(value)]
        if key == "if":  # conditions are expressions without ${{ }}
            texts.append(value)
        for text in texts:
            names = [m.group(1) for m in _SECRET_DOT.finditer(text)]
            names += [m.group(2) for m in _SECRET_INDEX.finditer(text)]
            if _ALL_SECRETS.search(text):
                names.append("*")
                self.reason("all secrets (toJSON(secrets))")
            for name in names:
                where = f"secrets.{name}"
                self.credentials.setdefault(
                    ("ci-secret", where),
                    Credential.of("ci-secret", where, where, plaintext=False),
                )
                if name.upper().endswith("KEY"):
                    self.flags.add("static-key")
                kind = type_for_name(name)
                if kind is not None:
                    self.reason(f"secret {name} ({kind})")

    def _literal(self, where: str, key: str, container: str, value: str) -> None:
        found = [(match.type, match.value) for match in find_keys(value)]
        if not found and container in ("env", "with") and _looks_secret(value):
            text = value.strip()
            kind = classify(text, key)
            if kind is None and (type_for_name(key) is not None or _SECRET_NAME.search(key)):
                kind = name_type(key)
            if kind is not None:
                found.append((kind, text))
        for kind, secret in found:
            credential = Credential.of(kind, secret, where)
            self.credentials.setdefault((credential.fingerprint, where), credential)
            self.flags |= {"plaintext-secret", "static-key"}


# -- helpers -------------------------------------------------------------------------------


def _triggers(on: Any) -> list[str]:
    if isinstance(on, str):
        return [on]
    if isinstance(on, list):
        return [str(t) for t in on if isinstance(t, str | int | float)][:_MAX_LIST]
    if isinstance(on, dict):
        return [str(t) for t in on][:_MAX_LIST]
    return []


def _strings(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string in ``value`` with its path (keys; ``[i]`` for list items). Each mapping
    or list is visited once, so YAML anchors and aliases cannot make this blow up."""
    seen: set[int] = set()
    stack: list[tuple[tuple[str, ...], Any]] = [(path, value)]
    visited = 0
    while stack and visited < _MAX_NODES:
        where, item = stack.pop()
        visited += 1
        if isinstance(item, str):
            yield where, item
        elif isinstance(item, dict | list):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                children = [((*where, str(k)), v) for k, v in item.items()]
            else:
                children = [((*where, f"[{i}]"), v) for i, v in enumerate(item)]
            stack.extend(reversed(children))


def _pointer(base: str, key: str) -> str:
    if _PLAIN_KEY.match(key):
        return f"{base}.{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"{base}['{escaped}']"


def _words(text: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(text.lower()) if w]


def _agent_action(uses: str) -> bool:
    action = uses.strip().lower()
    if action.startswith("docker://"):
        return _agent_image(action[len("docker://") :])
    name = action.split("@", 1)[0]
    if any(name.startswith(known) for known in _KNOWN_ACTIONS):
        return True
    words = _words(name)
    return bool(_AGENT_WORDS.intersection(words)) or bool(_AGENT_COMPOUND.search(name))


def _agent_image(image: str) -> bool:
    words = _words(image.split("@", 1)[0])
    if _AGENT_WORDS.intersection(words):
        return True
    return any(
        w in ("agent", "agents") and (i == 0 or words[i - 1] not in _NOT_AGENTS)
        for i, w in enumerate(words)
    )


def _agent_commands(script: str) -> list[str]:
    reasons: list[str] = []
    for package in _AGENT_PACKAGES.findall(script):
        reasons.append(f"runs {package}")
    for segment in _SEGMENTS.split(script):
        why = _agent_command(segment.split())
        if why is not None:
            reasons.append(why)
    return list(dict.fromkeys(reasons))


def _agent_command(words: list[str]) -> str | None:
    i = 0
    while i < len(words):
        word = words[i].strip("'\"")
        if (
            _ASSIGNMENT.match(word)
            or word.startswith("-")
            or word in _WRAPPERS
            or (i > 0 and _DURATION.match(word))
        ):
            i += 1
        elif i + 1 < len(words) and (word, words[i + 1]) in _RUNNERS:
            i += 2
        else:
            break
    if i >= len(words):
        return None
    command = words[i].strip("'\"")
    base = command.rsplit("/", 1)[-1]
    if base.startswith("@"):  # a scoped npm package: @scope/name@version
        return None  # (the package list decides)
    base = base.split("@", 1)[0]
    following = [w.strip("'\"") for w in words[i + 1 : i + 4]]
    if base in _AGENT_CLIS:
        return f"runs {base}"
    if base == "gh" and following[:1] == ["copilot"]:
        return "runs gh copilot"
    if "mcp" in _words(base):
        return f"runs {base}"
    if _PYTHON.match(base) and len(following) >= 2 and following[0] == "-m":
        module = following[1]
        if _MODULE_WORDS.intersection(_words(module)):
            return f"runs python -m {module}"
    return None


def _looks_secret(value: str) -> bool:
    """A literal value that could be a key: long, one word, not an expression, not a
    placeholder, of mixed characters."""
    text = value.strip()
    if len(text) < 16 or len(text) > 512 or any(c.isspace() for c in text):
        return False
    if "${{" in text or "://" in text or is_placeholder(text):
        return False
    kinds = (
        any(c.islower() for c in text),
        any(c.isupper() for c in text),
        any(c.isdigit() for c in text),
    )
    return sum(kinds) >= 2


def _plain(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON-safe data (YAML may hold dates, binary, sets ...), capped."""
    if value is None or isinstance(value, bool | int | float | str):
        return value[:200] if isinstance(value, str) else value
    if depth > 4:
        return "..."
    if isinstance(value, dict):
        return {str(k)[:100]: _plain(v, depth + 1) for k, v in list(value.items())[:_MAX_LIST]}
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value[:_MAX_LIST]]
    return str(value)[:200]
