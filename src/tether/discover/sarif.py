"""Findings as SARIF 2.1.0, so they show up in code-scanning tools (GitHub code scanning,
IDE SARIF viewers). One rule per finding kind; one result per finding, located at its file
(relative to the scanned root, ``%SRCROOT%``) and line; its stable ID as the partial
fingerprint, so a tool tracks the same finding across scans. Never a secret: credentials
appear as type, where and fingerprint."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["SARIF_SCHEMA", "to_sarif"]

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

_RULES = {
    "mcp-server": ("ShadowMcpServer", "An MCP server wired into an MCP client"),
    "agent-code": ("AgentCode", "Code that builds an AI agent or an MCP server"),
    "k8s-workload": ("KubernetesAgentWorkload", "A Kubernetes workload that runs an agent"),
    "ci-workflow": ("CiAgentJob", "A CI job that runs an AI agent"),
    "cloud-role": ("CloudAgentRole", "A cloud IAM role that AI agents assume"),
    "credential": ("AgentCredential", "A credential of an AI agent written in a file"),
}
_SEVERE = {"admin", "plaintext-secret"}


def to_sarif(findings: Iterable[Mapping[str, Any]], *, version: str) -> dict[str, Any]:
    chosen = list(findings)
    kinds = sorted({str(f.get("kind")) for f in chosen} & set(_RULES))
    rules = [
        {
            "id": _RULES[kind][0],
            "name": _RULES[kind][0],
            "shortDescription": {"text": _RULES[kind][1]},
            "fullDescription": {
                "text": f"{_RULES[kind][1]}, found by Tether discovery: register it with an "
                "accountable owner, or remove it."
            },
            "helpUri": "https://github.com/tether-dev/tether#discover-shadow-agents",
            "properties": {"tags": ["security", "ai-agents", kind]},
        }
        for kind in kinds
    ]
    index = {kind: i for i, kind in enumerate(kinds)}
    results = [_result(f, index) for f in chosen if f.get("kind") in index]
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "Tether discover",
                        "version": version,
                        "informationUri": "https://github.com/tether-dev/tether",
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {"SRCROOT": {"description": {"text": "a scanned path"}}},
                "results": results,
            }
        ],
    }


def _result(finding: Mapping[str, Any], index: Mapping[str, int]) -> dict[str, Any]:
    kind = str(finding["kind"])
    flags = [str(f) for f in finding.get("flags") or []]
    status = finding.get("status", "shadow")
    level = "error" if _SEVERE & set(flags) else "warning" if status != "registered" else "note"
    text = f"{_RULES[kind][1]}: {finding['name']} ({status})"
    if finding.get("access"):
        text += f"; can reach {', '.join(map(str, finding['access'][:5]))}"
    if flags:
        text += f"; flags: {', '.join(flags)}"
    region: dict[str, Any] = {}
    if isinstance(finding.get("line"), int) and finding["line"] > 0:
        region["startLine"] = finding["line"]
    location: dict[str, Any] = {
        "physicalLocation": {
            "artifactLocation": {"uri": str(finding["path"]), "uriBaseId": "SRCROOT"},
            **({"region": region} if region else {}),
        }
    }
    if finding.get("pointer"):
        location["logicalLocations"] = [{"fullyQualifiedName": str(finding["pointer"])}]
    return {
        "ruleId": _RULES[kind][0],
        "ruleIndex": index[kind],
        "level": level,
        "message": {"text": text},
        "locations": [location],
        "partialFingerprints": {"tetherFindingId/v1": str(finding["id"])},
        "properties": {
            "status": status,
            "agent": finding.get("agent"),
            "flags": flags,
            "creator": finding.get("creator"),
            "credentials": list(finding.get("credentials") or []),
            "access": list(finding.get("access") or []),
        },
    }
