"""Kubernetes manifests: the workloads that run agents, the keys they are given, and the
rights their ServiceAccounts get.

A manifest file is YAML (or JSON), one or more documents, each a resource or a ``List``
of them. The scanner reads:

* **workloads** (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController,
  Job, CronJob, Pod, and any kind with a pod template at ``spec.template.spec``): a
  workload runs an agent when a container's image names an agent framework or a model
  server (langchain, langgraph, crewai, autogen, openai-agents, llama-index, ollama, vllm,
  an ``mcp`` or ``agent`` image that is not a known monitoring / CI agent ...), its command
  starts an MCP server (``mcp``, ``@modelcontextprotocol/...``), its environment names an
  AI provider (``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL`` ...) or holds an AI key, or it
  takes a key from a Secret that holds one;
* **Secrets** and **ConfigMaps**: their values are decoded (base64 for ``data``) only to
  classify and fingerprint them, never kept;
* **RBAC**: ServiceAccounts' rights through RoleBindings and ClusterRoleBindings to Roles
  and ClusterRoles (the built-in ``cluster-admin``, ``admin``, ``edit``, ``view`` by name).

One finding per agent workload: kind ``k8s-workload``, name ``<namespace>/<Kind>/<name>``,
the line of its resource, a pointer to its (first agent) container, ``access``
(``k8s:cluster-admin``, ``k8s:get,list secrets in agents`` ...), its credentials and
flags (``admin`` for cluster-admin or ``*`` verbs on ``*`` resources, ``wildcard`` for any
``*``, ``plaintext-secret`` / ``static-key`` for keys written in the manifests), and
``detail`` = ``{kind, namespace, images, serviceAccount, mcp, signals}``. Credentials:

* a literal ``env`` value that is an AI key, or a secret under a key / secret name:
  its type, ``where`` ``env:<NAME>``, plaintext;
* a ``secretKeyRef`` / ``envFrom: secretRef``: an ``env-reference`` (``where`` names the
  Secret and key), not plaintext, fingerprinted by the referenced value when the Secret is
  in the scan (else by the reference) — and then the value itself as a plaintext
  credential of its type (``where`` ``secret:<ns>/<secret>/<key>``): it is written in the
  repository (base64 is no protection), and the scan reports it with the workload that
  uses it rather than as a loose credential;
* a ``configMapKeyRef`` / ``envFrom: configMapRef`` value that is a secret: plaintext.

A (Cluster)RoleBinding that gives admin rights (cluster-admin, the built-in ``admin``, or
``*`` verbs on ``*`` resources) to an agent's ServiceAccount — an agent workload's anywhere
in the scan, or one whose name says agent / mcp / llm — is reported too, at the binding:
kind ``k8s-workload``, name ``<namespace or "cluster">/<Kind>/<name>``, ``detail`` =
``{kind, namespace, roleRef, serviceAccounts, workloads}``.

**Cross-file resolution.** A workload, its Secret, its ServiceAccount's bindings and the
roles they name are often in different files, so the scanner is stateful over a scan: by
default (``deferred=True``) :meth:`KubernetesScanner.scan` only records what a file holds
and yields nothing; :meth:`KubernetesScanner.finish`, called once after every file of the
scan, resolves everything and returns the findings (and resets the scanner for the next
scan). ``KubernetesScanner(deferred=False)`` resolves each file on its own in ``scan`` and
``finish`` returns nothing.

YAML is read with :func:`tether.discover.safe_yaml.load_yaml` (safe types, capped
documents, nodes and depth, no alias bombs); values are typed by
:mod:`tether.discover.classify`, the classifier every scanner shares. Malformed input is
warned about (``malformed``), never raised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tether.discover import ai_keys
from tether.discover.classify import (
    classify,
    decode_base64,
    is_ai_type,
    is_placeholder,
    name_type,
)
from tether.discover.interface import Credential, Finding, SourceFile, fingerprint
from tether.discover.safe_yaml import YamlDocuments, YamlRejected, load_yaml

__all__ = ["KubernetesScanner"]


def _short(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"[:160]


# -- what the manifests hold ------------------------------------------------------------------

_WORKLOAD_PODSPEC = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}

_AGENT_WORDS = re.compile(
    r"langchain|langgraph|langserve|crewai|autogen|\bag2\b|openai-agents|agents-sdk|"
    r"llama-?index|llama_index|ollama|vllm|text-generation-inference|litellm|openhands|"
    r"open-interpreter|semantic-kernel|haystack|smolagents|pydantic-ai|flowise|letta|memgpt|"
    r"autogpt|superagi|modelcontextprotocol",
    re.IGNORECASE,
)
_NOT_AI_AGENT = re.compile(
    r"datadog|newrelic|new-relic|dynatrace|elastic|grafana|jenkins|buildkite|teamcity|gitlab|"
    r"azure-pipelines|vsts|consul|vault|otel|opentelemetry|fluent|splunk|sysdig|instana|"
    r"zabbix|wazuh|crowdstrike|falcon|twistlock|portainer|rancher|cattle|nomad|spire|ssm-agent|"
    r"cloudwatch|omsagent|sentry|puppet|chef|salt|octopus|bamboo|drone|woodpecker|argo|"
    r"kube-state|node-exporter|prometheus|jaeger|zipkin|lightstep|honeycomb|logdna|sumologic",
    re.IGNORECASE,
)
# "mcp" as a word of the command: mcp-server-fetch, github-mcp-server, mcp_server, mcp run,
# @modelcontextprotocol/server-github.
_MCP_COMMAND = re.compile(
    r"@modelcontextprotocol/|(?:^|[^A-Za-z0-9])mcp(?:$|[^A-Za-z0-9])", re.IGNORECASE
)
_AI_ENV = re.compile(
    r"^(?:OPENAI|ANTHROPIC|AZURE_OPENAI|LANGCHAIN|LANGSMITH|LANGGRAPH|LANGFUSE|OLLAMA|MCP|"
    r"GEMINI|MISTRAL|COHERE|GROQ|HUGGINGFACE|HF_HUB|LITELLM|CREWAI|LLAMA_INDEX|VLLM|"
    r"OPENROUTER|PERPLEXITY|DEEPSEEK|XAI|REPLICATE|TOGETHER|FIREWORKS)_"
)
_SECRETISH = re.compile(
    r"(?i)pass(?:word|wd)?|pwd|token|secret|api_?key|apikey|private_?key|access_?key|"
    r"credential|auth"
)
_NOT_SECRETISH = re.compile(
    r"(?i)(?:name|ref|file|path|dir|url|uri|endpoint|host|port|user|username|type|id|"
    r"header|version|region|enabled|\.crt|\.pem|cert|public|timeout|ttl)$"
)
_AGENTISH_NAME = re.compile(r"(?i)agent|mcp|llm|langchain|langgraph|crewai|autogen|gpt|claude")

_BUILTIN_CLUSTER_ROLES = {
    "cluster-admin": ("k8s:cluster-admin", ("admin", "wildcard")),
    "admin": ("k8s:admin", ("admin",)),
    "edit": ("k8s:edit", ()),
    "view": ("k8s:view", ()),
}


@dataclass(frozen=True)
class _Value:
    """A Secret / ConfigMap value, classified (never kept): its AI key type (or None), the
    credential type to report it as, its fingerprint, whether it is a secret at all."""

    ai_type: str | None
    type: str
    fingerprint: str
    secretish: bool


@dataclass
class _Container:
    index: int
    group: str  # "containers" | "initContainers"
    image: str
    signals: list[str] = field(default_factory=list)
    credentials: list[Credential] = field(default_factory=list)
    secret_refs: list[tuple[str, str, str]] = field(default_factory=list)  # env, secret, key
    secret_envfrom: list[str] = field(default_factory=list)
    configmap_refs: list[tuple[str, str, str]] = field(default_factory=list)
    configmap_envfrom: list[str] = field(default_factory=list)
    mcp: bool = False


@dataclass
class _Workload:
    path: str
    kind: str
    namespace: str
    name: str
    line: int | None
    pointer: str  # to the pod spec
    service_account: str
    containers: list[_Container]


@dataclass
class _Binding:
    path: str
    kind: str
    namespace: str  # "" for a ClusterRoleBinding
    name: str
    line: int | None
    pointer: str
    role_kind: str
    role_name: str
    subjects: list[Mapping[str, Any]]


@dataclass
class _Scan:
    """What one scan has read so far."""

    workloads: list[_Workload] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict[str, _Value]] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], dict[str, _Value]] = field(default_factory=dict)
    roles: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    cluster_roles: dict[str, list[Any]] = field(default_factory=dict)
    bindings: list[_Binding] = field(default_factory=list)


# -- the scanner ------------------------------------------------------------------------------


class KubernetesScanner:
    """Agent workloads in Kubernetes manifests. See the module documentation for the
    ``finish()`` protocol: with the default ``deferred=True``, ``scan`` yields nothing and
    ``finish()`` (after the last file) returns every finding of the scan."""

    name = "kubernetes"

    def __init__(self, *, deferred: bool = True) -> None:
        self.deferred = deferred
        self._scan = _Scan()

    def wants(self, path: Path) -> bool:
        return path.suffix.lower() in (".yaml", ".yml", ".json")

    def scan(self, file: SourceFile) -> Iterable[Finding]:
        text = file.read()
        if text is None:
            return []
        if "apiVersion" not in text or "kind" not in text:
            return []
        state = self._scan if self.deferred else _Scan()
        try:
            _read_file(file, text, state)
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            file.warn("malformed", _short(exc))  # defensive: an unexpected shape
        if self.deferred:
            return []
        return _resolve(state)

    def finish(self) -> list[Finding]:
        """Every finding of the scan (resolved across all the files given to ``scan``);
        resets the scanner for the next scan."""
        state, self._scan = self._scan, _Scan()
        return _resolve(state) if self.deferred else []

    def scan_all(self, files: Iterable[SourceFile]) -> list[Finding]:
        """Convenience: ``scan`` every wanted file, then ``finish``."""
        found: list[Finding] = []
        for file in files:
            if self.wants(file.path):
                found.extend(self.scan(file))
        found.extend(self.finish())
        return found


# -- reading a file -----------------------------------------------------------------------------


def _read_file(file: SourceFile, text: str, state: _Scan) -> None:
    try:
        docs = load_yaml(text)
    except YamlRejected as exc:
        file.warn("malformed", str(exc))
        docs = exc.partial
    for index, doc in enumerate(docs.documents):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            file.warn("malformed", f"document {index} is not a mapping")
            continue
        line = docs.lines[index] if index < len(docs.lines) else None
        for resource, pointer, res_line in _resources(doc, f"$[doc {index}]", docs, line):
            _read_resource(file.relpath, resource, pointer, res_line, state)


def _resources(
    doc: dict[Any, Any], pointer: str, docs: YamlDocuments, line: int | None
) -> Iterator[tuple[dict[Any, Any], str, int | None]]:
    kind = doc.get("kind")
    if not isinstance(kind, str) or not isinstance(doc.get("apiVersion"), str):
        return
    if kind == "List" or kind.endswith("List"):
        items = doc.get("items")
        if isinstance(items, list):
            for i, item in enumerate(items):
                if isinstance(item, dict):
                    yield item, f"{pointer}.items[{i}]", docs.line_of(item) or line
        return
    yield doc, pointer, line


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _get(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, dict):
            return None
        mapping = mapping.get(key)
    return mapping


def _read_resource(
    path: str, res: dict[Any, Any], pointer: str, line: int | None, state: _Scan
) -> None:
    kind = _str(res.get("kind"))
    meta = _dict(res.get("metadata"))
    name = _str(meta.get("name")) or "(unnamed)"
    namespace = _str(meta.get("namespace")) or "default"
    if kind == "Secret":
        state.secrets[(namespace, name)] = _secret_values(res)
    elif kind == "ConfigMap":
        state.configmaps[(namespace, name)] = _configmap_values(res)
    elif kind == "Role":
        state.roles[(namespace, name)] = _rules(res)
    elif kind == "ClusterRole":
        state.cluster_roles[name] = _rules(res)
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = _dict(res.get("roleRef"))
        subjects: list[Mapping[str, Any]] = [
            s for s in _as_list(res.get("subjects")) if isinstance(s, dict)
        ]
        state.bindings.append(
            _Binding(
                path,
                kind,
                namespace if kind == "RoleBinding" else "",
                name,
                line,
                pointer,
                _str(ref.get("kind")) or "ClusterRole",
                _str(ref.get("name")),
                subjects,
            )
        )
    else:
        keys = _WORKLOAD_PODSPEC.get(kind)
        if keys is None and isinstance(_get(res, "spec", "template", "spec", "containers"), list):
            keys = ("spec", "template", "spec")  # a custom kind with a pod template
        if keys is None:
            return
        podspec = _get(res, *keys)
        if not isinstance(podspec, dict):
            return
        account = _str(podspec.get("serviceAccountName")) or _str(podspec.get("serviceAccount"))
        state.workloads.append(
            _Workload(
                path,
                kind,
                namespace,
                name,
                line,
                pointer + "".join(f".{k}" for k in keys),
                account or "default",
                _containers(podspec),
            )
        )


def _rules(res: dict[Any, Any]) -> list[Any]:
    rules = res.get("rules")
    return [r for r in rules if isinstance(r, dict)] if isinstance(rules, list) else []


def _classified(key: str, value: str) -> _Value:
    placeholder = is_placeholder(value)
    kind = classify(value, key) if not placeholder else None
    ai_type = kind if kind is not None and is_ai_type(kind) else None
    secretish = (
        bool(value)
        and not placeholder
        and (kind is not None or (bool(_SECRETISH.search(key)) and not _NOT_SECRETISH.search(key)))
    )
    if ai_type is None and secretish:
        ai_type = ai_keys.type_for_name(key)
    return _Value(ai_type, kind or name_type(key), fingerprint(value), secretish)


def _secret_values(res: dict[Any, Any]) -> dict[str, _Value]:
    values: dict[str, _Value] = {}
    data = res.get("data")
    if isinstance(data, dict):
        for key, raw in data.items():
            decoded = decode_base64(raw) if isinstance(raw, str) else None
            if isinstance(key, str) and decoded is not None:
                values[key] = _classified(key, decoded)
    string_data = res.get("stringData")
    if isinstance(string_data, dict):
        for key, raw in string_data.items():
            if isinstance(key, str) and isinstance(raw, str):
                values[key] = _classified(key, raw)
    return values


def _configmap_values(res: dict[Any, Any]) -> dict[str, _Value]:
    data = res.get("data")
    if not isinstance(data, dict):
        return {}
    return {
        key: _classified(key, raw)
        for key, raw in data.items()
        if isinstance(key, str) and isinstance(raw, str) and len(raw) <= 4096
    }


def _containers(podspec: dict[Any, Any]) -> list[_Container]:
    found = []
    for group in ("containers", "initContainers"):
        listed = podspec.get(group)
        if not isinstance(listed, list):
            continue
        for index, spec in enumerate(listed):
            if isinstance(spec, dict):
                found.append(_container(group, index, spec))
    return found


def _container(group: str, index: int, spec: dict[Any, Any]) -> _Container:
    image = _str(spec.get("image"))
    found = _Container(index, group, image)
    if image and _agent_image(image):
        found.signals.append(f"image:{image}")
    command = " ".join(
        str(part)
        for part in [*_as_list(spec.get("command")), *_as_list(spec.get("args"))]
        if isinstance(part, str | int | float)
    )
    framework = _AGENT_WORDS.search(command)
    if _MCP_COMMAND.search(command) or (image and _mcp_image(image)):
        found.mcp = True
        found.signals.append("mcp-server")
    elif framework is not None:
        found.signals.append(f"command:{framework.group(0).lower()}")
    for item in _as_list(spec.get("env")):
        if isinstance(item, dict):
            _env(found, item)
    for item in _as_list(spec.get("envFrom")):
        if not isinstance(item, dict):
            continue
        secret = _str(_get(item, "secretRef", "name"))
        if secret:
            found.secret_envfrom.append(secret)
        configmap = _str(_get(item, "configMapRef", "name"))
        if configmap:
            found.configmap_envfrom.append(configmap)
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _env(container: _Container, item: dict[Any, Any]) -> None:
    name = _str(item.get("name"))
    if not name:
        return
    key_type = ai_keys.type_for_name(name)
    if key_type is not None or _AI_ENV.match(name):
        container.signals.append(f"env:{name}")
    value = item.get("value")
    if isinstance(value, str) and value:
        kind = classify(value, name)
        ai = kind is not None and is_ai_type(kind)
        if kind is None and not is_placeholder(value) and len(value) >= 8:
            ai = key_type is not None
            if ai or (_SECRETISH.search(name) and not _NOT_SECRETISH.search(name)):
                kind = name_type(name)
        if kind is not None:
            container.credentials.append(Credential.of(kind, value, where=f"env:{name}"))
            if ai and f"env:{name}" not in container.signals:
                container.signals.append(f"env:{name}")
        return
    ref = _get(item, "valueFrom", "secretKeyRef")
    if isinstance(ref, dict) and _str(ref.get("name")):
        container.secret_refs.append((name, _str(ref.get("name")), _str(ref.get("key"))))
        return
    ref = _get(item, "valueFrom", "configMapKeyRef")
    if isinstance(ref, dict) and _str(ref.get("name")):
        container.configmap_refs.append((name, _str(ref.get("name")), _str(ref.get("key"))))


def _tokens(image: str) -> list[str]:
    ref = image.split("@", 1)[0].lower()
    return [t for t in re.split(r"[/:._-]+", ref) if t]


def _mcp_image(image: str) -> bool:
    return any(t.startswith("mcp") or t.endswith("mcp") for t in _tokens(image))


def _agent_image(image: str) -> bool:
    if _AGENT_WORDS.search(image) or _mcp_image(image):
        return True
    agentish = any(t in ("agent", "agents") or t.endswith("agent") for t in _tokens(image))
    return agentish and not _NOT_AI_AGENT.search(image)


# -- resolving a scan -------------------------------------------------------------------------


@dataclass
class _Grant:
    access: list[str]
    flags: set[str]
    admin: bool


def _resolve(state: _Scan) -> list[Finding]:
    findings: list[Finding] = []
    agent_accounts: dict[tuple[str, str], list[str]] = {}
    for workload in state.workloads:
        found = _workload_finding(workload, state)
        if found is not None:
            findings.append(found)
            key = (workload.namespace, workload.service_account)
            agent_accounts.setdefault(key, []).append(found.name)
    findings.extend(_binding_findings(state, agent_accounts))
    findings.sort(key=lambda f: (f.path, f.line or 0, f.name))
    return findings


def _workload_finding(workload: _Workload, state: _Scan) -> Finding | None:
    credentials: list[Credential] = []
    flags: set[str] = set()
    signals: list[str] = []
    agent_index: int | None = None
    mcp = False
    for container in workload.containers:
        own = list(container.signals)
        credentials.extend(container.credentials)
        if container.credentials:
            flags.update(("plaintext-secret", "static-key"))
        own.extend(_references(workload, container, state, credentials, flags))
        if own and agent_index is None:
            agent_index = workload.containers.index(container)
        signals.extend(s for s in own if s not in signals)
        mcp = mcp or container.mcp
    if agent_index is None:
        return None
    chosen = workload.containers[agent_index]
    grant = _grants_for(workload.namespace, workload.service_account, state)
    flags.update(grant.flags)
    return Finding(
        kind="k8s-workload",
        name=f"{workload.namespace}/{workload.kind}/{workload.name}",
        scanner=KubernetesScanner.name,
        path=workload.path,
        line=workload.line,
        pointer=f"{workload.pointer}.{chosen.group}[{chosen.index}]",
        access=tuple(grant.access),
        credentials=tuple(_unique(credentials)),
        flags=tuple(sorted(flags)),
        detail={
            "kind": workload.kind,
            "namespace": workload.namespace,
            "images": [c.image for c in workload.containers if c.image],
            "serviceAccount": workload.service_account,
            "mcp": mcp,
            "signals": signals,
        },
    )


def _unique(credentials: Iterable[Credential]) -> list[Credential]:
    seen: set[Credential] = set()
    out = []
    for credential in credentials:
        if credential not in seen:
            seen.add(credential)
            out.append(credential)
    return out


def _references(
    workload: _Workload,
    container: _Container,
    state: _Scan,
    credentials: list[Credential],
    flags: set[str],
) -> list[str]:
    """Credentials and agent signals from the Secrets / ConfigMaps a container reads.

    A ``secretKeyRef`` is always an ``env-reference`` credential (not plaintext); its
    fingerprint is the referenced value's when the Secret is in the scan (so it matches
    the same key found elsewhere), else the reference's (``<ns>/<secret>/<key>``). A
    secret value that the scanned manifests hold (a Secret's ``data`` / ``stringData``, a
    ConfigMap) is written in the repository (base64 is no protection): it is also carried
    as a plaintext credential of its own type (``where``: ``secret:<ns>/<name>/<key>``),
    so that the scan reports it with the workload rather than as a loose credential, and
    flags ``plaintext-secret`` and ``static-key``."""
    signals: list[str] = []
    namespace = workload.namespace

    def add(value: _Value | None, env: str, where: str, ref: str, configmap: bool) -> None:
        if configmap:
            if value is None or not value.secretish:
                return
            credentials.append(Credential(value.type, where, value.fingerprint))
        else:
            print_ = value.fingerprint if value is not None else fingerprint(ref)
            credentials.append(Credential("env-reference", where, print_, plaintext=False))
            if value is not None and value.secretish:  # and the Secret is in the scan
                stored = f"secret:{ref}"
                credentials.append(Credential(value.type, stored, value.fingerprint))
        if value is not None and value.secretish:
            flags.update(("plaintext-secret", "static-key"))
        ai_type = value.ai_type if value is not None else ai_keys.type_for_name(env)
        if ai_type is not None:
            signals.append(f"{'configMap' if configmap else 'secret'}:{ref}")

    for env, secret, key in container.secret_refs:
        store = state.secrets.get((namespace, secret))
        ref = f"{namespace}/{secret}/{key}"
        where = f"env:{env} (secretKeyRef {namespace}/{secret}:{key})"
        add(store.get(key) if store else None, env, where, ref, False)
    for secret in container.secret_envfrom:
        store = state.secrets.get((namespace, secret))
        if store is None:
            ref = f"{namespace}/{secret}"
            add(None, "", f"envFrom:secretRef {ref}", ref, False)
            continue
        for key, value in store.items():
            if value.secretish:
                ref = f"{namespace}/{secret}/{key}"
                add(value, key, f"env:{key} (envFrom secretRef {namespace}/{secret})", ref, False)
    for env, configmap, key in container.configmap_refs:
        store = state.configmaps.get((namespace, configmap))
        ref = f"{namespace}/{configmap}/{key}"
        where = f"env:{env} (configMapKeyRef {namespace}/{configmap}:{key})"
        add(store.get(key) if store else None, env, where, ref, True)
    for configmap in container.configmap_envfrom:
        store = state.configmaps.get((namespace, configmap)) or {}
        for key, value in store.items():
            ref = f"{namespace}/{configmap}/{key}"
            add(value, key, f"env:{key} (envFrom configMapRef {namespace}/{configmap})", ref, True)
    return signals


def _subject_matches(subject: Mapping[str, Any], binding: _Binding, ns: str, sa: str) -> bool:
    kind = _str(subject.get("kind"))
    name = _str(subject.get("name"))
    if kind == "ServiceAccount":
        subject_ns = _str(subject.get("namespace")) or binding.namespace or "default"
        return name == sa and subject_ns == ns
    if kind == "Group":
        return name in ("system:serviceaccounts", f"system:serviceaccounts:{ns}")
    if kind == "User":
        return name == f"system:serviceaccount:{ns}:{sa}"
    return False


def _grants_for(ns: str, sa: str, state: _Scan) -> _Grant:
    grant = _Grant([], set(), False)
    for binding in state.bindings:
        if any(_subject_matches(s, binding, ns, sa) for s in binding.subjects):
            _add_binding(grant, binding, state)
    return grant


def _add_binding(grant: _Grant, binding: _Binding, state: _Scan) -> None:
    scope = f" in {binding.namespace}" if binding.kind == "RoleBinding" else ""
    if binding.role_kind == "Role":
        rules = state.roles.get((binding.namespace, binding.role_name))
    else:
        rules = state.cluster_roles.get(binding.role_name)
    if rules is None:
        builtin = _BUILTIN_CLUSTER_ROLES.get(binding.role_name)
        if builtin is not None and binding.role_kind == "ClusterRole":
            access, flags = builtin
            _add(grant.access, access + scope)
            grant.flags.update(flags)
            grant.admin = grant.admin or "admin" in flags
        else:
            ref = "role" if binding.role_kind == "Role" else "clusterrole"
            _add(grant.access, f"k8s:{ref}/{binding.role_name}{scope}")
        return
    if binding.role_name == "cluster-admin" and binding.role_kind == "ClusterRole":
        _add(grant.access, "k8s:cluster-admin" + scope)
        grant.flags.update(("admin", "wildcard"))
        grant.admin = True
        return
    for rule in rules:
        granted, rule_flags = _rule(rule)
        if granted:
            _add(grant.access, granted + scope)
        grant.flags.update(rule_flags)
        grant.admin = grant.admin or "admin" in rule_flags


def _add(items: list[str], item: str) -> None:
    if item not in items:
        items.append(item)


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if isinstance(v, str | int)] if isinstance(value, list) else []


def _rule(rule: Mapping[str, Any]) -> tuple[str, set[str]]:
    verbs = _names(rule.get("verbs"))
    groups = _names(rule.get("apiGroups")) or [""]
    resources = _names(rule.get("resources"))
    urls = _names(rule.get("nonResourceURLs"))
    names = _names(rule.get("resourceNames"))
    flags: set[str] = set()
    if "*" in verbs or "*" in resources or "*" in groups or "*" in urls:
        flags.add("wildcard")
    if "*" in verbs and "*" in resources:
        flags.add("admin")
    targets: list[str] = []
    for resource in resources:
        for group in groups:
            target = resource if group in ("", "core") else f"{resource}.{group}"
            if resource == "*" and group == "*":
                target = "*"
            for named in names or [""]:
                _add(targets, f"{target}/{named}" if named else target)
    targets.extend(u for u in urls if u not in targets)
    if not verbs or not targets:
        return "", flags
    return f"k8s:{','.join(verbs)} {','.join(targets)}", flags


def _binding_findings(
    state: _Scan, agent_accounts: Mapping[tuple[str, str], Sequence[str]]
) -> list[Finding]:
    findings = []
    for binding in state.bindings:
        grant = _Grant([], set(), False)
        _add_binding(grant, binding, state)
        if not grant.admin:
            continue
        accounts: list[str] = []
        workloads: list[str] = []
        for subject in binding.subjects:
            if _str(subject.get("kind")) != "ServiceAccount":
                continue
            sa = _str(subject.get("name"))
            ns = _str(subject.get("namespace")) or binding.namespace or "default"
            users = agent_accounts.get((ns, sa), ())
            if users or _AGENTISH_NAME.search(sa):
                accounts.append(f"{ns}/{sa}")
                workloads.extend(w for w in users if w not in workloads)
        if not accounts:
            continue
        findings.append(
            Finding(
                kind="k8s-workload",
                name=f"{binding.namespace or 'cluster'}/{binding.kind}/{binding.name}",
                scanner=KubernetesScanner.name,
                path=binding.path,
                line=binding.line,
                pointer=binding.pointer,
                access=tuple(grant.access),
                flags=tuple(sorted(grant.flags)),
                detail={
                    "kind": binding.kind,
                    "namespace": binding.namespace or None,
                    "roleRef": f"{binding.role_kind}/{binding.role_name}",
                    "serviceAccounts": accounts,
                    "workloads": workloads,
                },
            )
        )
    return findings
