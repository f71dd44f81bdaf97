"""Discovery: secrets in files (detect-secrets + AI-provider key patterns) and Kubernetes
manifests (agent workloads, their keys, their ServiceAccounts' rights)."""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.discover import ai_keys
from tether.discover.interface import Finding, SourceFile, Warnings, fingerprint
from tether.discover.kubernetes import KubernetesScanner
from tether.discover.safe_yaml import YamlRejected, load_yaml
from tether.discover.secrets import SecretsScanner
from tether.discover.walk import walk

FIXTURES = Path(__file__).parent / "fixtures" / "discover"
SECRETS_DIR = FIXTURES / "secrets"
K8S_DIR = FIXTURES / "k8s"


def expected(root: Path) -> dict[str, list]:
    return json.loads((root / "EXPECTED.json").read_text())


def scan(root: Path, warnings: Warnings | None = None) -> list[Finding]:
    """Both scanners over one tree, the way the orchestrator (tether.discover.scan) runs
    them: ``finish()`` after the last file, and a loose credential that an agent finding
    carries in plaintext is reported with the agent only. (EXPECTED.json holds the
    planted secrets themselves: it is not part of the fixture's tree.)"""
    warnings = warnings if warnings is not None else Warnings()
    secrets, k8s = SecretsScanner(), KubernetesScanner()
    found: list[Finding] = []
    for file in walk([root], warnings):
        if file.path.name == "EXPECTED.json":
            continue
        if secrets.wants(file.path):
            found.extend(secrets.scan(file))
        if k8s.wants(file.path):
            found.extend(k8s.scan(file))
    found.extend(k8s.finish())
    carried = {c.fingerprint for f in found if f.is_agent for c in f.credentials if c.plaintext}
    return [
        f for f in found if f.is_agent or not all(c.fingerprint in carried for c in f.credentials)
    ]


def source(path: Path, root: Path | None = None) -> SourceFile:
    return SourceFile(path=path, root=root or path.parent, warnings=Warnings())


def summary(findings: Iterable[Finding]) -> list[dict[str, str]]:
    return sorted(
        ({"kind": f.kind, "name": f.name, "path": f.path, "scanner": f.scanner} for f in findings),
        key=lambda d: (d["scanner"], d["path"], d["name"]),
    )


def by_name(findings: Iterable[Finding], name: str, path: str | None = None) -> Finding:
    matches = [f for f in findings if f.name == name and (path is None or f.path == path)]
    assert len(matches) == 1, (name, path, [f.name for f in findings])
    return matches[0]


@pytest.fixture(scope="module")
def secret_findings() -> list[Finding]:
    return scan(SECRETS_DIR)


@pytest.fixture(scope="module")
def k8s_findings() -> list[Finding]:
    return scan(K8S_DIR)


# -- secrets in files -------------------------------------------------------------------------

