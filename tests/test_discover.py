"""Discovery end to end: the realistic fixture tree (``tests/fixtures/discover/``, every
area with its ``EXPECTED.json``), scanned by every scanner through the CLI; findings
reconciled with the registry (shadow, ``--import``, registered, stale), served at
``/v1/discovery/findings``, printed as a table, JSON and SARIF 2.1.0 — with no planted
secret anywhere; and the walker against hostile trees."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, initialised
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.discover.interface import Warnings
from tether.discover.scan import run_scan
from tether.discover.walk import walk

FIXTURES = Path(__file__).parent / "fixtures" / "discover"


def _expected() -> tuple[list[dict[str, Any]], list[str], list[str]]:
    findings: list[dict[str, Any]] = []
    secrets: list[str] = []
    lookalikes: list[str] = []
    for path in sorted(FIXTURES.glob("*/EXPECTED.json")):
        area = json.loads(path.read_text(encoding="utf-8"))
        prefix = path.parent.name
        findings += [{**f, "path": f"{prefix}/{f['path']}"} for f in area["findings"]]
        secrets += area.get("secrets", [])
        lookalikes += area.get("lookalikes", [])
    return findings, secrets, lookalikes


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the fixture tree (so a test may change it), without the EXPECTED files."""
    root = tmp_path / "estate"
    shutil.copytree(FIXTURES, root, symlinks=True)
    for expected in root.glob("*/EXPECTED.json"):
        expected.unlink()
    return root


def _key(f: dict[str, Any]) -> tuple[str, str, str, str]:
    return (f["kind"], f["name"], f["path"], f["scanner"])


@pytest.mark.slow
def test_every_planted_agent_and_credential_is_found_and_nothing_else(tree: Path) -> None:
    expected, secrets, lookalikes = _expected()
    assert expected and secrets and lookalikes  # the fixture tree plants something
    result = run_scan([tree])
    found = {_key(f.to_dict()) for f in result.findings}
    assert found == {_key(f) for f in expected}
    dumped = json.dumps(result.to_dict())
    for secret in secrets:
        assert secret not in dumped
    for fake in lookalikes:  # placeholders are never taken for credentials
        for finding in result.findings:
            for credential in finding.credentials:
                assert credential.where != fake and fake not in json.dumps(credential.to_dict())


