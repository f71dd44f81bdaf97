"""The MCP client configuration scanner and the agent code scanner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.discover.agent_code import AgentCodeScanner
from tether.discover.interface import Finding, SourceFile, Warnings, fingerprint
from tether.discover.jsonc import parse_jsonc
from tether.discover.mcp_clients import user_locations
from tether.discover.mcp_configs import McpConfigScanner
from tether.discover.walk import walk

FIXTURES = Path(__file__).parent / "fixtures" / "discover"
MCP = FIXTURES / "mcp"
CODE = FIXTURES / "code"


def scan(root: Path, scanner, warnings: Warnings | None = None) -> list[Finding]:
    warnings = warnings if warnings is not None else Warnings()
    found: list[Finding] = []
    for file in walk([root], warnings):
        if scanner.wants(file.path):
            found.extend(scanner.scan(file))
    return found


def by_key(findings: list[Finding]) -> dict[tuple[str, str | None], Finding]:
    return {(f.path, f.pointer or f.name): f for f in findings}


def source(tmp_path: Path, relative: str, text: str, warnings: Warnings) -> SourceFile:
    path = tmp_path / relative
    return SourceFile(path=path, root=tmp_path, warnings=warnings, _text=text)


@pytest.fixture(scope="module")
def mcp_findings() -> list[Finding]:
    warnings = Warnings()
    found = scan(MCP, McpConfigScanner(), warnings)
    assert not warnings.counts, warnings.to_dict()
    return found


@pytest.fixture(scope="module")
def code_findings() -> list[Finding]:
    warnings = Warnings()
    found = scan(CODE, AgentCodeScanner(), warnings)
    assert not warnings.counts, warnings.to_dict()
    return found


# --------------------------------------------------------------------------------------
# The fixtures match their EXPECTED.json


@pytest.mark.parametrize(
    ("root", "fixture"), [(MCP, "mcp_findings"), (CODE, "code_findings")], ids=["mcp", "code"]
)
def test_fixture_findings_are_exactly_the_expected_ones(root, fixture, request):
    expected = json.loads((root / "EXPECTED.json").read_text())
    found = request.getfixturevalue(fixture)
    got = sorted(
        ({"kind": f.kind, "name": f.name, "path": f.path, "scanner": f.scanner} for f in found),
        key=lambda d: (d["path"], d["name"]),
    )
    want = sorted(expected["findings"], key=lambda d: (d["path"], d["name"]))
    assert got == want
    assert len({f.id for f in found}) == len(found)  # IDs are distinct


def test_no_planted_secret_appears_in_any_finding(mcp_findings, code_findings):
    expected = json.loads((MCP / "EXPECTED.json").read_text())
    dumped = json.dumps([f.to_dict() for f in mcp_findings + code_findings])
    fingerprints = {c.fingerprint for f in mcp_findings for c in f.credentials if c.plaintext}
    for secret in expected["secrets"]:
        assert secret not in dumped
        assert fingerprint(secret) in fingerprints, secret  # ... yet each one is found
    assert len(expected["secrets"]) == len(fingerprints)


def test_lookalikes_are_not_credentials(mcp_findings):
    expected = json.loads((MCP / "EXPECTED.json").read_text())
    fingerprints = {c.fingerprint for f in mcp_findings for c in f.credentials}
    for lookalike in expected["lookalikes"]:
        assert fingerprint(lookalike) not in fingerprints, lookalike
    slack = by_key(mcp_findings)[("home/.cursor/mcp.json", "$.mcpServers.slack")]
    assert slack.credentials == ()
    assert slack.flags == ()


# --------------------------------------------------------------------------------------
# Each client's format


CLIENTS = [
    # (path, pointer, name, line, client, transport, access)
    (
        "home/Library/Application Support/Claude/claude_desktop_config.json",
        "$.mcpServers.filesystem",
        "filesystem",
        3,
        "claude-desktop",
        "stdio",
        ["filesystem:/Users/alice/Documents", "filesystem:/Users/alice/Desktop"],
    ),
    (
        "home/Library/Application Support/Claude/claude_desktop_config.json",
        "$.mcpServers.postgres",
        "postgres",
        19,
        "claude-desktop",
        "stdio",
        ["database:postgresql://db.internal/appdb"],
    ),
    (
        "home/.claude.json",
        '$.projects["/home/alice/src/infra"].mcpServers.k8s',
        "k8s",
        23,
        "claude-code",
        "stdio",
        ["k8s:cluster", "filesystem:/home/alice/.kube"],
    ),
    (
        "home/.claude.json",
        '$.projects["/home/alice/src/webapp"].mcpServers.sentry',
        "sentry",
        15,
        "claude-code",
        "http",
        ["url:https://mcp.sentry.dev", "sentry:api"],
    ),
    (
        "project/.mcp.json",
        "$.mcpServers.github",
        "github",
        3,
        "claude-code",
        "http",
        ["url:https://api.githubcopilot.com", "github:api"],
    ),
    (
        "home/.cursor/mcp.json",
        "$.mcpServers.acme-remote",
        "acme-remote",
        10,
        "cursor",
        "http",
        ["url:https://mcp.acme-tools.io"],
    ),
    (
        "project/.vscode/mcp.json",
        "$.servers.perplexity",
        "perplexity",
        12,
        "vscode",
        "stdio",
        [],
    ),
    (
        "home/AppData/Roaming/Code/User/settings.json",
        "$.mcp.servers.fetch",
        "fetch",
        6,
        "vscode",
        "stdio",
        ["url:*"],
    ),
    (
        "home/.codeium/windsurf/mcp_config.json",
        "$.mcpServers.acme-http",
        "acme-http",
        10,
        "windsurf",
        "http",
        ["url:https://mcp.acme-tools.io"],
    ),
    (
        "home/.continue/config.yaml",
        "$.mcpServers[0]",
        "SQLite MCP",
        9,
        "continue",
        "stdio",
        ["database:sqlite:/data/app.db"],
    ),
    (
        "home/.continue/config.yaml",
        "$.mcpServers[2]",
        "Acme Remote",
        22,
        "continue",
        "http",
        ["url:https://mcp.acme-tools.io"],
    ),
    (
        "project/.continue/config.json",
        "$.experimental.modelContextProtocolServers[0]",
        "mcp-server-git",
        5,
        "continue",
        "stdio",
        ["git:/home/alice/src/webapp"],
    ),
    (
        "home/.gemini/settings.json",
        "$.mcpServers.search-http",
        "search-http",
        4,
        "gemini-cli",
        "http",
        ["url:https://search.acme-tools.io"],
    ),
    (
        "home/.gemini/settings.json",
        "$.mcpServers.events-sse",
        "events-sse",
        11,
        "gemini-cli",
        "sse",
        ["url:https://events.acme-tools.io"],
    ),
    (
        "home/.codex/config.toml",
        "$.mcp_servers.shell",
        "shell",
        8,
        "codex",
        "stdio",
        ["shell"],
    ),
    (
        "home/.codex/config.toml",
        "$.mcp_servers.linear",
        "linear",
        13,
        "codex",
        "http",
        ["url:https://mcp.linear.app", "linear:api"],
    ),
    (
        "home/.config/zed/settings.json",
        "$.context_servers.postgres-zed",
        "postgres-zed",
        6,
        "zed",
        "stdio",
        ["database:postgres://pg.local/analytics"],
    ),
    (
        "home/.config/zed/settings.json",
        "$.context_servers.mcp-server-github",
        "mcp-server-github",
        22,
        "zed",
        "stdio",
        ["github:api"],
    ),
]


@pytest.mark.parametrize(
    ("path", "pointer", "name", "line", "client", "transport", "access"),
    CLIENTS,
    ids=[f"{c[4]}:{c[2]}" for c in CLIENTS],
)
def test_each_client_format(mcp_findings, path, pointer, name, line, client, transport, access):
    finding = by_key(mcp_findings)[(path, pointer)]
    assert finding.kind == "mcp-server"
    assert finding.scanner == "mcp-configs"
    assert finding.name == name
    assert finding.line == line
    assert finding.detail["client"] == client
    assert finding.detail["transport"] == transport
    assert list(finding.access) == access
    assert finding.creator is None
    assert "no-owner" not in finding.flags


CREDENTIALS = [
    # (path, pointer, [(type, where, plaintext)], flags)
    (
        "home/Library/Application Support/Claude/claude_desktop_config.json",
        "$.mcpServers.github",
        [("github-token", "env:GITHUB_PERSONAL_ACCESS_TOKEN", True)],
        ("plaintext-secret", "static-key"),
    ),
    (
        "home/Library/Application Support/Claude/claude_desktop_config.json",
        "$.mcpServers.postgres",
        [("database-password", "arg:2:password", True)],
        ("plaintext-secret", "static-key"),
    ),
    (
        "project/.mcp.json",
        "$.mcpServers.db",
        [("database-password", "arg:2:password", True)],
        ("admin", "plaintext-secret", "static-key"),
    ),
    (
        "project/.mcp.json",
        "$.mcpServers.github",
        [("env-reference", "header:Authorization", False)],
        (),
    ),
    (
        "home/.cursor/mcp.json",
        "$.mcpServers.brave-search",
        [("api-key", "env:BRAVE_API_KEY", True)],
        ("plaintext-secret", "static-key"),
    ),
    (
        "home/.cursor/mcp.json",
        "$.mcpServers.acme-remote",
        [("api-key", "url:query:api_key", True)],
        ("plaintext-secret", "static-key"),
    ),
    (
        "home/.codeium/windsurf/mcp_config.json",
        "$.mcpServers.sentry",
        [("sentry-token", "env:SENTRY_AUTH_TOKEN", True)],
        ("plaintext-secret", "static-key"),
    ),
    (
        "home/.codeium/windsurf/mcp_config.json",
        "$.mcpServers.acme-http",
        [("env-reference", "header:Authorization", False)],
        (),
    ),
    (
        "home/.gemini/settings.json",
        "$.mcpServers.search-http",
        [("api-key", "header:X-API-Key", True)],
        ("plaintext-secret", "static-key"),
    ),
    (
        "home/.gemini/settings.json",
        "$.mcpServers.gemini-helper",
        [("env-reference", "env:GEMINI_API_KEY", False)],
        (),
    ),
    (
        "home/.codex/config.toml",
        "$.mcp_servers.docs",
        [("env-reference", "header:Authorization", False)],
        (),
    ),
    (
        "home/.codex/config.toml",
        "$.mcp_servers.linear",
        [
            ("linear-api-key", "header:Authorization", True),
            ("env-reference", "header:X-Workspace-Token", False),
        ],
        ("plaintext-secret", "static-key"),
    ),
    (
        "home/.codex/config.toml",
        "$.mcp_servers.shell",
        [],
        ("wildcard",),
    ),
    (
        "home/.config/zed/settings.json",
        "$.context_servers.postgres-zed",
        [("env-reference", "arg:2:password", False)],
        (),
    ),
    (
        "home/.config/zed/settings.json",
        "$.context_servers.remote-zed",
        [],
        (),
    ),
    (
        "home/.config/zed/settings.json",
        "$.context_servers.mcp-server-github",
        [("github-token", "setting:github_personal_access_token", True)],
        ("plaintext-secret", "static-key"),
    ),
    (
        "home/.continue/config.yaml",
        "$.mcpServers[1]",
        [
            ("aws-access-key", "env:AWS_ACCESS_KEY_ID", True),
            ("aws-secret-key", "env:AWS_SECRET_ACCESS_KEY", True),
        ],
        ("plaintext-secret", "static-key"),
    ),
    (
        "home/.continue/config.yaml",
        "$.mcpServers[2]",
        [("env-reference", "header:Authorization", False)],
        (),
    ),
    (
        "home/.claude.json",
        '$.projects["/home/alice/src/infra"].mcpServers.k8s',
        [("token", "env:KUBE_TOKEN", True)],
        ("plaintext-secret", "static-key"),
    ),
    (
        "project/.vscode/mcp.json",
        "$.servers.perplexity",
        [("env-reference", "env:PERPLEXITY_API_KEY", False)],
        (),
    ),
    (
        "project/.vscode/mcp.json",
        "$.servers.openai-tools",
        [("openai-api-key", "arg:--api-key", True)],
        ("plaintext-secret", "static-key"),
    ),
]


@pytest.mark.parametrize(
    ("path", "pointer", "credentials", "flags"), CREDENTIALS, ids=[c[1] for c in CREDENTIALS]
)
def test_credentials_references_and_flags(mcp_findings, path, pointer, credentials, flags):
    finding = by_key(mcp_findings)[(path, pointer)]
    assert [(c.type, c.where, c.plaintext) for c in finding.credentials] == credentials
    assert finding.flags == flags


def test_references_are_fingerprinted_from_their_text(mcp_findings):
    github = by_key(mcp_findings)[("project/.mcp.json", "$.mcpServers.github")]
    assert github.credentials[0].fingerprint == fingerprint("${GITHUB_PAT}")
    perplexity = by_key(mcp_findings)[("project/.vscode/mcp.json", "$.servers.perplexity")]
    assert perplexity.credentials[0].fingerprint == fingerprint("${input:perplexity-key}")
    docs = by_key(mcp_findings)[("home/.codex/config.toml", "$.mcp_servers.docs")]
    assert docs.credentials[0].fingerprint == fingerprint("${DOCS_MCP_TOKEN}")


def test_commands_and_urls_are_shown_without_secrets(mcp_findings):
    found = by_key(mcp_findings)
    tools = found[("project/.vscode/mcp.json", "$.servers.openai-tools")]
    secret = "sk-proj-soRTJX890N3PqblQvzrPwQB1vvnUBw2DG7U2Ib7f6vmwImhR"
    assert tools.detail["command"] == [
        "python",
        "-m",
        "tools_server",
        "--api-key",
        f"<secret:{fingerprint(secret)}>",
    ]
    postgres = found[
        (
            "home/Library/Application Support/Claude/claude_desktop_config.json",
            "$.mcpServers.postgres",
        )
    ]
    assert postgres.detail["command"][-1] == "postgresql://db.internal:5432/appdb"
    remote = found[("home/.cursor/mcp.json", "$.mcpServers.acme-remote")]
    assert remote.detail["url"] == "https://mcp.acme-tools.io/mcp?region=eu"
    k8s = found[("home/.claude.json", '$.projects["/home/alice/src/infra"].mcpServers.k8s')]
    assert k8s.detail["project"] == "/home/alice/src/infra"
    assert any(word.startswith("KUBE_TOKEN=<secret:") for word in k8s.detail["command"])


# --------------------------------------------------------------------------------------
# Stable IDs


def test_ids_are_stable_across_rescans_and_inserted_lines(tmp_path):
    shutil.copytree(MCP / "project", tmp_path / "project")
    shutil.copytree(CODE / "py", tmp_path / "py")
    first = scan(tmp_path, McpConfigScanner()) + scan(tmp_path, AgentCodeScanner())
    again = scan(tmp_path, McpConfigScanner()) + scan(tmp_path, AgentCodeScanner())
    assert [f.to_dict() for f in first] == [f.to_dict() for f in again]

    mcp_json = tmp_path / "project" / ".mcp.json"
    mcp_json.write_text("\n\n\n" + mcp_json.read_text())
    vscode = tmp_path / "project" / ".vscode" / "mcp.json"
    vscode.write_text("// a comment\n// another\n" + vscode.read_text())
    python = tmp_path / "py" / "openai_agent.py"
    python.write_text("# one\n# two\n# three\n" + python.read_text())
    moved = scan(tmp_path, McpConfigScanner()) + scan(tmp_path, AgentCodeScanner())
    before = {f.id: f for f in first}
    after = {f.id: f for f in moved}
    assert before.keys() == after.keys()
    shifted = {
        "project/.mcp.json": 3,
        "project/.vscode/mcp.json": 2,
        "py/openai_agent.py": 3,
    }
    for ident, finding in before.items():
        assert after[ident].line == finding.line + shifted.get(finding.path, 0)


# --------------------------------------------------------------------------------------
# Malformed input


MALFORMED = {
    ".cursor/mcp.json": '{"mcpServers": {"x": {"command": "npx"',
    ".vscode/settings.json": '{"mcp": {"servers": {}}} /* never closed',
    ".codex/config.toml": "[mcp_servers.x\ncommand = 'npx'",
    ".continue/config.yaml": "mcpServers: [a, b\n  - : :",
    ".mcp.json": "\x01\x02\xff\ufffd{{{{]]]]",
    ".gemini/settings.json": "[" * 5000,
    ".config/zed/settings.json": '{"context_servers": {"a": 1e999999999999999999999x}}',
    "claude_desktop_config.json": '{"mcpServers": {"a": {"command": "x"}}} trailing',
}


def test_malformed_configs_are_counted_and_the_scan_goes_on(tmp_path):
    for relative, text in MALFORMED.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    good = tmp_path / "ok" / ".cursor" / "mcp.json"
    good.parent.mkdir(parents=True)
    good.write_text('{"mcpServers": {"ok": {"command": "npx", "args": ["x"]}}}')
    warnings = Warnings()
    found = scan(tmp_path, McpConfigScanner(), warnings)
    assert [f.name for f in found] == ["ok"]
    assert warnings.counts["malformed"] == len(MALFORMED)
    for example in warnings.examples["malformed"]:
        assert "npx" not in example  # the reason, never the content


def test_malformed_code_is_counted(tmp_path):
    (tmp_path / "broken.py").write_text("from crewai import Agent\nagent = Agent(role='x'\n")
    (tmp_path / "broken.ts").write_text(
        'import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";\n'
        'const s = new McpServer({ name: "half" });\nconst t = `never closed ${s\n'
    )
    (tmp_path / "py2.py").write_text("import langchain\nprint 'hello'\n")
    (tmp_path / "unrelated.py").write_text("def (:\n")  # no framework: not even parsed
    warnings = Warnings()
    found = scan(tmp_path, AgentCodeScanner(), warnings)
    assert warnings.counts["malformed"] == 3
    assert [f.name for f in found] == ["half"]  # the TS file is still read


def test_jsonc_tolerates_comments_and_trailing_commas_but_not_in_strings():
    text = """// head
    {
      "url": "https://example.com//not-a-comment/*nor-this*/", // tail
      /* block
         comment */
      "list": [1, 2.5, -3e2, true, false, null,],
      "nested": {"a": "b",},
    }
    """
    value, lines = parse_jsonc(text)
    assert value == {
        "url": "https://example.com//not-a-comment/*nor-this*/",
        "list": [1, 2.5, -300.0, True, False, None],
        "nested": {"a": "b"},
    }
    assert lines[("url",)] == 3
    assert lines[("list",)] == 6
    assert lines[("list", 1)] == 6
    for bad in ('{"a": 1,,}', '{"a" 1}', "{'a': 1}", "[1 2]", '{"a": 1} {}', "/* open"):
        with pytest.raises(ValueError):
            parse_jsonc(bad)


CONFIG_NAMES = [
    ".cursor/mcp.json",
    ".vscode/mcp.json",
    ".vscode/settings.json",
    ".mcp.json",
    ".claude.json",
    "claude_desktop_config.json",
    ".codex/config.toml",
    ".continue/config.yaml",
    ".continue/config.json",
    ".gemini/settings.json",
    ".config/zed/settings.json",
    ".codeium/windsurf/mcp_config.json",
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(CONFIG_NAMES), text=st.text(max_size=400))
def test_random_text_as_a_config_never_raises(tmp_path_factory, name, text):
    root = tmp_path_factory.getbasetemp()
    warnings = Warnings()
    scanner = McpConfigScanner()
    file = source(root, name, text, warnings)
    assert scanner.wants(file.path)
    for finding in scanner.scan(file):
        json.dumps(finding.to_dict())


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=25,
)
_SERVER = st.fixed_dictionaries(
    {},
    optional={
        "command": _JSONISH | st.sampled_from(["npx", "docker", "uvx mcp-server-fetch"]),
        "args": st.lists(
            st.text(max_size=40)
            | st.sampled_from(
                ["-v", "--mount", "--api-key", "postgresql://u:p4ssw0rdXYZ@h/db", "-e", "A=B"]
            ),
            max_size=6,
        )
        | _JSONISH,
        "env": st.dictionaries(st.text(max_size=20), st.text(max_size=40) | _JSONISH, max_size=4),
        "url": st.text(max_size=60) | st.sampled_from(["http://[::1", "https://u:p@h:99999/x"]),
        "headers": _JSONISH,
        "type": _JSONISH,
        "transport": _JSONISH,
        "settings": _JSONISH,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(CONFIG_NAMES),
    servers=st.dictionaries(st.text(max_size=15), _SERVER, max_size=3)
    | st.lists(_SERVER, max_size=3),
)
def test_random_server_entries_never_raise(tmp_path_factory, name, servers):
    root = tmp_path_factory.getbasetemp()
    if name.endswith(".toml"):
        body = {"mcp_servers": servers if isinstance(servers, dict) else {}}
        text = json.dumps(body)  # not TOML: a counted warning, never an error
    else:
        text = json.dumps({"mcpServers": servers, "servers": servers, "context_servers": servers})
    warnings = Warnings()
    for finding in McpConfigScanner().scan(source(root, name, text, warnings)):
        json.dumps(finding.to_dict())
        assert finding.detail["transport"] in ("stdio", "http", "sse")


_CODE_ALPHABET = st.sampled_from(
    [
        *"()[]{}<>'\"`/\\*=:;,.$ \n\t@#!?+-",
        *("import ", "from ", "require(", "new ", "Agent", "McpServer", "langchain", "crewai"),
        *('"@modelcontextprotocol/sdk/server/mcp.js"', "@openai/agents", "${", "//", "/*", "*/"),
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    suffix=st.sampled_from([".py", ".ts", ".tsx", ".js", ".mjs", ".cjs"]),
    text=st.lists(_CODE_ALPHABET, max_size=120).map("".join) | st.text(max_size=300),
)
def test_random_text_as_code_never_raises(tmp_path_factory, suffix, text):
    root = tmp_path_factory.getbasetemp()
    warnings = Warnings()
    for finding in AgentCodeScanner().scan(source(root, "x" + suffix, text, warnings)):
        json.dumps(finding.to_dict())


def test_hostile_python_nesting_is_a_warning(tmp_path):
    warnings = Warnings()
    text = "import crewai\nx = " + "(" * 10000 + ")" * 10000 + "\ny = a" + ".b" * 20000
    assert list(AgentCodeScanner().scan(source(tmp_path, "deep.py", text, warnings))) == []
    assert warnings.counts["malformed"] == 1


# --------------------------------------------------------------------------------------
# Which files


@pytest.mark.parametrize(
    ("relative", "wanted"),
    [
        (".cursor/mcp.json", True),
        ("project/.vscode/settings.json", True),
        ("AppData/Roaming/Code/User/settings.json", True),
        ("Library/Application Support/Code - Insiders/User/mcp.json", True),
        (".gemini/settings.json", True),
        (".config/zed/settings.json", True),
        (".codex/config.toml", True),
        (".continue/config.yaml", True),
        (".continue/mcpServers/db.yaml", True),
        (".codeium/windsurf/mcp_config.json", True),
        ("settings.json", False),
        ("app/settings.json", False),
        ("config.toml", False),
        ("pyproject.toml", False),
        ("package.json", False),
        ("tsconfig.json", False),
        ("mcp_config.json", False),
        ("config.yaml", False),
    ],
)
def test_wants_only_client_configurations(tmp_path, relative, wanted):
    assert McpConfigScanner().wants(tmp_path / relative) is wanted


@pytest.mark.parametrize(
    ("name", "wanted"),
    [
        ("a.py", True),
        ("a.ts", True),
        ("a.tsx", True),
        ("a.mjs", True),
        ("a.cjs", True),
        ("a.js", True),
        ("a.d.ts", False),
        ("a.min.js", False),
        ("a.json", False),
        ("README.md", False),
    ],
)
def test_agent_code_wants_sources(tmp_path, name, wanted):
    assert AgentCodeScanner().wants(tmp_path / name) is wanted


def test_user_locations_on_a_fake_home(tmp_path):
    home = tmp_path / "home"
    cursor = home / ".cursor" / "mcp.json"
    desktop = home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    codex = home / ".codex" / "config.toml"
    windows = home / "AppData" / "Roaming" / "Code" / "User" / "mcp.json"
    for path in (cursor, desktop, codex, windows):
        path.parent.mkdir(parents=True, exist_ok=True)
    cursor.write_text('{"mcpServers": {"a": {"command": "npx", "args": ["x"]}}}')
    desktop.write_text('{"mcpServers": {"b": {"url": "https://mcp.example.org/sse"}}}')
    codex.write_text('[mcp_servers.c]\ncommand = "uvx"\nargs = ["mcp-server-fetch"]\n')
    windows.write_text('{"servers": {"d": {"type": "http", "url": "https://d.example.org/mcp"}}}')
    (home / ".unrelated.json").write_text("{}")

    found = user_locations(home)
    assert sorted(found) == sorted([cursor, desktop, codex, windows])
    every = user_locations(home, existing_only=False)
    assert set(found) < set(every)
    assert home / ".claude.json" in every
    assert home / ".config" / "zed" / "settings.json" in every
    assert home / "AppData" / "Roaming" / "Claude" / "claude_desktop_config.json" in every

    warnings = Warnings()
    findings = []
    scanner = McpConfigScanner()
    for file in walk(found, warnings):
        if scanner.wants(file.path):
            findings.extend(scanner.scan(file))
    assert sorted((f.name, f.detail["client"], f.detail["transport"]) for f in findings) == [
        ("a", "cursor", "stdio"),
        ("b", "claude-desktop", "sse"),
        ("c", "codex", "stdio"),
        ("d", "vscode", "http"),
    ]
    assert not warnings.counts


# --------------------------------------------------------------------------------------
# More MCP rules


def _one(tmp_path: Path, relative: str, config: dict) -> Finding:
    warnings = Warnings()
    file = source(tmp_path, relative, json.dumps(config), warnings)
    found = list(McpConfigScanner().scan(file))
    assert not warnings.counts
    assert len(found) == 1
    return found[0]


def test_placeholders_and_non_secrets_are_not_credentials(tmp_path):
    env = {
        "API_KEY": "<your-api-key>",
        "OPENAI_API_KEY": "sk-...",
        "GITHUB_TOKEN": "ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "SECRET": "your_secret_here",
        "PASSWORD": "changeme",
        "TOKEN": "aaaaaaaaaaaaaaaaaaaa",
        "AUTH_TOKEN": "1234567890abcdef",
        "KEY_FILE": "/home/alice/.ssh/id_ed25519",
        "MAX_TOKENS": "4096",
        "DEBUG": "true",
        "AUTHOR": "Alice Example",
        "REGION": "eu-west-1aB9xQ",
        "EMPTY": "",
    }
    finding = _one(
        tmp_path, ".cursor/mcp.json", {"mcpServers": {"x": {"command": "npx", "env": env}}}
    )
    assert finding.credentials == ()
    assert finding.flags == ()


def test_reference_forms_are_references(tmp_path):
    env = {
        "A_TOKEN": "${A_TOKEN}",
        "B_TOKEN": "${env:B_TOKEN}",
        "C_TOKEN": "$C_TOKEN",
        "D_TOKEN": "%D_TOKEN%",
        "E_TOKEN": "${{ secrets.E_TOKEN }}",
        "F_TOKEN": "env:F_TOKEN",
        "HOME_DIR": "${HOME}",  # not a secret: not a credential
        "G_PASSWORD": "pa$$w0rd-Z9x8c7v6",  # a literal with a dollar in it
    }
    finding = _one(tmp_path, ".mcp.json", {"mcpServers": {"x": {"command": "npx", "env": env}}})
    got = {c.where: (c.type, c.plaintext) for c in finding.credentials}
    assert got == {
        **{f"env:{n}_TOKEN": ("env-reference", False) for n in "ABCDEF"},
        "env:G_PASSWORD": ("password", True),
    }
    assert finding.credentials[0].fingerprint == fingerprint("${A_TOKEN}")


def test_secrets_in_urls_and_arguments(tmp_path):
    config = {
        "mcpServers": {
            "remote": {
                "url": "https://bob:Zq8rT5nV2mX7@mcp.corp.example/sse?token=Hj4kL9pQ2wE7rT1y&x=1",
            },
            "runner": {
                "command": "docker",
                "args": [
                    "run",
                    "--privileged",
                    "-v",
                    "/var/run/docker.sock:/var/run/docker.sock",
                    "--mount",
                    "type=bind,src=/srv/data,dst=/data",
                    "-e",
                    "GITHUB_TOKEN",
                    "--token=Mn3bV6cX9zL2kJ5h",
                    "ghcr.io/github/github-mcp-server",
                ],
            },
            "fs": {
                "command": "npx",
                "args": ["-y", "@modelcontextprotocol/server-filesystem@2.0.0", "/", "~/notes"],
            },
            "proxy": {
                "command": "npx",
                "args": [
                    "mcp-remote",
                    "https://tools.corp.example/mcp",
                    "--header",
                    "Authorization: Bearer Tq3wE8rT1yU6iO9p",
                    "--header=X-Team-Token:${TEAM_TOKEN}",
                ],
            },
            "mongo": {
                "command": "uvx",
                "args": ["mongo-mcp"],
                "env": {"MONGO_URL": "mongodb+srv://root:Yt6rE3wQ9pL1@cluster0.mongo.example/shop"},
            },
        }
    }
    warnings = Warnings()
    file = source(tmp_path, ".cursor/mcp.json", json.dumps(config), warnings)
    found = {f.name: f for f in McpConfigScanner().scan(file)}
    remote = found["remote"]
    assert remote.detail["transport"] == "sse"
    assert remote.detail["url"] == "https://mcp.corp.example/sse?x=1"
    assert [(c.type, c.where) for c in remote.credentials] == [
        ("url-password", "url:password"),
        ("token", "url:query:token"),
    ]
    runner = found["runner"]
    assert "admin" in runner.flags
    assert set(runner.access) >= {"docker:host", "filesystem:/srv/data", "github:api"}
    assert [(c.type, c.where) for c in runner.credentials] == [("token", "arg:--token")]
    assert "--token=<secret:" + fingerprint("Mn3bV6cX9zL2kJ5h") + ">" in runner.detail["command"]
    fs = found["fs"]
    assert fs.access == ("filesystem:/", "filesystem:~/notes")
    assert fs.flags == ("wildcard",)
    proxy = found["proxy"]
    assert proxy.access == ("url:https://tools.corp.example",)
    assert [(c.type, c.where, c.plaintext) for c in proxy.credentials] == [
        ("token", "header:Authorization", True),
        ("env-reference", "header:X-Team-Token", False),
    ]
    assert (
        proxy.detail["command"][4] == f"Authorization: <secret:{fingerprint('Tq3wE8rT1yU6iO9p')}>"
    )
    mongo = found["mongo"]
    assert mongo.access == ("database:mongodb+srv://cluster0.mongo.example/shop",)
    assert [(c.type, c.where) for c in mongo.credentials] == [
        ("database-password", "env:MONGO_URL:password")
    ]
    assert "admin" in mongo.flags
    dumped = json.dumps([f.to_dict() for f in found.values()])
    planted = (
        "Zq8rT5nV2mX7",
        "Hj4kL9pQ2wE7rT1y",
        "Mn3bV6cX9zL2kJ5h",
        "Yt6rE3wQ9pL1",
        "Tq3wE8rT1yU6iO9p",
    )
    for secret in planted:
        assert secret not in dumped


def test_disabled_and_zed_legacy_command(tmp_path):
    config = {
        "context_servers": {
            "old": {"command": {"path": "/usr/bin/node", "args": ["srv.js"], "env": {}}},
        }
    }
    finding = _one(tmp_path, ".config/zed/settings.json", config)
    assert finding.detail["command"] == ["/usr/bin/node", "srv.js"]
    config = {"mcpServers": {"off": {"command": "npx", "args": ["a"], "disabled": True}}}
    assert _one(tmp_path, ".roo/mcp.json", config).detail == {
        "client": "roo-code",
        "transport": "stdio",
        "command": ["npx", "a"],
        "url": None,
        "disabled": True,
    }


# --------------------------------------------------------------------------------------
# Agent code


CODE_CASES = [
    # (path, name, line, language, frameworks, builds, tools, models, access)
    (
        "py/crew_research.py",
        "Senior Researcher",
        16,
        "python",
        ["crewai"],
        ["agent"],
        ["Web search", "SerperDevTool"],
        ["gpt-4o"],
        ["llm:openai"],
    ),
    (
        "py/lc_agent.py",
        "lc_agent",
        17,
        "python",
        ["langchain"],
        ["agent"],
        ["get_weather"],
        ["gpt-4o-mini"],
        ["llm:openai"],
    ),
    (
        "py/graph_agent.py",
        "support-bot",
        13,
        "python",
        ["langchain", "langgraph"],
        ["agent"],
        ["lookup"],
        ["claude-sonnet-4-5"],
        ["llm:anthropic"],
    ),
    (
        "py/autogen_team.py",
        "planner",
        14,
        "python",
        ["autogen"],
        ["agent"],
        ["get_time"],
        ["gpt-4o"],
        ["llm:openai"],
    ),
    (
        "py/openai_agent.py",
        "Triage agent",
        9,
        "python",
        ["openai-agents"],
        ["agent"],
        ["lookup_order"],
        ["gpt-4.1"],
        ["llm:openai"],
    ),
    (
        "py/llama_agent.py",
        "calculator",
        11,
        "python",
        ["llamaindex"],
        ["agent"],
        ["multiply"],
        ["claude-3-5-sonnet-latest"],
        ["llm:anthropic"],
    ),
    (
        "py/sk_agent.py",
        "Host",
        12,
        "python",
        ["semantic-kernel"],
        ["agent"],
        ["get_specials"],
        [],
        ["llm:azure-openai"],
    ),
    (
        "py/fastmcp_server.py",
        "weather",
        5,
        "python",
        ["mcp"],
        ["mcp-server"],
        ["get_forecast", "alerts"],
        [],
        [],
    ),
    (
        "py/mcpserver_v2.py",
        "notes",
        3,
        "python",
        ["mcp"],
        ["mcp-server"],
        ["add_note"],
        [],
        [],
    ),
    (
        "py/lowlevel_server.py",
        "files-server",
        6,
        "python",
        ["mcp"],
        ["mcp-server"],
        ["read_file", "run_command"],
        [],
        ["shell"],
    ),
    (
        "ts/weather-server.ts",
        "weather-ts",
        6,
        "typescript",
        ["mcp"],
        ["mcp-server"],
        ["get-alerts", "get-forecast"],
        [],
        [],
    ),
    (
        "ts/langgraph-agent.ts",
        "researcher-ts",
        12,
        "typescript",
        ["langchain", "langgraph"],
        ["agent"],
        ["search"],
        ["gpt-4o"],
        ["llm:openai"],
    ),
    (
        "js/openai-agent.mjs",
        "Weather bot",
        11,
        "javascript",
        ["openai-agents"],
        ["agent"],
        ["get_weather"],
        ["gpt-4.1-mini"],
        ["llm:openai"],
    ),
    (
        "js/legacy-server.cjs",
        "legacy-js",
        5,
        "javascript",
        ["mcp"],
        ["mcp-server"],
        [],
        [],
        ["shell"],
    ),
]


@pytest.mark.parametrize(
    ("path", "name", "line", "language", "frameworks", "builds", "tools", "models", "access"),
    CODE_CASES,
    ids=[c[0] for c in CODE_CASES],
)
def test_agent_code_per_framework(
    code_findings, path, name, line, language, frameworks, builds, tools, models, access
):
    (finding,) = [f for f in code_findings if f.path == path]
    assert finding.kind == "agent-code"
    assert finding.scanner == "agent-code"
    assert finding.name == name
    assert finding.line == line
    assert finding.detail["language"] == language
    assert finding.detail["frameworks"] == frameworks
    assert finding.detail["builds"] == builds
    assert finding.detail["tools"] == tools
    assert finding.detail["models"] == models
    assert list(finding.access) == access
    assert finding.credentials == ()


def test_lookalike_code_is_not_reported(code_findings):
    reported = {f.path for f in code_findings}
    for path in (
        "py/not_agent.py",
        "py/only_tools.py",
        "js/lookalike.js",
        "ts/client-only.ts",
        "README.md",
    ):
        assert path not in reported
        assert (CODE / path).exists()


def _code(tmp_path: Path, name: str, text: str) -> list[Finding]:
    warnings = Warnings()
    found = list(AgentCodeScanner().scan(source(tmp_path, name, text, warnings)))
    assert not warnings.counts, warnings.to_dict()
    return found


def test_python_import_forms(tmp_path):
    (aliased,) = _code(
        tmp_path,
        "a.py",
        "import crewai as c\n\nagent = c.Agent(role='Writer', llm='anthropic/claude-3-haiku')\n",
    )
    assert (aliased.name, aliased.line, aliased.access) == ("Writer", 3, ("llm:anthropic",))
    (star,) = _code(tmp_path, "b.py", "from smolagents import *\n\nagent = CodeAgent(tools=[])\n")
    assert (star.name, star.detail["frameworks"]) == ("b", ["smolagents"])
    (factory,) = _code(
        tmp_path,
        "c.py",
        "from llama_index.core.agent import ReActAgent\n"
        "from llama_index.llms.openai import OpenAI\n"
        "agent = ReActAgent.from_tools([], llm=OpenAI(model='gpt-4o'))\n",
    )
    assert (factory.name, factory.line, factory.access) == ("c", 3, ("llm:openai",))
    (pydantic,) = _code(
        tmp_path, "d.py", "from pydantic_ai import Agent\nagent = Agent('openai:gpt-4o')\n"
    )
    assert pydantic.detail["models"] == ["openai:gpt-4o"]
    assert pydantic.access == ("llm:openai",)
    (fastmcp,) = _code(
        tmp_path, "e.py", "from fastmcp import FastMCP\n\nmcp = FastMCP(name='standalone')\n"
    )
    assert fastmcp.name == "standalone"
    # a name that merely matches is not a framework's
    assert _code(tmp_path, "f.py", "from mylib import Agent\nAgent(name='x')\n") == []
    assert _code(tmp_path, "g.py", "import agents\nagents.helper(name='x')\n") == []


def test_js_import_forms(tmp_path):
    (namespace,) = _code(
        tmp_path,
        "a.ts",
        'import * as oa from "@openai/agents";\n\n'
        'export const a = new oa.Agent({ name: "ns-agent", model: "o4-mini" });\n',
    )
    assert (namespace.name, namespace.line, namespace.access) == ("ns-agent", 3, ("llm:openai",))
    (required,) = _code(
        tmp_path,
        "b.cjs",
        'const { McpServer: Srv } = require("@modelcontextprotocol/sdk/server/mcp.js");\n'
        "const s = new Srv({ name: `tmpl-name`, version: '1' });\n"
        's.tool("echo", async () => ({}));\n',
    )
    assert (required.name, required.detail["tools"]) == ("tmpl-name", ["echo"])
    (mastra,) = _code(
        tmp_path,
        "c.ts",
        'import { Agent } from "@mastra/core/agent";\nimport { anthropic } from "@ai-sdk/anthropic";\n'
        'const a = new Agent({ name: "m", instructions: "i", model: anthropic("claude-3-7-sonnet") });\n',
    )
    assert mastra.detail["models"] == ["claude-3-7-sonnet"]
    assert mastra.access == ("llm:anthropic",)
    (graph,) = _code(
        tmp_path,
        "d.ts",
        'import { StateGraph } from "@langchain/langgraph";\n'
        "const g = new StateGraph<State>(Annotation).addNode('a', fn);\n",
    )
    assert (graph.name, graph.line) == ("d", 2)


def test_agent_code_never_reports_secrets(tmp_path):
    secret = "sk-proj-Qw8eR4tY7uI1oP3aS6dF9gH2jK5lZ0xC4vB7nM1qW3eR6tY9"
    (finding,) = _code(
        tmp_path,
        "agent.py",
        "from langchain_openai import ChatOpenAI\nfrom langgraph.prebuilt import create_react_agent\n"
        f"llm = ChatOpenAI(model='gpt-4o', api_key='{secret}')\n"
        "agent = create_react_agent(llm, tools=[])\n",
    )
    assert finding.credentials == ()
    assert secret not in json.dumps(finding.to_dict())


_PLACES = {
    "env": lambda s: {"command": "npx", "env": {"SOME_TOKEN": s}},
    "env-prefix-only": lambda s: {"command": "npx", "env": {"VALUE": s}},
    "header": lambda s: {
        "url": "https://h.example.org/mcp",
        "headers": {"Authorization": f"Bearer {s}"},
    },
    "arg": lambda s: {"command": "npx", "args": ["srv", s]},
    "flag": lambda s: {"command": "npx", "args": ["srv", "--token", s]},
    "flag=": lambda s: {"command": "npx", "args": ["srv", f"--api-key={s}"]},
    "assignment": lambda s: {"command": "docker", "args": ["run", "-e", f"GH_TOKEN={s}", "img"]},
    "header-arg": lambda s: {"command": "npx", "args": ["mcp-remote", "--header", f"X-Key: {s}"]},
    "query": lambda s: {"url": f"https://h.example.org/mcp?api_key={s}&a=b"},
    "userinfo": lambda s: {"url": f"https://user:{s}@h.example.org/sse"},
    "path": lambda s: {"url": f"https://h.example.org/{s}/sse"},
    "arg-url": lambda s: {"command": "npx", "args": [f"postgres://u:{s}@db/x"]},
    "env-url": lambda s: {"command": "npx", "env": {"DATABASE_URL": f"mysql://u:{s}@db/x"}},
    "bad-url": lambda s: {"url": f"https://u:{s}@[::1/sse"},
    "setting": lambda s: {"source": "extension", "settings": {"api_token": s}},
}


@settings(max_examples=200, deadline=None)
@given(
    place=st.sampled_from(sorted(_PLACES)),
    body=st.text(
        alphabet="ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789",
        min_size=36,
        max_size=36,
    ).filter(lambda t: any(c.isdigit() for c in t) and any(c.isupper() for c in t)),
)
def test_a_planted_secret_anywhere_is_found_and_never_shown(tmp_path_factory, place, body):
    secret = "ghp_" + body
    config = {"context_servers": {"s": _PLACES[place](secret)}}
    warnings = Warnings()
    file = source(
        tmp_path_factory.getbasetemp(), ".zed/settings.json", json.dumps(config), warnings
    )
    (finding,) = McpConfigScanner().scan(file)
    assert secret not in json.dumps(finding.to_dict())
    assert body not in json.dumps(finding.to_dict())
    assert fingerprint(secret) in {c.fingerprint for c in finding.credentials if c.plaintext}
    assert {"plaintext-secret", "static-key"} <= set(finding.flags)
