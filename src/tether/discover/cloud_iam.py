"""Cloud IAM roles that agents assume: AWS ``aws iam get-account-authorization-details``
exports (JSON, any file name: told by content — a top-level ``RoleDetailList`` or
``UserDetailList``).

A role is an *agent role* (each reason is in ``detail.agent``) when

* its trust policy lets an agent service assume it: ``bedrock.amazonaws.com``,
  ``bedrock-agentcore.amazonaws.com``, ``sagemaker.amazonaws.com``, ``q.amazonaws.com``,
  ``qbusiness.amazonaws.com``; or
* a policy it has (inline, or attached managed: resolved from the export's ``Policies``,
  default version, else from a built-in summary of well-known AWS managed policies such as
  ``AmazonBedrockFullAccess``) allows an agent action: one matching model or agent
  invocation (``bedrock:InvokeModel*``, ``bedrock:Converse*``, ``bedrock:InvokeAgent``,
  ``bedrock:RetrieveAndGenerate``, ``sagemaker:InvokeEndpoint*``, ``q:SendMessage``,
  ``qbusiness:Chat*`` ...), so ``bedrock:*`` too, or anything of ``bedrock-agent*``. A
  bare ``*`` (or ``*:*``, or a ``NotAction``) is not by itself an agent signal — else every
  administrator role would be an agent — but is flagged when the role is one. So a Lambda
  (or EC2, or GitHub OIDC ...) role allowed to invoke Bedrock models is an agent role; a
  plain EC2 role is not.

An IAM *user* with agent actions (its own policies, attached ones, or its groups') is
reported too, as kind ``cloud-role`` named ``user/<name>`` with flag ``static-key``: a user
calls AWS with long-lived access keys (the export does not list them; a user without any is
still one that can be given some).

One :class:`Finding` per agent role (``$.RoleDetailList[i]``) or user
(``$.UserDetailList[i]``), the line of its name. ``access`` is each allowed ``aws:<action
pattern> <resource>`` (``NOT(...)`` for ``NotAction``/``NotResource``), deduplicated, agent
and wildcard grants first, capped at 40 (``detail.access_truncated`` counts the rest).
``Deny`` statements, conditions and permission boundaries are not subtracted (the boundary
is shown in ``detail``). Flags: ``admin`` for an allowed ``*``/``*:*`` (or ``iam:*``) on
``*``, or ``AdministratorAccess`` attached; ``wildcard`` for an allowed ``*``,
``service:*`` or ``NotAction`` action, or a ``*`` or ``NotResource`` resource.

Policy documents may be JSON objects or (as the IAM API gives them) URL-encoded JSON
strings; both are read. A malformed export, or a malformed document in it, is warned about
(the rest is read).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tether.discover.interface import Finding, SourceFile

__all__ = ["CloudIamScanner"]

_NAME = "cloud-iam"
_MAX_ACCESS = 40
_MAX_LIST = 50
_SNIFF = re.compile(r'"(?:RoleDetailList|UserDetailList|Policies)"\s*:')

_AGENT_SERVICES = frozenset(
    {
        "bedrock.amazonaws.com",
        "bedrock-agentcore.amazonaws.com",
        "sagemaker.amazonaws.com",
        "q.amazonaws.com",
        "qbusiness.amazonaws.com",
    }
)
_AGENT_ACTIONS = (  # what an agent does, lower-cased: a policy action pattern matching one
    "bedrock:invokemodel",
    "bedrock:invokemodelwithresponsestream",
    "bedrock:converse",
    "bedrock:conversestream",
    "bedrock:invokeagent",
    "bedrock:invokeinlineagent",
    "bedrock:invokeflow",
    "bedrock:retrieveandgenerate",
    "bedrock:createagent",
    "bedrock-agentcore:invokeagentruntime",
    "sagemaker:invokeendpoint",
    "sagemaker:invokeendpointasync",
    "sagemaker:invokeendpointwithresponsestream",
    "q:sendmessage",
    "q:startconversation",
    "qbusiness:chat",
    "qbusiness:chatsync",
    "codewhisperer:generaterecommendations",
)
_AGENT_PREFIXES = ("bedrock-agent",)  # bedrock-agent, bedrock-agent-runtime, -agentcore
_ADMIN_POLICY = "arn:aws:iam::aws:policy/AdministratorAccess"

# Well-known AWS managed policies (absent from exports taken without AWSManagedPolicy),
# summarised: (actions, resources), all Allow; a leading "!" is a NotAction.
_AWS_MANAGED: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "AdministratorAccess": [(("*",), ("*",))],
    "PowerUserAccess": [(("!iam:*", "!organizations:*", "!account:*"), ("*",))],
    "IAMFullAccess": [(("iam:*",), ("*",))],
    "AmazonBedrockFullAccess": [(("bedrock:*",), ("*",))],
    "AmazonBedrockLimitedAccess": [
        (("bedrock:InvokeModel*", "bedrock:Converse*", "bedrock:Get*", "bedrock:List*"), ("*",))
    ],
    "AmazonBedrockReadOnly": [(("bedrock:Get*", "bedrock:List*"), ("*",))],
    "BedrockAgentCoreFullAccess": [(("bedrock-agentcore:*",), ("*",))],
    "AmazonSageMakerFullAccess": [(("sagemaker:*",), ("*",))],
    "AmazonQFullAccess": [(("q:*",), ("*",))],
    "AmazonQDeveloperAccess": [(("q:*",), ("*",))],
    "AWSLambdaBasicExecutionRole": [
        (("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"), ("*",))
    ],
    "AmazonS3FullAccess": [(("s3:*",), ("*",))],
    "AmazonS3ReadOnlyAccess": [(("s3:Get*", "s3:List*"), ("*",))],
}
_OWNER_TAG = re.compile(r"^(?:owner|team|created[-_ ]?by|contact)$", re.IGNORECASE)


@dataclass(frozen=True)
class _Grant:
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    not_action: bool = False
    not_resource: bool = False


@dataclass
class _Rights:
    grants: list[_Grant] = field(default_factory=list)
    inline: list[str] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)


class CloudIamScanner:
    """Agent roles (and users) in AWS IAM authorization-details exports."""

    name = _NAME

    def wants(self, path: Path) -> bool:
        return path.suffix.lower() == ".json"

    def scan(self, file: SourceFile) -> Iterable[Finding]:
        text = file.text
        if not _SNIFF.search(text):
            return []
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            file.warn("malformed", f"JSON: {type(exc).__name__}")
            return []
        if not isinstance(data, dict) or not ("RoleDetailList" in data or "UserDetailList" in data):
            return []  # another JSON file that mentions the words
        return list(_Export(file, data).findings())


class _Export:
    def __init__(self, file: SourceFile, data: dict[str, Any]) -> None:
        self.file = file
        self.data = data
        self.policies = self._policies()
        self.groups: dict[str, dict[str, Any]] = {}
        for group in self._list("GroupDetailList"):
            if isinstance(group, dict) and isinstance(group.get("GroupName"), str):
                self.groups[group["GroupName"]] = group

    def _list(self, key: str) -> list[Any]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.file.warn("malformed", f"{key} is not a list")
            return []
        return value

    def _policies(self) -> dict[str, Any]:
        """Managed policy ARN -> its default version's document (decoded)."""
        out: dict[str, Any] = {}
        for i, policy in enumerate(self._list("Policies")):
            if not isinstance(policy, dict) or not isinstance(policy.get("Arn"), str):
                self.file.warn("malformed", f"Policies[{i}]")
                continue
            versions = policy.get("PolicyVersionList")
            if not isinstance(versions, list):
                continue
            default = policy.get("DefaultVersionId")
            chosen = None
            for version in versions:
                if not isinstance(version, dict):
                    continue
                if version.get("IsDefaultVersion") is True or (
                    default is not None and version.get("VersionId") == default
                ):
                    chosen = version
                    break
            if chosen is None and len(versions) == 1 and isinstance(versions[0], dict):
                chosen = versions[0]
            if chosen is not None:
                document = self._document(chosen.get("Document"), f"Policies[{i}]")
                if document is not None:
                    out[policy["Arn"]] = document
        return out

    def _document(self, value: Any, where: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            for candidate in (value, unquote(value)):
                try:
                    decoded = json.loads(candidate)
                except (ValueError, RecursionError):
                    continue
                if isinstance(decoded, dict):
                    return decoded
        self.file.warn("malformed", f"{where}: policy document")
        return None

    def findings(self) -> Iterator[Finding]:
        for i, role in enumerate(self._list("RoleDetailList")):
            where = f"$.RoleDetailList[{i}]"
            if not isinstance(role, dict) or not isinstance(role.get("RoleName"), str):
                self.file.warn("malformed", f"RoleDetailList[{i}]")
                continue
            finding = self._role(role, where)
            if finding is not None:
                yield finding
        for i, user in enumerate(self._list("UserDetailList")):
            where = f"$.UserDetailList[{i}]"
            if not isinstance(user, dict) or not isinstance(user.get("UserName"), str):
                self.file.warn("malformed", f"UserDetailList[{i}]")
                continue
            finding = self._user(user, where)
            if finding is not None:
                yield finding

    def _role(self, role: dict[str, Any], where: str) -> Finding | None:
        name: str = role["RoleName"]
        trust = self._document(role.get("AssumeRolePolicyDocument") or {}, f"{where} trust")
        trusted = _principals(trust)
        reasons = [f"trusted by {p[len('service:') :]}" for p in trusted if _agent_trust(p)]
        rights = _Rights()
        self._add(rights, role.get("RolePolicyList"), role.get("AttachedManagedPolicies"), where)
        reasons += _agent_grants(rights.grants)
        if not reasons:
            return None
        detail: dict[str, Any] = {"arn": _text(role.get("Arn")), "trusted": trusted}
        last_used = role.get("RoleLastUsed")
        if isinstance(last_used, dict) and last_used:
            detail["last_used"] = {str(k): _text(v) for k, v in list(last_used.items())[:4]}
        boundary = role.get("PermissionsBoundary")
        if isinstance(boundary, dict) and boundary.get("PermissionsBoundaryArn"):
            detail["permissions_boundary"] = _text(boundary["PermissionsBoundaryArn"])
        return self._finding(name, "RoleName", role, where, rights, reasons, detail, set())

    def _user(self, user: dict[str, Any], where: str) -> Finding | None:
        name: str = user["UserName"]
        rights = _Rights()
        self._add(rights, user.get("UserPolicyList"), user.get("AttachedManagedPolicies"), where)
        groups = user.get("GroupList")
        for group_name in groups if isinstance(groups, list) else []:
            group = self.groups.get(group_name) if isinstance(group_name, str) else None
            if group is None:
                continue
            rights.groups.append(group_name)
            self._add(
                rights,
                group.get("GroupPolicyList"),
                group.get("AttachedManagedPolicies"),
                f"group {group_name}",
                f"{group_name}/",
            )
        reasons = _agent_grants(rights.grants)
        if not reasons:
            return None
        detail: dict[str, Any] = {"arn": _text(user.get("Arn"))}
        if rights.groups:
            detail["groups"] = rights.groups[:_MAX_LIST]
        return self._finding(
            f"user/{name}", "UserName", user, where, rights, reasons, detail, {"static-key"}
        )

    def _finding(
        self,
        name: str,
        name_key: str,
        entity: dict[str, Any],
        where: str,
        rights: _Rights,
        reasons: list[str],
        detail: dict[str, Any],
        flags: set[str],
    ) -> Finding:
        access, truncated = _access(rights.grants)
        flags |= _flags(rights)
        detail["agent"] = list(dict.fromkeys(reasons))[:_MAX_LIST]
        detail["inline_policies"] = rights.inline[:_MAX_LIST]
        detail["attached_policies"] = rights.attached[:_MAX_LIST]
        if rights.unresolved:
            detail["unresolved_policies"] = rights.unresolved[:_MAX_LIST]
        if truncated:
            detail["access_truncated"] = truncated
        owner = _owner(entity.get("Tags"))
        if owner:
            detail["owner_tags"] = owner
        return Finding(
            kind="cloud-role",
            name=name,
            scanner=_NAME,
            path=self.file.relpath,
            line=self._line(name_key, entity[name_key]),
            pointer=where,
            access=tuple(access),
            flags=tuple(sorted(flags)),
            detail=detail,
        )

    def _add(
        self, rights: _Rights, inline: Any, attached: Any, where: str, prefix: str = ""
    ) -> None:
        """Add the grants of ``inline`` and ``attached`` policies (a group's are named
        ``<group>/<policy>``)."""
        for i, policy in enumerate(inline if isinstance(inline, list) else []):
            if not isinstance(policy, dict):
                continue
            rights.inline.append(prefix + _text(policy.get("PolicyName")))
            document = self._document(policy.get("PolicyDocument"), f"{where} inline[{i}]")
            rights.grants += _grants(document)
        for policy in attached if isinstance(attached, list) else []:
            if not isinstance(policy, dict):
                continue
            arn = _text(policy.get("PolicyArn"))
            name = _text(policy.get("PolicyName")) or arn.rsplit("/", 1)[-1]
            rights.attached.append(prefix + name)
            if arn in self.policies:
                rights.grants += _grants(self.policies[arn])
            elif arn.startswith("arn:aws:iam::aws:policy/") and name in _AWS_MANAGED:
                for actions, resources in _AWS_MANAGED[name]:
                    negated = actions[0].startswith("!")
                    plain = tuple(a.lstrip("!") for a in actions)
                    rights.grants.append(_Grant(plain, resources, not_action=negated))
            else:
                rights.unresolved.append(name)
            if arn == _ADMIN_POLICY:
                rights.grants.append(_Grant(("*",), ("*",)))

    def _line(self, key: str, name: str) -> int | None:
        for quoted in dict.fromkeys((json.dumps(name), json.dumps(name, ensure_ascii=False))):
            pattern = re.compile(rf'"{key}"\s*:\s*{re.escape(quoted)}')
            match = pattern.search(self.file.text)
            if match is not None:
                return self.file.text.count("\n", 0, match.start()) + 1
        return None


# -- policy documents ----------------------------------------------------------------------


def _statements(document: dict[str, Any] | None) -> list[dict[str, Any]]:
    if document is None:
        return []
    statements = document.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list):
        return []
    return [s for s in statements if isinstance(s, dict)]


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _grants(document: dict[str, Any] | None) -> list[_Grant]:
    grants: list[_Grant] = []
    for statement in _statements(document):
        if str(statement.get("Effect", "")).lower() != "allow":
            continue
        not_action = "Action" not in statement and "NotAction" in statement
        actions = _strings(statement.get("NotAction" if not_action else "Action"))
        not_resource = "Resource" not in statement and "NotResource" in statement
        resources = _strings(statement.get("NotResource" if not_resource else "Resource"))
        if actions:
            grants.append(_Grant(actions, resources or ("*",), not_action, not_resource))
    return grants


