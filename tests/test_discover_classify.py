"""Discovery: one classifier for every scanner. The same value, written in the file each
scanner reads, is reported with the same credential type and the same fingerprint (and a
placeholder by none of them)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tether.discover.agent_code import AgentCodeScanner
from tether.discover.ci_workflows import CiWorkflowScanner
from tether.discover.classify import classify, is_placeholder, name_type, secret_type
from tether.discover.cloud_iam import CloudIamScanner
from tether.discover.interface import Finding, Scanner, SourceFile, Warnings, fingerprint
from tether.discover.kubernetes import KubernetesScanner
from tether.discover.mcp_configs import McpConfigScanner
from tether.discover.secrets import SecretsScanner

NAME = "API_KEY"  # one name everywhere: the type of a value without a known form is the name's
_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _random(seed: str, size: int, alphabet: str = _ALPHABET) -> str:
    """A fixed, random-looking string (no words in it, so never a placeholder)."""
    out = ""
    counter = 0
    while len(out) < size:
        digest = hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        out += "".join(alphabet[b % len(alphabet)] for b in digest)
        counter += 1
    return out[:size]


VALUES: dict[str, tuple[str, str | None]] = {  # id: (value, expected type; None: not a secret)
    "openai": ("sk-proj-" + _random("openai", 48), "openai-api-key"),
    "anthropic": ("sk-ant-api03-" + _random("anthropic", 93) + "AA", "anthropic-api-key"),
    "github": ("ghp_" + _random("github", 36), "github-token"),
    "aws": ("AKIA" + _random("aws", 16, "ABCDEFGHIJKLMNPQRSTUVWXYZ234567"), "aws-access-key"),
    "high-entropy": (_random("generic", 40), "api-key"),
    "env-placeholder": ("${OPENAI_API_KEY}", None),
    "changeme": ("changeme", None),
}


def _files(root: Path, value: str) -> dict[str, Path]:
    """The value under ``NAME`` in a file each scanner reads."""
    files = {
        "secrets": root / ".env",
        "kubernetes": root / "k8s" / "agent.yaml",
        "mcp-configs": root / ".cursor" / "mcp.json",
        "ci-workflows": root / ".github" / "workflows" / "agent.yml",
        "agent-code": root / "src" / "agent.py",
        "cloud-iam": root / "iam" / "export.json",
    }
    for path in files.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    quoted = json.dumps(value)
    files["secrets"].write_text(f"{NAME}={value}\n")
    files["kubernetes"].write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: agent, namespace: ai}\n"
        "spec:\n  template:\n    spec:\n      containers:\n"
        "        - name: agent\n          image: ghcr.io/acme/langgraph-agent:1\n"
        f"          env:\n            - name: {NAME}\n              value: {quoted}\n"
    )
    server = {"command": "npx", "args": ["-y", "some-mcp"], "env": {NAME: value}}
    files["mcp-configs"].write_text(json.dumps({"mcpServers": {"tools": server}}))
    files["ci-workflows"].write_text(
        "on: push\njobs:\n  agent:\n    runs-on: ubuntu-latest\n"
        f"    env:\n      {NAME}: {quoted}\n    steps:\n      - run: claude -p hello\n"
    )
    files["agent-code"].write_text(
        "from langchain.agents import create_react_agent\n\n"
        f"{NAME} = {quoted}\n"
        "agent = create_react_agent(model, tools=[])\n"
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "bedrock.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = {
        "RoleName": "agent",
        "Arn": "arn:aws:iam::111122223333:role/agent",
        "AssumeRolePolicyDocument": trust,
        "RolePolicyList": [],
        "AttachedManagedPolicies": [],
    }
    export = {NAME: value, "RoleDetailList": [role], "Policies": []}
    files["cloud-iam"].write_text(json.dumps(export, indent=2))
    return files


def _scan(scanner: Scanner, path: Path, root: Path) -> list[Finding]:
    assert scanner.wants(path), (scanner.name, path)
    found = list(scanner.scan(SourceFile(path=path, root=root, warnings=Warnings())))
    if isinstance(scanner, KubernetesScanner):
        found += scanner.finish()
    return found


def _plaintext(findings: list[Finding]) -> set[tuple[str, str]]:
    return {(c.type, c.fingerprint) for f in findings for c in f.credentials if c.plaintext}


SCANNERS: dict[str, Scanner] = {
    "secrets": SecretsScanner(),
    "kubernetes": KubernetesScanner(deferred=False),
    "mcp-configs": McpConfigScanner(),
    "ci-workflows": CiWorkflowScanner(),
    "agent-code": AgentCodeScanner(),
    "cloud-iam": CloudIamScanner(),
}
# These report no credential values (a key in code or in an export is the secrets
# scanner's): their files are read by the secrets scanner, which must agree.
_NO_VALUES = ("agent-code", "cloud-iam")


@pytest.mark.parametrize("case", list(VALUES))
def test_the_same_value_is_the_same_credential_in_every_scanner(tmp_path: Path, case: str) -> None:
    value, kind = VALUES[case]
    expected = set() if kind is None else {(kind, fingerprint(value))}
    assert (classify(value, NAME) is None) == (kind is None or kind == name_type(NAME))
    files = _files(tmp_path, value)
    seen: dict[str, set[tuple[str, str]]] = {}
    for name, scanner in SCANNERS.items():
        found = _scan(scanner, files[name], tmp_path)
        if name in _NO_VALUES:
            assert found, name  # the scanner did read its file ...
            assert not _plaintext(found), name  # ... and reports no value
            found = _scan(SecretsScanner(), files[name], tmp_path)
        seen[name] = _plaintext(found)
    assert seen == dict.fromkeys(SCANNERS, expected)


@pytest.mark.parametrize("case", list(VALUES))
def test_the_classifier_itself(case: str) -> None:
    value, kind = VALUES[case]
    assert is_placeholder(value) is (kind is None)
    if kind is not None:
        assert secret_type(value, NAME) == kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("OPENAI_API_KEY", "openai-api-key"),
        ("AZURE_OPENAI_API_KEY", "azure-openai-api-key"),
        ("GH_TOKEN", "github-token"),
        ("GITHUB_PERSONAL_ACCESS_TOKEN", "github-token"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-key"),
        ("DATABASE_PASSWORD", "password"),
        ("AGENT_PASSWORD", "password"),
        ("X-API-Key", "api-key"),
        ("auth_token", "token"),
        ("Authorization", "token"),
        ("SESSION_SECRET", "secret"),
        ("JWT_SECRET", "secret"),
        ("setting", "secret"),
    ],
)
def test_a_value_known_only_by_its_name(name: str, kind: str) -> None:
    assert name_type(name) == kind