@pytest.mark.slow
def test_the_cli_imports_shadows_rescans_idempotently_and_sees_stale_agents(
    tree: Path, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = initialised(Cli(capsys))
    expected, secrets, _ = _expected()
    agents_expected = [f for f in expected if f["kind"] != "credential"]

    first = cli.json("discover", "scan", str(tree))
    assert first["counts"]["shadow"] == len(expected) and first["imported"] == []
    assert all("no-owner" in f["flags"] for f in first["findings"])
    assert cli.json("agent", "list", "--unowned")["agents"] == []  # nothing imported yet

    imported = cli.json("discover", "scan", str(tree), "--import")
    assert len(imported["imported"]) == len(agents_expected)
    unowned = cli.json("agent", "list", "--unowned")["agents"]
    assert sorted(a["name"] for a in unowned) == sorted(imported["imported"])
    assert {a["state"] for a in unowned} == {"suspended"}
    assert all(a["labels"]["discovery.finding"].startswith("f-") for a in unowned)

    again = cli.json("discover", "scan", str(tree), "--import")
    assert again["imported"] == []  # no duplicates
    assert again["counts"]["registered"] == len(agents_expected)
    assert len(cli.json("agent", "list")["agents"]) == len(agents_expected)
    ids = {f["id"] for f in first["findings"]}
    assert {f["id"] for f in again["findings"]} == ids  # stable IDs

    # a planted MCP configuration disappears: its agents go stale
    mcp = next(f for f in agents_expected if f["kind"] == "mcp-server")
    gone = tree / mcp["path"]
    lost = {f["id"] for f in again["findings"] if f["location"] == str(gone.resolve())}
    gone.unlink()
    after = cli.json("discover", "scan", str(tree))
    stale = {f["id"] for f in after["findings"] if f["status"] == "stale"}
    assert stale == lost and set(after["stale"]) == lost
    listed = cli.json("discover", "findings", "--status", "stale")["findings"]
    assert {f["id"] for f in listed} == lost

    # every output format, the audit log and the store hold no planted secret
    table = cli("discover", "scan", str(tree))
    sarif = cli("discover", "scan", str(tree), "--format", "sarif")
    exported = cli("audit", "export", "--format", "jsonl")
    stored = cli.json("discover", "findings")  # what the store holds, through the API
    assert len(stored["findings"]) == len(after["findings"])
    everything = json.dumps([first, imported, again, after, listed, stored]) + table[1]
    everything += table[2]
    everything += sarif[1] + exported[1]
    for secret in secrets:
        assert secret not in everything
    _check_sarif(json.loads(sarif[1]), len(after["findings"]))


def _check_sarif(doc: dict[str, Any], n: int) -> None:
    """The SARIF 2.1.0 shape code-scanning tools rely on."""
    assert doc["version"] == "2.1.0" and doc["$schema"].endswith("sarif-2.1.0.json")
    [run] = doc["runs"]
    rules = run["tool"]["driver"]["rules"]
    assert run["tool"]["driver"]["name"] and all(r["id"] for r in rules)
    assert len(run["results"]) == n
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in ("error", "warning", "note")
        assert result["message"]["text"]
        physical = result["locations"][0]["physicalLocation"]
        assert not physical["artifactLocation"]["uri"].startswith("/")
        if "region" in physical:
            assert physical["region"]["startLine"] >= 1
        assert result["partialFingerprints"]["tetherFindingId/v1"].startswith("f-")


def test_hostile_trees_are_counted_and_skipped_never_followed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "scan"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / ".env").write_text("OPENAI_API_KEY=sk-proj-" + "Q" * 20 + "abcdEFGHijklMNOP1234\n")
    (root / "loop").symlink_to(root, target_is_directory=True)  # a loop
    (root / "a").mkdir()
    (root / "a" / "b").symlink_to(root / "a", target_is_directory=True)  # another
    (root / "escape").symlink_to(outside, target_is_directory=True)  # out of the root
    (root / "escape.env").symlink_to(outside / ".env")
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    (root / "big.json").write_bytes(b"{" + b" " * (3 * 1024 * 1024) + b"}")
    (root / "blob.yaml").write_bytes(b"apiVersion: v1\x00\x01\x02" * 100)
    (root / ".mcp.json").write_text('{"mcpServers": {"broken": {"command": ')  # malformed
    (root / "bad.yaml").write_text("apiVersion: v1\nkind: Pod\nmetadata: [unclosed\n")
    (root / "locked.json").write_text("{}")
    os.mkfifo(root / "pipe")
    real_open = Path.open

    def open_(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "locked.json":  # the tests run as root: deny it this way
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_)
    result = run_scan([root])
    counts = result.warnings.counts
    assert counts["symlink-loop"] >= 2 and counts["outside-root"] == 2
    assert counts["too-large"] == 1 and counts["binary"] == 1 and counts["unreadable"] >= 1
    assert counts["malformed"] >= 2
    assert all("outside" not in f.path and "escape" not in f.path for f in result.findings)
    assert "sk-proj" not in json.dumps(result.to_dict())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(
        st.sampled_from(
            [".mcp.json", "settings.json", "config.toml", "deploy.yaml", "agent.py",
             "server.ts", ".env", "ci.yml", "iam.json", "claude_desktop_config.json"]
        ),
        min_size=1, max_size=6, unique=True,
    ),
    blobs=st.lists(st.binary(max_size=400) | st.text(max_size=400), min_size=6, max_size=6),
)  # fmt: skip
def test_random_bytes_in_any_scanned_file_never_end_a_scan(
    tmp_path_factory: pytest.TempPathFactory, names: list[str], blobs: list[Any]
) -> None:
    root = tmp_path_factory.mktemp("random")
    (root / ".github" / "workflows").mkdir(parents=True)
    for name, blob in zip(names, blobs, strict=False):
        target = root / (".github/workflows/" + name if name == "ci.yml" else name)
        data = blob if isinstance(blob, bytes) else blob.encode("utf-8", "surrogatepass")
        target.write_bytes(data)
    result = run_scan([root])  # never raises
    assert result.files_seen + result.warnings.counts["binary"] == len(names)
    assert "scanner-error" not in result.warnings.counts, result.warnings.to_dict()


def test_the_walker_reads_each_file_once_and_only_under_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "one.py").write_text("x = 1\n")
    (root / "again.py").symlink_to(root / "sub" / "one.py")
    os.link(root / "sub" / "one.py", root / "hard.py")
    warnings = Warnings()
    files = list(walk([root, root / "sub"], warnings))
    assert len(files) == 1


def test_the_api_is_for_admins_and_refuses_malformed_scans_changing_nothing(
    make_settings: Any, tmp_path: Path
) -> None:
    from conftest import served
    from test_audit_log import _person

    with served(make_settings, tmp_path, "https://idp.example.com") as up:
        alice = _person(up.idp_key, "alice@example.com")
        assert up.client.get("/v1/discovery/findings", headers=alice).status_code == 403
        body = {"roots": ["/srv"], "findings": []}
        assert up.client.post("/v1/discovery/scans", json=body, headers=alice).status_code == 403
        refused = up.tether.events.list(type="access.refused")
        assert [e.actor for e in refused] == ["user:alice@example.com"] * 2
        for bad in (
            {"roots": ["/srv"], "findings": [{"id": "nope"}]},
            {"roots": ["/srv"], "findings": [{"id": "f-0123456789abcdef", "kind": "x"}]},
            {"roots": ["/srv"], "findings": ["text"]},
            {"roots": "/srv", "findings": []},
            {"roots": ["/srv"], "findings": [], "extra": 1},
        ):
            answer = up.client.post("/v1/discovery/scans", json=bad, headers=up.admin)
            assert answer.status_code in (400, 422), (bad, answer.text)
            assert "Traceback" not in answer.text
        assert up.client.get("/v1/discovery/findings", headers=up.admin).json() == {"findings": []}
        assert up.tether.events.list(type="discovery.scanned") == []