def _principals(document: dict[str, Any] | None) -> list[str]:
    out: list[str] = []
    for statement in _statements(document):
        if str(statement.get("Effect", "")).lower() != "allow":
            continue
        principal = statement.get("Principal")
        if principal == "*":
            out.append("*")
        elif isinstance(principal, dict):
            for kind, values in principal.items():
                for value in _strings(values):
                    out.append(f"{str(kind).lower()}:{value}")
    return list(dict.fromkeys(out))[:_MAX_LIST]


def _agent_trust(principal: str) -> bool:
    return principal.startswith("service:") and (
        principal[len("service:") :].lower() in _AGENT_SERVICES
    )


def _matches(pattern: str, text: str) -> bool:
    """IAM wildcard matching (``*`` any run, ``?`` one character), in O(len * len) at worst:
    no regular expression to backtrack on a hostile pattern."""
    p = t = 0
    star, mark = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            p, t = p + 1, t + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, t, p + 1
        elif star >= 0:
            p, mark = star + 1, mark + 1
            t = mark
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def _is_agent_action(action: str) -> bool:
    lowered = action.lower()
    service = lowered.split(":", 1)[0]
    if not service.strip("*?"):  # "*", "*:*": everything, not an agent signal
        return False
    if service.startswith(_AGENT_PREFIXES):
        return True
    return any(_matches(lowered, known) for known in _AGENT_ACTIONS)