# (path, name, credential type) of every planted secret.
PLANTED = [
    (".env", "OPENAI_API_KEY", "openai-api-key"),
    (".env", "ANTHROPIC_API_KEY", "anthropic-api-key"),
    (".env", "GEMINI_API_KEY", "google-api-key"),
    (".env", "HF_TOKEN", "huggingface-token"),
    (".env", "MISTRAL_API_KEY", "mistral-api-key"),
    (".env", "CO_API_KEY", "cohere-api-key"),
    (".env", "GROQ_API_KEY", "groq-api-key"),
    (".env", "DATABASE_PASSWORD", "password"),
    ("Dockerfile", "OPENAI_API_KEY", "openai-api-key"),
    ("README.md", "CEREBRAS_API_KEY", "cerebras-api-key"),
    ("docker-compose.yml", "STRIPE_API_KEY", "stripe-api-key"),
    ("docker-compose.yml", "SLACK_BOT_TOKEN", "slack-token"),
    ("config/app.ini", "FIREWORKS_API_KEY", "fireworks-api-key"),
    ("config/app.ini", "PINECONE_API_KEY", "pinecone-api-key"),
    ("config/app.json", "apiKey", "openrouter-api-key"),
    ("config/app.json", "api_key", "langsmith-api-key"),
    ("config/app.properties", "together.api_key", "together-api-key"),
    ("config/settings.toml", "deepseek_api_key", "deepseek-api-key"),
    ("config/settings.toml", "api_key", "xai-api-key"),
    ("config/settings.yaml", "api_token", "replicate-api-token"),
    ("config/settings.yaml", "perplexity_api_key", "perplexity-api-key"),
    ("config/settings.yaml", "url", "basic-auth-password"),
    ("keys/deploy_key.pem", "private-key", "private-key"),
    ("scripts/deploy.sh", "GITHUB_TOKEN", "github-token"),
    ("scripts/deploy.sh", "AWS_ACCESS_KEY_ID", "aws-access-key"),
    ("scripts/deploy.sh", "AWS_SECRET_ACCESS_KEY", "aws-secret-key"),
    ("scripts/deploy.sh", "x-api-key", "anthropic-admin-key"),
    ("src/settings.py", "LEGACY_COMPLETIONS_KEY", "openai-api-key"),
    ("src/settings.py", "SESSION_SECRET", "secret"),
    ("src/settings.py", "JWT_SECRET", "secret"),
    ("src/tools.ts", "tavilyKey", "tavily-api-key"),
    ("src/tools.ts", "nvidiaKey", "nvidia-api-key"),
]


def test_secrets_fixture_matches_expected(secret_findings: list[Finding]) -> None:
    assert summary(secret_findings) == expected(SECRETS_DIR)["findings"]


@pytest.mark.parametrize(("path", "name", "kind"), PLANTED)
def test_every_planted_secret_found_with_type_and_line(
    secret_findings: list[Finding], path: str, name: str, kind: str
) -> None:
    found = by_name(secret_findings, name, path)
    assert found.kind == "credential"
    assert found.scanner == "secrets"
    assert set(found.flags) == {"plaintext-secret", "static-key"}
    assert found.creator is None
    assert "no-owner" not in found.flags
    (credential,) = found.credentials
    assert credential.type == kind
    assert credential.plaintext
    # The fingerprint is one planted secret's, and that secret is on the reported line.
    secrets = {fingerprint(s): s for s in expected(SECRETS_DIR)["secrets"]}
    secret = secrets[credential.fingerprint]
    line = (SECRETS_DIR / path).read_text().split("\n")[found.line - 1]  # type: ignore[operator]
    if kind == "private-key":
        assert "BEGIN RSA PRIVATE KEY" in line
    else:
        assert secret in line


def test_every_secret_reported_once(secret_findings: list[Finding]) -> None:
    prints = [c.fingerprint for f in secret_findings for c in f.credentials]
    assert sorted(prints) == sorted(fingerprint(s) for s in expected(SECRETS_DIR)["secrets"])
    assert len({f.id for f in secret_findings}) == len(secret_findings)


def test_lookalikes_not_reported(
    secret_findings: list[Finding], k8s_findings: list[Finding]
) -> None:
    reported = {c.fingerprint for f in [*secret_findings, *k8s_findings] for c in f.credentials}
    for root in (SECRETS_DIR, K8S_DIR):
        for lookalike in expected(root)["lookalikes"]:
            assert fingerprint(lookalike) not in reported, lookalike
    paths = {f.path for f in secret_findings}
    for skipped in (".env.example", "docs/configuration.rst", "web/bundle.min.js"):
        assert skipped not in paths
    assert "package-lock.json" not in paths


def test_no_raw_secret_in_any_output(
    secret_findings: list[Finding], k8s_findings: list[Finding]
) -> None:
    warnings = Warnings()
    scan(K8S_DIR, warnings)
    dumped = json.dumps(
        [f.to_dict() for f in [*secret_findings, *k8s_findings]] + [warnings.to_dict()]
    )
    for root in (SECRETS_DIR, K8S_DIR):
        for secret in expected(root)["secrets"]:
            assert secret not in dumped
            assert secret[4:24] not in dumped
            assert base64.b64encode(secret.encode()).decode()[:24] not in dumped


