"""Discovery of agents in CI workflows (GitHub Actions) and cloud IAM exports (AWS
``get-account-authorization-details``): which jobs and roles are agents, what they can
reach, their credentials as fingerprints only, and malformed input warned about, never
raised."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.discover.ci_workflows import CiWorkflowScanner
from tether.discover.cloud_iam import CloudIamScanner
from tether.discover.interface import Finding, Scanner, SourceFile, Warnings, fingerprint
from tether.discover.walk import walk

FIXTURES = Path(__file__).parent / "fixtures" / "discover"
PLANTED = "sk-proj-4gqadnCFwcYCSa8epsNTf5bfglV1DF4fdZmaFiIgCRYMtP0j"  # in ci/.../triage.yml


def _scan(scanner: Scanner, root: Path) -> tuple[list[Finding], Warnings]:
    warnings = Warnings()
    found: list[Finding] = []
    for file in walk([root], warnings):
        if scanner.wants(file.path):
            found += list(scanner.scan(file))
    return found, warnings


def _by_name(findings: list[Finding]) -> dict[str, Finding]:
    return {f.name: f for f in findings}


def _expected(area: str, scanner: str) -> set[tuple[str, str, str]]:
    data = json.loads((FIXTURES / area / "EXPECTED.json").read_text(encoding="utf-8"))
    return {(f["kind"], f["name"], f["path"]) for f in data["findings"] if f["scanner"] == scanner}


def _workflow(root: Path, name: str, text: str) -> Path:
    path = root / ".github" / "workflows" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _no_secret_in(findings: list[Finding], *secrets: str) -> None:
    dumped = json.dumps([f.to_dict() for f in findings])
    for secret in secrets:
        assert secret not in dumped


# -- CI workflows ----------------------------------------------------------------------------


def test_the_ci_fixture_reports_exactly_its_agent_jobs() -> None:
    found, warnings = _scan(CiWorkflowScanner(), FIXTURES / "ci")
    assert {(f.kind, f.name, f.path) for f in found} == _expected("ci", "ci-workflows")
    assert warnings.counts == {}
    names = {f.name for f in found}
    for plain in ("claude-review/lint", "nightly-agents/unit-tests", "triage/label-sync"):
        assert plain not in names  # lint, tests, scripts: not agents
    assert not any(n.startswith("release/") for n in names)  # ssh-agent is not an agent
    review = _by_name(found)["claude-review/review"]
    assert review.pointer == "$.jobs.review" and review.line == 19
    assert review.path == ".github/workflows/claude-review.yml" and review.creator is None
    assert "no-owner" not in review.flags
    assert review.detail["workflow"] == "Claude review"
    assert review.detail["triggers"] == ["pull_request_target", "issue_comment"]
    assert "anthropics/claude-code-action@v1" in review.detail["actions"]
    assert review.detail["runs_on"] == "ubuntu-latest"
    assert any("pull_request_target" in r for r in review.detail["risks"])
    assert any("head" in r for r in review.detail["risks"])  # checks out the PR's head
    _no_secret_in(found, PLANTED)


def test_agent_actions_and_clis_make_agent_jobs_and_nothing_else_does(tmp_path: Path) -> None:
    _workflow(
        tmp_path,
        "mixed.yml",
        """\
        on: [push]
        permissions: {}
        jobs:
          claude-action: {runs-on: x, steps: [{uses: anthropics/claude-code-action@v1}]}
          codex-action: {runs-on: x, steps: [{uses: openai/codex-action@v1}]}
          gemini-action: {runs-on: x, steps: [{uses: google-github-actions/run-gemini-cli@v0}]}
          copilot: {runs-on: x, steps: [{uses: github/copilot-review-action@main}]}
          rabbit: {runs-on: x, steps: [{uses: coderabbitai/ai-pr-reviewer@latest}]}
          aider-action: {runs-on: x, steps: [{uses: Aider-AI/aider-action@v1}]}
          mcp-action: {runs-on: x, steps: [{uses: acme/setup-mcp-server@v2}]}
          docker-agent: {runs-on: x, steps: [{uses: "docker://ghcr.io/acme/review-agent:1"}]}
          pr-agent: {runs-on: x, steps: [{uses: qodo-ai/pr-agent@main}]}
          reusable: {uses: acme/workflows/.github/workflows/claude-fix.yml@main}
          claude-cli: {runs-on: x, steps: [{run: "claude -p 'review this' --output-format json"}]}
          codex-cli: {runs-on: x, steps: [{run: "npx -y @openai/codex exec fix"}]}
          gemini-cli: {runs-on: x, steps: [{run: "cd src && GEMINI_MODEL=pro gemini -p hi"}]}
          aider-cli: {runs-on: x, steps: [{run: "sudo aider --yes --message x"}]}
          mcp-npx: {runs-on: x, steps: [{run: "npx @modelcontextprotocol/server-github"}]}
          mcp-uvx: {runs-on: x, steps: [{run: "uvx mcp-server-fetch"}]}
          py-agent: {runs-on: x, steps: [{run: "python3 -m agents.review --pr 1"}]}
          langgraph: {runs-on: x, steps: [{run: "pip install -e . && langgraph build -t img"}]}
          crewai: {runs-on: x, steps: [{run: "uv run crewai run"}]}
          gh-copilot: {runs-on: x, steps: [{run: "gh copilot suggest 'x'"}]}
          shell-if: {runs-on: x, steps: [{run: "if true; then claude -p fix; fi"}]}
          timeout: {runs-on: x, steps: [{run: "timeout 30m ./node_modules/.bin/codex exec x"}]}
          inherit: {uses: ./.github/workflows/opencode.yml, secrets: inherit}
          env-key:
            runs-on: x
            env: {OPENAI_API_KEY: "${{ secrets.OPENAI_KEY_PROD }}"}
            steps: [{run: ./review.sh}]
          with-key:
            runs-on: x
            steps: [{uses: acme/summarise@v1, with: {anthropic_api_key: "${{ vars.K }}"}}]
          secret-ref:
            runs-on: x
            steps: [{run: "./bot.sh ${{ secrets.CLAUDE_CODE_OAUTH_TOKEN }}"}]
          lint: {runs-on: x, steps: [{uses: actions/checkout@v4}, {run: "ruff check ."}]}
          tests: {runs-on: x, steps: [{run: "python -m pytest -q"}]}
          ssh: {runs-on: x, steps: [{uses: webfactory/ssh-agent@v0.9.0}]}
          db: {runs-on: x, steps: [{uses: "docker://postgres:16"}]}
          cache: {runs-on: x, steps: [{uses: actions/cache@v4, with: {key: Linux-node-Ab12Cd34Ef56Gh78}}]}
          npm-token:
            runs-on: x
            env: {NODE_AUTH_TOKEN: "${{ secrets.NPM_TOKEN }}", OPENAI_API_BASE: https://x}
            steps: [{run: "npm publish"}]
          echo: {runs-on: x, steps: [{run: "echo 'ask claude later'; make claude-docs"}]}
        """,
    )
    found, warnings = _scan(CiWorkflowScanner(), tmp_path)
    assert warnings.counts == {}
    agents = {
        "claude-action", "codex-action", "gemini-action", "copilot", "rabbit",
        "aider-action", "mcp-action", "docker-agent", "pr-agent", "reusable", "claude-cli",
        "codex-cli", "gemini-cli", "aider-cli", "mcp-npx", "mcp-uvx", "py-agent",
        "langgraph", "crewai", "gh-copilot", "env-key", "with-key", "secret-ref",
        "shell-if", "timeout", "inherit",
    }  # fmt: skip
    assert {f.name.split("/", 1)[1] for f in found} == agents
    by = {f.name.split("/", 1)[1]: f for f in found}
    assert all(f.kind == "ci-workflow" and f.scanner == "ci-workflows" for f in found)
    assert by["claude-cli"].detail["agent"] == ["runs claude"]
    assert by["py-agent"].detail["agent"] == ["runs python -m agents.review"]
    assert "env OPENAI_API_KEY (openai-api-key)" in by["env-key"].detail["agent"]
    assert by["reusable"].detail["actions"] == [
        "acme/workflows/.github/workflows/claude-fix.yml@main"
    ]
    assert by["mcp-npx"].detail["agent"][0] == "runs @modelcontextprotocol/server-github"
    assert by["timeout"].detail["agent"] == ["runs codex"]
    inherit = by["inherit"]  # a reusable workflow given every secret
    assert inherit.detail["secrets_inherited"] is True
    assert [c.where for c in inherit.credentials] == ["secrets.*"]


def test_permissions_job_level_replaces_workflow_level_and_flags_follow(tmp_path: Path) -> None:
    _workflow(
        tmp_path,
        "perms.yml",
        """\
        on: {issue_comment: {types: [created]}}
        permissions:
          contents: read
          issues: write
        jobs:
          inherits:
            runs-on: x
            steps: [{uses: anthropics/claude-code-action@v1}]
          own:
            runs-on: x
            permissions: {pull-requests: write, id-token: write, checks: none}
            steps: [{uses: anthropics/claude-code-action@v1}]
          none:
            runs-on: x
            permissions: {}
            steps: [{uses: anthropics/claude-code-action@v1}]
          everything:
            runs-on: x
            permissions: write-all
            steps: [{uses: anthropics/claude-code-action@v1}]
          reads:
            runs-on: x
            permissions: read-all
            steps: [{uses: anthropics/claude-code-action@v1}]
        """,
    )
    _workflow(
        tmp_path,
        "default-push.yml",
        "on: push\njobs:\n  agent: {runs-on: x, steps: [{run: codex exec x}]}\n",
    )
    _workflow(
        tmp_path,
        "default-pr.yaml",
        "on: [pull_request]\njobs:\n  agent: {runs-on: x, steps: [{run: codex exec x}]}\n",
    )
    by = _by_name(_scan(CiWorkflowScanner(), tmp_path)[0])
    inherits = by["perms/inherits"]
    assert inherits.access == ("github:contents:read", "github:issues:write")
    assert inherits.detail["permissions_from"] == "workflow" and not inherits.flags
    own = by["perms/own"]  # the job's own replace the workflow's: no contents, no issues
    assert own.access == ("github:id-token:write", "github:pull-requests:write")
    assert own.detail["permissions"] == {
        "pull-requests": "write",
        "id-token": "write",
        "checks": "none",
    }
    assert by["perms/none"].access == () and not by["perms/none"].flags
    everything = by["perms/everything"]
    assert everything.access == ("github:*:write",)
    assert set(everything.flags) == {"admin", "wildcard"}
    assert by["perms/reads"].access == ("github:*:read",) and not by["perms/reads"].flags
    push = by["default-push/agent"]  # no permissions anywhere, a trigger with a write token
    assert push.access == ("github:default",) and push.flags == ("admin",)
    assert push.detail["permissions_from"] == "default"
    pr = by["default-pr/agent"]  # pull_request: read-only for forks
    assert pr.access == ("github:default",) and pr.flags == ()


def test_secret_references_are_credentials_without_values(tmp_path: Path) -> None:
    _workflow(
        tmp_path,
        "refs.yml",
        """\
        on: workflow_dispatch
        permissions: {contents: read}
        env:
          SHARED: ${{ secrets.SHARED_TOKEN }}
        jobs:
          agent:
            runs-on: x
            env:
              ANTHROPIC_API_KEY: ${{ secrets.ANTHROPIC_API_KEY }}
            steps:
              - uses: anthropics/claude-code-action@v1
                with:
                  github_token: ${{ secrets['BOT_TOKEN'] }}
                  settings: ${{ toJSON(secrets) }}
              - run: echo "${{ secrets.ANTHROPIC_API_KEY }}" > /dev/null
          lint:
            runs-on: x
            steps: [{run: make lint}]
        """,
    )
    found, _ = _scan(CiWorkflowScanner(), tmp_path)
    assert [f.name for f in found] == ["refs/agent"]
    (agent,) = found
    wheres = [c.where for c in agent.credentials]
    assert sorted(wheres) == [
        "secrets.*", "secrets.ANTHROPIC_API_KEY", "secrets.BOT_TOKEN", "secrets.SHARED_TOKEN"
    ]  # fmt: skip
    for credential in agent.credentials:
        assert credential.type == "ci-secret" and credential.plaintext is False
        assert credential.fingerprint == fingerprint(credential.where)
    assert "static-key" in agent.flags  # an API key, long-lived
    assert "plaintext-secret" not in agent.flags
    assert "all secrets (toJSON(secrets))" in agent.detail["agent"]


def test_a_literal_key_is_only_a_fingerprint_and_placeholders_are_not_keys(
    tmp_path: Path,
) -> None:
    found, _ = _scan(CiWorkflowScanner(), FIXTURES / "ci")
    triage = _by_name(found)["triage/triage"]
    (literal,) = triage.credentials
    assert literal.type == "openai-api-key" and literal.plaintext is True
    assert literal.fingerprint == fingerprint(PLANTED)
    assert literal.where == "$.jobs.triage.steps[0].env.OPENAI_API_KEY"
    assert {"plaintext-secret", "static-key", "admin", "wildcard"} <= set(triage.flags)
    summarise = _by_name(found)["triage/summarise"]  # sk-ant-api03-your-key-here
    assert [c.where for c in summarise.credentials] == ["secrets.GITHUB_TOKEN"]
    assert "plaintext-secret" not in summarise.flags

    aws = "AKIA" + "Q7RZ3MXKV2PLN4TW"
    ghp = "ghp_" + "x7Rt2Lq9Wm4Kp8Vz3Nb6Hs1Jd5Fg0Yc2Ae7Ui"
    bespoke = "Zq8r-T4mL-9wXv-2KpN-7bHs"
    _workflow(
        tmp_path,
        "literal.yml",
        f"""\
        on: push
        permissions: {{contents: read}}
        jobs:
          agent:
            runs-on: x
            env:
              AGENT_PASSWORD: {bespoke}
              OPENAI_API_KEY: sk-...
              MISTRAL_API_KEY: ${{{{ secrets.MISTRAL }}}}
              ANTHROPIC_API_KEY: your-anthropic-key-here
              EXAMPLE: AKIAIOSFODNN7EXAMPLE
            steps:
              - run: |
                  aws configure set aws_access_key_id {aws}
                  GH_TOKEN={ghp} claude -p "open a PR"
        """,
    )
    found, _ = _scan(CiWorkflowScanner(), tmp_path)
    (agent,) = found
    kinds = sorted((c.type, c.fingerprint) for c in agent.credentials if c.plaintext)
    assert kinds == sorted(
        [
            ("aws-access-key", fingerprint(aws)),
            ("github-token", fingerprint(ghp)),
            ("password", fingerprint(bespoke)),  # AGENT_PASSWORD: typed as every scanner does
        ]
    )
    _no_secret_in(found, aws, ghp, bespoke, "AKIAIOSFODNN7EXAMPLE", "your-anthropic-key-here")


def test_ids_are_stable_when_lines_move(tmp_path: Path) -> None:
    path = _workflow(
        tmp_path,
        "stable.yml",
        "on: push\njobs:\n  bot: {runs-on: x, steps: [{run: claude -p hi}]}\n",
    )
    (before,) = _scan(CiWorkflowScanner(), tmp_path)[0]
    path.write_text("# moved\n\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    (after,) = _scan(CiWorkflowScanner(), tmp_path)[0]
    assert before.id == after.id and after.line == before.line + 2 == 5

    ids = [f.id for f in _scan(CloudIamScanner(), FIXTURES / "cloud")[0]]
    assert ids == [f.id for f in _scan(CloudIamScanner(), FIXTURES / "cloud")[0]]
    assert len(set(ids)) == len(ids)


def test_malformed_workflows_are_warned_about_never_raised(tmp_path: Path) -> None:
    _workflow(tmp_path, "broken.yml", "on: push\njobs:\n  a: [unclosed\n")
    _workflow(tmp_path, "list.yml", "- just\n- a list\n")
    _workflow(tmp_path, "jobs.yml", "on: push\njobs: [1, 2]\n")
    _workflow(tmp_path, "two.yml", "on: push\n---\non: pull_request\n")
    _workflow(tmp_path, "tag.yml", "on: push\njobs: !!python/object:os.system {}\n")
    _workflow(tmp_path, "date.yml", "on: push\njobs:\n  a: {runs-on: 2024-13-45}\n")
    _workflow(tmp_path, "empty.yaml", "")
    _workflow(
        tmp_path,
        "ok.yml",
        "on: push\njobs:\n  bad: 7\n  bot: {runs-on: x, steps: [{run: aider --yes}]}\n",
    )
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x]"]  # nested aliases: visited once each
    for i in range(1, 20):
        prev = chr(ord("a") + i - 1)
        bomb.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + prev] * 9)}]")
    body = "\n".join("  " + line for line in bomb)
    _workflow(
        tmp_path, "bomb.yml", f"on: push\nenv:\n{body}\njobs:\n  j: {{steps: [{{run: ls}}]}}\n"
    )
    (tmp_path / ".github" / "workflows" / "nested").mkdir()
    _workflow(tmp_path, "nested/deeper.yml", "jobs: {a: {steps: [{run: claude}]}}\n")  # not read
    found, warnings = _scan(CiWorkflowScanner(), tmp_path)
    assert [f.name for f in found] == ["ok/bot"]
    assert warnings.counts["malformed"] >= 6
    assert not CiWorkflowScanner().wants(tmp_path / ".github" / "workflows" / "nested" / "x.yml")
    assert not CiWorkflowScanner().wants(tmp_path / "workflows" / "x.yml")
    assert not CiWorkflowScanner().wants(tmp_path / ".github" / "workflows" / "README.md")


# -- cloud IAM -------------------------------------------------------------------------------


def test_the_cloud_fixture_reports_exactly_its_agent_roles() -> None:
    found, warnings = _scan(CloudIamScanner(), FIXTURES / "cloud")
    assert {(f.kind, f.name, f.path) for f in found} == _expected("cloud", "cloud-iam")
    assert warnings.counts == {}
    by = _by_name(found)
    for plain in ("web-ec2-role", "ops-break-glass", "metrics-reporter", "github-actions-deploy"):
        assert plain not in by  # EC2, admin humans, a bedrock grant only in a non-default version
    assert "user/alice" not in by

    kb = by["AmazonBedrockExecutionRoleForKnowledgeBase_docs"]  # URL-encoded trust and policy
    assert kb.pointer == "$.RoleDetailList[0]" and kb.line is not None
    assert kb.detail["trusted"] == ["service:bedrock.amazonaws.com"]
    assert kb.detail["inline_policies"] == ["kb-docs-access"]
    assert kb.detail["last_used"]["Region"] == "us-east-1"
    assert kb.access[0].startswith("aws:bedrock:InvokeModel arn:aws:bedrock:us-east-1::")
    assert "aws:s3:GetObject arn:aws:s3:::acme-kb-docs/*" in kb.access
    assert kb.flags == ()

    lam = by["support-bot-lambda"]  # attached customer-managed, URL-encoded, bedrock:*
    assert lam.detail["trusted"] == ["service:lambda.amazonaws.com"]
    assert lam.access[0] == "aws:bedrock:* *" and lam.flags == ("wildcard",)
    assert "aws:logs:PutLogEvents *" in lam.access  # a known AWS managed policy
    assert lam.detail["attached_policies"] == ["BedrockInvokeAll", "AWSLambdaBasicExecutionRole"]

    core = by["agentcore-runtime"]
    assert set(core.flags) == {"admin", "wildcard"} and core.access == ("aws:* *",)

    user = by["user/ml-batch-bot"]
    assert user.pointer == "$.UserDetailList[0]" and "static-key" in user.flags
    assert user.detail["groups"] == ["bedrock-users"]
    assert user.detail["inline_policies"] == ["bedrock-users/invoke-models"]
    assert all(f.creator is None and "no-owner" not in f.flags for f in found)


def _export(roles: list[dict[str, Any]], policies: list[dict[str, Any]] | None = None) -> str:
    return json.dumps({"RoleDetailList": roles, "Policies": policies or []}, indent=2)


def _role(name: str, trust: Any, inline: Any = (), attached: Any = ()) -> dict[str, Any]:
    return {
        "RoleName": name,
        "Arn": f"arn:aws:iam::111122223333:role/{name}",
        "AssumeRolePolicyDocument": trust,
        "RolePolicyList": [{"PolicyName": n, "PolicyDocument": d} for n, d in inline],
        "AttachedManagedPolicies": [{"PolicyName": n, "PolicyArn": a} for n, a in attached],
    }


def _doc(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


SERVICE_TRUST = _doc(
    {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
)


@pytest.mark.parametrize("encoded", [False, True])
def test_policy_documents_read_as_objects_or_url_encoded(tmp_path: Path, encoded: bool) -> None:
    def enc(doc: dict[str, Any]) -> Any:
        return quote(json.dumps(doc)) if encoded else doc

    grant = _doc(
        {"Effect": "Allow", "Action": ["bedrock:InvokeAgent", "bedrock:Retrieve"], "Resource": "*"},
        {"Effect": "Deny", "Action": "s3:*", "Resource": "*"},
    )
    managed = {
        "PolicyName": "Agents",
        "Arn": "arn:aws:iam::111122223333:policy/Agents",
        "DefaultVersionId": "v3",
        "PolicyVersionList": [
            {"VersionId": "v3", "IsDefaultVersion": True, "Document": enc(_doc(
                {"Effect": "Allow", "NotAction": ["iam:*"], "Resource": "*"},
                {"Effect": "Allow", "Action": "bedrock-agentcore:InvokeAgentRuntime",
                 "NotResource": "arn:aws:bedrock-agentcore:*:*:runtime/prod-*"},
            ))},
        ],
    }  # fmt: skip
    roles = [
        _role("inline", enc(SERVICE_TRUST), inline=[("p", enc(grant))]),
        _role("managed", enc(SERVICE_TRUST), attached=[("Agents", managed["Arn"])]),
        _role("plain", enc(SERVICE_TRUST), inline=[("s3", enc(_doc(
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"})))]),
        _role("ops", enc(_doc({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::1:root"},
              "Action": "sts:AssumeRole"})), inline=[("all", enc(_doc(
                  {"Effect": "Allow", "Action": "*", "Resource": "*"})))]),
    ]  # fmt: skip
    (tmp_path / "iam.json").write_text(_export(roles, [managed]), encoding="utf-8")
    found, warnings = _scan(CloudIamScanner(), tmp_path)
    assert warnings.counts == {}
    by = _by_name(found)
    assert set(by) == {"inline", "managed"}  # a bare * on an admin role is no agent signal
    assert by["inline"].access == ("aws:bedrock:InvokeAgent *", "aws:bedrock:Retrieve *")
    assert by["inline"].detail["agent"] == ["allows bedrock:InvokeAgent"]
    assert by["inline"].detail["trusted"] == ["service:ec2.amazonaws.com"]
    assert by["inline"].flags == ("wildcard",)  # Resource "*"
    managed_role = by["managed"]
    assert managed_role.access == (
        "aws:NOT(iam:*) *",
        "aws:bedrock-agentcore:InvokeAgentRuntime NOT(arn:aws:bedrock-agentcore:*:*:runtime/prod-*)",
    )
    assert managed_role.flags == ("wildcard",)  # NotAction: everything else, but not admin


def test_administrator_access_and_wildcards_are_flagged(tmp_path: Path) -> None:
    bedrock_trust = _doc(
        {"Effect": "Allow", "Principal": {"Service": ["bedrock.amazonaws.com"]},
         "Action": "sts:AssumeRole"}
    )  # fmt: skip
    roles = [
        _role("admin-managed", bedrock_trust,
              attached=[("AdministratorAccess", "arn:aws:iam::aws:policy/AdministratorAccess")]),
        _role("admin-inline", bedrock_trust,
              inline=[("x", _doc({"Effect": "Allow", "Action": "*:*", "Resource": ["*"]}))]),
        _role("iam-star", bedrock_trust,
              inline=[("x", _doc({"Effect": "Allow", "Action": "iam:*", "Resource": "*"}))]),
        _role("narrow", bedrock_trust, inline=[("x", _doc({"Effect": "Allow",
              "Action": "bedrock:InvokeModel", "Resource": "arn:aws:bedrock:*::foundation-model/x"}))]),
        _role("unknown", bedrock_trust,
              attached=[("Custom", "arn:aws:iam::111122223333:policy/NotInExport")]),
    ]  # fmt: skip
    (tmp_path / "export.json").write_text(_export(roles), encoding="utf-8")
    by = _by_name(_scan(CloudIamScanner(), tmp_path)[0])
    assert set(by["admin-managed"].flags) == {"admin", "wildcard"}
    assert set(by["admin-inline"].flags) == {"admin", "wildcard"}
    assert set(by["iam-star"].flags) == {"admin", "wildcard"}
    assert by["narrow"].flags == ()
    assert by["unknown"].detail["unresolved_policies"] == ["Custom"]


def test_access_is_deduplicated_and_capped(tmp_path: Path) -> None:
    actions = [f"s3:Get{i}" for i in range(60)]
    doc = _doc(
        {"Effect": "Allow", "Action": actions, "Resource": "arn:aws:s3:::b"},
        {"Effect": "Allow", "Action": actions, "Resource": "arn:aws:s3:::b"},
        {"Effect": "Allow", "Action": "bedrock:InvokeModel", "Resource": "*"},
    )
    trust = SERVICE_TRUST
    (tmp_path / "x.json").write_text(_export([_role("big", trust, [("p", doc)])]), encoding="utf-8")
    (finding,) = _scan(CloudIamScanner(), tmp_path)[0]
    assert len(finding.access) == 40 and finding.detail["access_truncated"] == 21
    assert finding.access[0] == "aws:bedrock:InvokeModel *"  # agent grants first
    assert len(set(finding.access)) == 40


def test_malformed_exports_are_warned_about_and_the_rest_is_read(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text('{"RoleDetailList": [', encoding="utf-8")
    (tmp_path / "deep.json").write_text('{"Policies": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (tmp_path / "notlist.json").write_text('{"RoleDetailList": {"a": 1}}', encoding="utf-8")
    (tmp_path / "other.json").write_text('{"name": "app", "Policies": "none"}', encoding="utf-8")
    (tmp_path / "package.json").write_text('{"name": "app"}', encoding="utf-8")
    trust = _doc(
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "x"}
    )
    roles: list[Any] = [
        "not a role",
        {"RoleName": 5},
        _role("bad-doc", trust, inline=[("p", "%7Bnot json")]),
        _role("fine", trust),
    ]
    (tmp_path / "iam.json").write_text(_export(roles), encoding="utf-8")
    found, warnings = _scan(CloudIamScanner(), tmp_path)
    assert sorted(f.name for f in found) == ["bad-doc", "fine"]  # trusted by sagemaker
    assert warnings.counts["malformed"] == 6  # broken, deep, notlist, 2 roles, 1 document
    assert not CloudIamScanner().wants(tmp_path / "iam.yaml")


# -- never raising -----------------------------------------------------------------------------

_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)
_WORDS = st.sampled_from(
    ["RoleDetailList", "UserDetailList", "GroupDetailList", "Policies", "Statement", "Action",
     "Resource", "Principal", "Service", "bedrock:*", "*", "Allow", "jobs", "steps", "on", "uses",
     "run", "env", "permissions", "write-all", "${{ secrets.X }}", "PolicyVersionList"]
)  # fmt: skip
_SHAPED = st.recursive(
    st.none() | st.text(max_size=8) | _WORDS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_WORDS, inner, max_size=5),
    max_leaves=30,
)


def _file(path: Path, root: Path, warnings: Warnings) -> SourceFile:
    return SourceFile(path=path, root=root, warnings=warnings)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    blob=st.text(max_size=300) | _JSONISH.map(json.dumps) | _SHAPED.map(json.dumps),
    shaped=_SHAPED,
)
def test_random_input_never_raises(
    tmp_path_factory: pytest.TempPathFactory, blob: str, shaped: Any
) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    warnings = Warnings()
    workflow = _workflow(root, "ci.yml", "")
    workflow.write_text(blob, encoding="utf-8", errors="surrogatepass")
    export = root / "iam.json"
    export.write_text(blob, encoding="utf-8", errors="surrogatepass")
    for scanner, path in ((CiWorkflowScanner(), workflow), (CloudIamScanner(), export)):
        for finding in scanner.scan(_file(path, root, warnings)):
            json.dumps(finding.to_dict())
    wrapped = {"on": shaped, "permissions": shaped, "jobs": {"j": shaped, "k": {"steps": shaped}}}
    workflow.write_text(json.dumps(wrapped), encoding="utf-8")
    export.write_text(
        json.dumps({"RoleDetailList": [shaped, {"RoleName": "r", "RolePolicyList": shaped}],
                    "UserDetailList": shaped, "Policies": shaped, "GroupDetailList": shaped}),
        encoding="utf-8",
    )  # fmt: skip
    for scanner, path in ((CiWorkflowScanner(), workflow), (CloudIamScanner(), export)):
        for finding in scanner.scan(_file(path, root, warnings)):
            json.dumps(finding.to_dict())