def _agent_grants(grants: list[_Grant]) -> list[str]:
    reasons: list[str] = []
    for grant in grants:
        if grant.not_action:
            continue
        reasons += [f"allows {a}" for a in grant.actions if _is_agent_action(a)]
    return reasons


def _wild_action(action: str) -> bool:
    return action in ("*", "*:*") or action.endswith(":*")


def _access(grants: list[_Grant]) -> tuple[list[str], int]:
    ranked: dict[str, int] = {}
    for grant in grants:
        resources = [f"NOT({','.join(grant.resources)})"] if grant.not_resource else grant.resources
        if grant.not_action:
            actions: list[tuple[str, bool]] = [(f"NOT({','.join(grant.actions)})", True)]
        else:
            actions = [(a, _wild_action(a) or _is_agent_action(a)) for a in grant.actions]
        for action, first in actions:
            for resource in resources:
                entry = f"aws:{action} {resource}"
                ranked[entry] = min(ranked.get(entry, 1), 0 if first else 1)
    ordered = sorted(ranked, key=lambda e: ranked[e])  # stable: first seen first
    return ordered[:_MAX_ACCESS], max(0, len(ordered) - _MAX_ACCESS)


def _flags(rights: _Rights) -> set[str]:
    flags: set[str] = set()
    for grant in rights.grants:
        any_resource = "*" in grant.resources and not grant.not_resource
        if grant.not_action or grant.not_resource or "*" in grant.resources:
            flags.add("wildcard")
        if grant.not_action:
            continue
        for action in grant.actions:
            if _wild_action(action):
                flags.add("wildcard")
            if action.lower() in ("*", "*:*", "iam:*") and any_resource:
                flags.add("admin")
    return flags


def _owner(tags: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags if isinstance(tags, list) else []:
        if (
            isinstance(tag, dict)
            and isinstance(tag.get("Key"), str)
            and _OWNER_TAG.match(tag["Key"])
        ):
            out[tag["Key"][:60]] = _text(tag.get("Value"))[:200]
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)