def test_ids_stable_on_rescan_and_when_lines_are_inserted(tmp_path: Path) -> None:
    for name in ("secrets", "k8s"):
        shutil.copytree(FIXTURES / name, tmp_path / name)
    roots = [tmp_path / "secrets", tmp_path / "k8s"]
    first = {f.id: f for root in roots for f in scan(root)}
    again = {f.id: f for root in roots for f in scan(root)}
    assert first.keys() == again.keys()
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.name != "EXPECTED.json":
                path.write_text("\n\n\n" + path.read_text())
    moved = {f.id: f for root in roots for f in scan(root)}
    assert moved.keys() == first.keys()
    for ident, found in moved.items():
        assert found.line == first[ident].line + 3  # type: ignore[operator]


def test_one_finding_per_secret_found_by_several_detectors(tmp_path: Path) -> None:
    key = expected(SECRETS_DIR)["secrets"][0]  # an sk-proj- key: ai-keys, OpenAIDetector ...
    path = tmp_path / "app.py"
    path.write_text(f'openai_api_key = "{key}"\n')
    (found,) = SecretsScanner().scan(source(path))
    assert found.name == "openai_api_key"
    assert found.detail == {"detector": "tether:ai-keys"}
    assert found.credentials[0].type == "openai-api-key"
    assert found.credentials[0].where == "openai_api_key"


def test_same_name_twice_gets_distinct_ids(tmp_path: Path) -> None:
    one, two = expected(SECRETS_DIR)["secrets"][2:4]
    path = tmp_path / ".env"
    path.write_text(f"API_KEY={one}\n# old one\nAPI_KEY={two}\n")
    found = list(SecretsScanner().scan(source(path)))
    assert [f.name for f in found] == ["API_KEY", "API_KEY"]
    assert [f.pointer for f in found] == [None, "API_KEY#2"]
    assert len({f.id for f in found}) == 2


def test_allowlist_pragma_and_docs(tmp_path: Path) -> None:
    key = expected(SECRETS_DIR)["secrets"][0]
    (tmp_path / "docs").mkdir()
    allowed = tmp_path / "a.py"
    allowed.write_text(f'KEY = "{key}"  # pragma: allowlist secret\n')
    assert list(SecretsScanner().scan(source(allowed))) == []
    doc = tmp_path / "docs" / "guide.yaml"
    doc.write_text(f'password: "s3cretPassw0rd"\nopenai: "{key}"\n')
    found = list(SecretsScanner().scan(source(doc, tmp_path)))
    assert [f.credentials[0].type for f in found] == ["openai-api-key"]  # no keyword hit


def test_keyword_and_entropy_rules(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "secretName: openai-credentials\n"
        "password_file: /run/secrets/db\n"
        "api_key: ${API_KEY}\n"
        "password: Xk9#mQ2vL7pz\n"
        'checksum: "9f2c1e7b4a6d8f0e3b5c7a9d1f3e5b7c9a1d3f5e"\n'
        'auth_token: "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1u"\n'
    )
    found = list(SecretsScanner().scan(source(path)))
    assert [(f.name, f.line) for f in found] == [("password", 4), ("auth_token", 6)]


def test_kubernetes_secret_data_is_decoded(tmp_path: Path) -> None:
    key = expected(SECRETS_DIR)["secrets"][1]  # an Anthropic key
    encoded = base64.b64encode(key.encode()).decode()
    path = tmp_path / "secret.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n"
        f"data:\n  ANTHROPIC_API_KEY: {encoded}\n  username: {base64.b64encode(b'admin').decode()}\n"
    )
    (found,) = SecretsScanner().scan(source(path))
    assert (found.name, found.line, found.pointer) == (
        "ANTHROPIC_API_KEY",
        6,
        "$.data.ANTHROPIC_API_KEY",
    )
    assert found.credentials[0].fingerprint == fingerprint(key)  # decoded, as elsewhere


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        (".env", True),
        (".env.production", True),
        ("Dockerfile", True),
        ("docker-compose.yml", True),
        ("settings.toml", True),
        ("deploy.sh", True),
        ("app.py", True),
        ("README.md", True),
        ("package-lock.json", False),
        ("yarn.lock", False),
        ("poetry.lock", False),
        ("app.min.js", False),
        ("app.js.map", False),
        ("logo.svg", False),
        ("photo.png", False),
        ("model.safetensors", False),
        (".secrets.baseline", False),
    ],
)
def test_wants(name: str, wanted: bool) -> None:
    assert SecretsScanner().wants(Path("/repo") / name) is wanted


# -- ai_keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "hint", "kind"),
    [
        (
            "sk-ant-api03-jHGb3CXlMaXZjljENUhJduRHHJEYXg4JdpmrcXgGCJbW56eCuNGMGmSrCGIZEG8pSH4487q7"
            "J58m1CiAhzCueQpBenQtYAA",
            None,
            "anthropic-api-key",
        ),
        ("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", None, "groq-api-key"),
        ("r8_fUkkibjL5DZPjN0MEQ7wjJJibaZUPgHV7iB3m", None, "replicate-api-token"),
        ("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", None, "huggingface-token"),
        ("AIza03nbqnsGpWLuqIA1id6Vw5DQL05HA064GiI", None, "google-api-key"),
        (
            "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",
            None,
            "openrouter-api-key",
        ),
        ("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", None, "langsmith-api-key"),
        ("VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEm", "MISTRAL_API_KEY", "mistral-api-key"),
        ("VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEm", None, None),
        ("VZomHFwUbbYrEqmSM9wCZ7Uw9xfogoEm", "API_KEY", None),
        ("vnEN5N1aE6PwZPf1Qh6yYTWmE4lBYOvfZ8UzDzV8", "CO_API_KEY", "cohere-api-key"),
        ("sk-0f58904dba41ecccc3fc1626e53a1304", "deepseekApiKey", "deepseek-api-key"),
        ("sk-0f58904dba41ecccc3fc1626e53a1304", "OPENAI_API_BASE", None),
    ],
)
def test_classify(value: str, hint: str | None, kind: str | None) -> None:
    assert ai_keys.classify(value, hint) == kind


@pytest.mark.parametrize(
    "value",
    [
        "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "sk-...",
        "sk-your-key-here",
        "<OPENAI_API_KEY>",
        "${OPENAI_API_KEY}",
        "$OPENAI_API_KEY",
        "{{ .Values.openai.key }}",
        "YOUR_API_KEY",
        "changeme",
        "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "AKIAIOSFODNN7EXAMPLE",
        "sk-proj-****************",
        "sk-1234567890abcdef1234567890abcdef",
        "sk-abc123abc123abc123abc123abc123abc123abc123abc1",
    ],
)
def test_placeholders(value: str) -> None:
    assert ai_keys.is_placeholder(value)
    assert ai_keys.classify(value, "OPENAI_API_KEY") is None


def test_real_keys_are_not_placeholders() -> None:
    for secret in expected(SECRETS_DIR)["secrets"] + expected(K8S_DIR)["secrets"]:
        assert not ai_keys.is_placeholder(secret)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("OPENAI_API_KEY", "openai-api-key"),
        ("openaiApiKey", "openai-api-key"),
        ("ANTHROPIC_API_KEY", "anthropic-api-key"),
        ("HF_TOKEN", "huggingface-token"),
        ("AZURE_OPENAI_API_KEY", "azure-openai-api-key"),
        ("CO_API_KEY", "cohere-api-key"),
        ("OPENAI_API_BASE", None),
        ("OPENAI_ORG_ID", None),
        ("LANGFUSE_PUBLIC_KEY", None),
        ("DATABASE_PASSWORD", None),
    ],
)
def test_type_for_name(name: str, kind: str | None) -> None:
    assert ai_keys.type_for_name(name) == kind


# -- Kubernetes -------------------------------------------------------------------------------


def test_k8s_fixture_matches_expected(k8s_findings: list[Finding]) -> None:
    assert summary(k8s_findings) == expected(K8S_DIR)["findings"]


def test_k8s_agent_with_literal_key_secret_ref_and_cluster_admin(
    k8s_findings: list[Finding],
) -> None:
    agent = by_name(k8s_findings, "agents/Deployment/research-agent")
    openai, anthropic = expected(K8S_DIR)["secrets"][:2]
    assert agent.kind == "k8s-workload"
    assert agent.path == "agents.yaml"
    assert agent.line == 12
    assert agent.pointer == "$[doc 2].spec.template.spec.containers[0]"
    assert agent.access == ("k8s:cluster-admin",)
    assert {"admin", "wildcard", "plaintext-secret", "static-key"} <= set(agent.flags)
    assert agent.detail["kind"] == "Deployment"
    assert agent.detail["namespace"] == "agents"
    assert agent.detail["images"] == ["ghcr.io/acme/langgraph-research:1.4.2"]
    assert agent.detail["serviceAccount"] == "research-agent"
    literal, reference, stored = agent.credentials
    assert (literal.type, literal.where, literal.plaintext) == (
        "openai-api-key",
        "env:OPENAI_API_KEY",
        True,
    )
    assert literal.fingerprint == fingerprint(openai)
    assert reference.type == "env-reference"
    assert not reference.plaintext
    assert "llm-keys" in reference.where and "anthropic" in reference.where
    # The referenced Secret is in another file: its decoded value's fingerprint, and the
    # value itself is carried as the plaintext key it is.
    assert reference.fingerprint == fingerprint(anthropic)
    assert (stored.type, stored.where, stored.plaintext) == (
        "anthropic-api-key",
        "secret:agents/llm-keys/anthropic",
        True,
    )
    assert stored.fingerprint == fingerprint(anthropic)


def test_k8s_keys_carried_by_workloads_are_not_loose_credentials() -> None:
    every = [
        f
        for file in walk([K8S_DIR], Warnings())
        if file.path.name != "EXPECTED.json" and SecretsScanner().wants(file.path)
        for f in SecretsScanner().scan(file)
    ]
    assert {(f.path, f.name) for f in every} == {
        ("agents.yaml", "OPENAI_API_KEY"),
        ("secrets.yaml", "anthropic"),
        ("secrets.yaml", "HF_TOKEN"),
        ("secrets.yaml", "token"),
    }
    assert by_name(every, "token").credentials[0].type == "github-token"
    assert by_name(every, "anthropic").pointer == "$[doc 0].data.anthropic"
    loose = [f for f in scan(K8S_DIR) if not f.is_agent]
    assert loose == []  # every one is carried by the workload that uses it


def test_k8s_mcp_server_with_wildcard_role(k8s_findings: list[Finding]) -> None:
    mcp = by_name(k8s_findings, "agents/Deployment/github-mcp")
    assert mcp.detail["mcp"] is True
    assert mcp.access == ("k8s:* pods,pods/log in agents",)
    assert "wildcard" in mcp.flags
    assert "admin" not in mcp.flags
    reference, stored = mcp.credentials
    assert reference.fingerprint == fingerprint(expected(K8S_DIR)["secrets"][3])
    assert (stored.type, stored.plaintext) == ("github-token", True)


def test_k8s_cronjob_envfrom_and_list_items(k8s_findings: list[Finding]) -> None:
    job = by_name(k8s_findings, "agents/CronJob/nightly-summary")
    assert job.access == ("k8s:get,list secrets",)
    assert job.pointer == "$[doc 5].spec.jobTemplate.spec.template.spec.containers[0]"
    assert [c.type for c in job.credentials] == [
        "env-reference",
        "anthropic-api-key",
        "env-reference",
        "huggingface-token",
    ]
    ollama = by_name(k8s_findings, "models/StatefulSet/ollama")
    assert ollama.pointer == "$[doc 0].items[1].spec.template.spec.containers[0]"
    assert ollama.line == 9


def test_k8s_binding_of_cluster_admin_to_an_agent_is_reported(
    k8s_findings: list[Finding],
) -> None:
    binding = by_name(k8s_findings, "cluster/ClusterRoleBinding/research-agent-admin")
    assert binding.path == "rbac.yaml"
    assert binding.access == ("k8s:cluster-admin",)
    assert {"admin", "wildcard"} <= set(binding.flags)
    assert binding.detail["workloads"] == ["agents/Deployment/research-agent"]


def test_k8s_non_agents_not_reported(k8s_findings: list[Finding]) -> None:
    names = {f.name for f in k8s_findings}
    assert "agents/Deployment/web" not in names  # nginx
    assert "models/Deployment/metrics" not in names  # datadog/agent: a monitoring agent


def test_k8s_malformed_file_warned(k8s_findings: list[Finding]) -> None:
    warnings = Warnings()
    scan(K8S_DIR, warnings)
    assert warnings.counts["malformed"] == 1
    assert warnings.examples["malformed"][0].startswith("broken.yaml")


def test_k8s_resolution_within_one_file_when_not_deferred() -> None:
    scanner = KubernetesScanner(deferred=False)
    found = list(scanner.scan(source(K8S_DIR / "agents.yaml", K8S_DIR)))
    agent = by_name(found, "agents/Deployment/research-agent")
    assert agent.access == ()  # its binding is in rbac.yaml
    assert scanner.finish() == []


def test_k8s_finish_resets_state() -> None:
    scanner = KubernetesScanner()
    files = [f for f in walk([K8S_DIR], Warnings()) if scanner.wants(f.path)]
    first = scanner.scan_all(files)
    assert scanner.finish() == []
    second = scanner.scan_all(files)
    assert [f.id for f in first] == [f.id for f in second]


BILLION_LAUGHS = """apiVersion: v1
kind: ConfigMap
metadata:
  name: lol
data:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


@pytest.mark.parametrize(
    "text",
    [
        BILLION_LAUGHS,
        BILLION_LAUGHS.replace("kind: ConfigMap", "kind: Secret"),
        "apiVersion: v1\nkind: Pod\nspec: &a\n  containers: [*a]\n",  # refers to itself
        "apiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n",
        "apiVersion: v1\nkind: Pod\n" + "---\n- 1\n" * 3,  # non-mapping documents
        "apiVersion: v1\nkind: List\nitems: 5\n",
        "apiVersion: v1\nkind: Deployment\nspec: {template: {spec: {containers: [1, null]}}}\n",
        "apiVersion: v1\nkind: Pod\nx: " + "[" * 5000 + "]" * 5000 + "\n",
        "apiVersion: v1\nkind: Pod\n" + "---\n" * 2000,  # too many documents
        "apiVersion: !!python/object:os.system v1\nkind: Pod\n",
        "\ufeffapiVersion: v1\x00\nkind: Pod\n",
    ],
)
def test_hostile_yaml_never_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    warnings = Warnings()
    started = time.monotonic()
    for scanner in (SecretsScanner(), KubernetesScanner(deferred=False)):
        list(scanner.scan(SourceFile(path=path, root=tmp_path, warnings=warnings)))
    assert time.monotonic() - started < 5


def test_billion_laughs_rejected_and_warned(tmp_path: Path) -> None:
    with pytest.raises(YamlRejected):
        load_yaml(BILLION_LAUGHS)
    path = tmp_path / "bomb.yaml"
    path.write_text(BILLION_LAUGHS)
    warnings = Warnings()
    assert list(KubernetesScanner(deferred=False).scan(source_with(path, warnings))) == []
    assert warnings.counts["malformed"] == 1


def source_with(path: Path, warnings: Warnings) -> SourceFile:
    return SourceFile(path=path, root=path.parent, warnings=warnings)


def test_load_yaml_lines_and_documents() -> None:
    docs = load_yaml("a: 1\n---\n# c\nb:\n  c: 2\n")
    assert docs.documents == [{"a": 1}, {"b": {"c": 2}}]
    assert docs.lines == [1, 4]
    assert docs.line_of(docs.documents[1]["b"]) == 5


_manifest = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["v1", "apps/v1", "rbac.authorization.k8s.io/v1"]),
        "kind": st.sampled_from(
            ["Deployment", "Pod", "Secret", "RoleBinding", "ClusterRole", "List", "CronJob"]
        ),
    },
    optional={
        "metadata": st.dictionaries(st.sampled_from(["name", "namespace"]), st.text()),
        "spec": st.recursive(
            st.none() | st.integers() | st.text(),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["template", "spec", "containers", "env", "image", "name"]),
                    inner,
                    max_size=3,
                )
            ),
            max_leaves=12,
        ),
        "data": st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=3),
        "items": st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), max_size=2),
        "subjects": st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), max_size=2),
    },
)


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    name=st.sampled_from([".env", "app.py", "c.json", "d.yaml", "Dockerfile", "README.md"]),
    text=st.text(max_size=400),
    header=st.sampled_from(
        [
            "",
            "apiVersion: v1\nkind: Secret\ndata:\n  k: ",
            "OPENAI_API_KEY=",
            "- name: X\n  value: ",
        ]
    ),
)
def test_random_text_never_raises(tmp_path: Path, name: str, text: str, header: str) -> None:
    path = tmp_path / name
    path.write_text(header + text, errors="surrogatepass")
    warnings = Warnings()
    for scanner in (SecretsScanner(), KubernetesScanner(deferred=False)):
        for found in scanner.scan(SourceFile(path=path, root=tmp_path, warnings=warnings)):
            json.dumps(found.to_dict())


def test_long_lines_stay_fast(tmp_path: Path) -> None:
    blob = "".join(chr(65 + (i * 7919) % 58) for i in range(200_000))  # letters, no breaks
    path = tmp_path / "notebook.ipynb"
    path.write_text(
        '{"together_api_key": "AP1' + blob + '", "password": "x' + blob + '",'
        ' "url": "https://u:' + blob + '", "aws": "' + "A" * 300_000 + '"}\n'
    )
    started = time.monotonic()
    list(SecretsScanner().scan(source(path)))
    assert time.monotonic() - started < 5


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(docs=st.lists(_manifest, min_size=1, max_size=3))
def test_random_manifests_never_raise(tmp_path: Path, docs: list[dict]) -> None:
    path = tmp_path / "random.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    scanner = KubernetesScanner()
    scanner.scan(SourceFile(path=path, root=tmp_path, warnings=Warnings()))
    for found in scanner.finish():
        json.dumps(found.to_dict())


def test_load_yaml_limits() -> None:
    """The one loader's limits: documents, depth (through aliases too), size, and any
    constructor failure as a YamlRejected that does not quote the text."""
    with pytest.raises(YamlRejected, match="more than 1 YAML document"):
        load_yaml("a: 1\n---\nb: 2\n", max_documents=1)
    with pytest.raises(YamlRejected, match="nested deeper"):
        load_yaml("a: " + "[" * 250 + "]" * 250 + "\n")
    deep = "a: &a " + "[" * 150 + "]" * 150 + "\nb: " + "[" * 100 + "*a" + "]" * 100 + "\n"
    with pytest.raises(YamlRejected, match="nested deeper"):
        load_yaml(deep)
    with pytest.raises(YamlRejected, match="larger than"):
        load_yaml("a: b\n" * 600_000)
    with pytest.raises(YamlRejected) as rejected:
        load_yaml("token: !!python/object:os.system s3cr3t-value\n")
    assert "s3cr3t" not in str(rejected.value)
    assert load_yaml("a: 1\n", max_documents=1).documents == [{"a": 1}]
