"""Issue 17, item 6: secrets in results are redacted before the agent sees them.

Through the gateway with real upstreams: the reference filesystem server (npm) reading a
file full of keys, and the Python test server echoing values and leaking its injected
credential. Each secret reaches the agent as ``[redacted:<type>:<fingerprint>]``, the
fingerprint being the one ``tether discover scan`` reports for the same key; the audit
log holds types and fingerprints, never a value; with ``[guard] scan_results = false`` the
values pass; a scan that fails withholds the result. A property test plants secrets
anywhere in a JSON value: scrubbing never raises and never leaves one behind.
"""

from __future__ import annotations

import json
import re
import secrets
import shlex
import string
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import spec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from test_gateway_http import BASE, SERVER, _connect, _served, _text
from test_gateway_thirdparty import fs_server  # noqa: F401  (a fixture)

from tether.callers import Caller
from tether.config import GuardSettings
from tether.core import Tether
from tether.discover.interface import fingerprint, fingerprint_key
from tether.discover.key import home_key
from tether.discover.scan import run_scan
from tether.gateway import scrub
from tether.grants import GrantSpec
from tether.redact import Redactor
from tether.upstreams.servers import UpstreamSpec

ADMIN = Caller.admin()
MARK = re.compile(r"\[redacted:([a-z0-9-]+):([0-9a-f]{12})\]")


def _random(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def _pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _openssh() -> str:
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )


# One of each kind the brief names, made fresh for this run (none is a placeholder).
KEYS = {
    "anthropic-api-key": "sk-ant-api03-"
    + _random(93, string.ascii_letters + string.digits + "_-")
    + "AA",
    "openai-api-key": "sk-proj-" + _random(60),
    "aws-access-key": "AKIA" + _random(16, string.ascii_uppercase + string.digits),
    "github-token": "ghp_" + _random(36),
    "private-key": _pem(),
}
PEM_BODY = "".join(KEYS["private-key"].strip().splitlines()[1:-1])


def _values(text: str) -> list[str]:
    """The planted values (and the PEM's body lines) that ``text`` still holds."""
    found = [v for k, v in KEYS.items() if k != "private-key" and v in text]
    body_lines = KEYS["private-key"].strip().splitlines()[1:-1]
    return found + [line for line in body_lines if line in text]


@asynccontextmanager
async def _client(transport: Any, token: str, server: str) -> AsyncIterator[Client]:
    """The official SDK client on ``/mcp/SERVER`` of the served app, with ``token``."""
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(transport=transport, base_url=BASE, headers=headers) as http,
        Client(streamable_http_client(f"{BASE}/mcp/{server}", http_client=http)) as c,
    ):
        yield c


def _token(tether: Tether, server: str, agent: str = "helper") -> str:
    got = tether.registry.get(ADMIN, agent)
    resource = f"{tether.settings.issuer}/mcp/{server}"
    return tether.tokens.client_credentials(got, resource, None, None).access_token


def _bodies(tether: Tether) -> str:
    tether.events.flush()
    return "\n".join(row[-1] for row in tether.events.bodies(after=0))


def _results(tether: Tether) -> list[dict[str, Any]]:
    tether.events.flush()
    return [e.detail for e in tether.events.list(type="tool.result")]


# ---- the reference filesystem server: a file of keys, read through the gateway -------


@pytest.mark.slow
def test_a_file_of_keys_reaches_the_agent_redacted_with_discoverys_fingerprints(
    tether: Tether,
    fs_server: list[str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root = (tmp_path / "files").resolve()
    root.mkdir()
    lines = [f"{kind.upper().replace('-', '_')}={value}" for kind, value in KEYS.items()]
    (root / "leak.env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tether.upstreams.add(ADMIN, UpstreamSpec("fs", command=shlex.join([*fs_server, str(root)])))
    tether.registry.register(ADMIN, spec("helper"))
    tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", "fs/read_text_file"))
    token = _token(tether, "fs")

    async def work(transport: Any) -> tuple[bool, str]:
        async with _client(transport, token, "fs") as c:
            said = await c.call_tool("read_text_file", {"path": str(root / "leak.env")})
            return said.is_error, _text(said)

    failed, text = anyio.run(_served, tether, work)
    assert not failed, text
    assert _values(text) == [], text
    marks = {(kind, print_) for kind, print_ in MARK.findall(text)}
    assert {kind for kind, _ in marks} == set(KEYS), text
    # the same fingerprints discovery reports for the same file, under the same key
    scanned = run_scan([root], key=home_key(tether.settings.home))
    found = {(c.type, c.fingerprint) for f in scanned.findings for c in f.credentials}
    assert marks <= found, (marks, found)
    [result] = _results(tether)
    assert result["outcome"] == "ok"
    # each key twice: the server sends the text as content and as structuredContent
    assert result["redacted"]["types"] == dict.fromkeys(sorted(KEYS), 2)
    assert {(s["type"], s["fingerprint"]) for s in result["redacted"]["secrets"]} == marks
    recorded = _bodies(tether)
    assert _values(recorded) == [] and PEM_BODY not in recorded


# ---- the Python test server: echoed values, prompts, the injected credential ---------


def _echo_upstream(tether: Tether, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Upstream ``test`` with an injected credential ``API_SECRET``; agent ``helper``
    granted echo, env_value and the summarise prompt: its token, and the credential."""
    value = f"injected-{secrets.token_hex(16)}"
    monkeypatch.setenv("TETHER_TEST_SCRUB_SECRET", value)
    tether.upstreams.add(
        ADMIN,
        UpstreamSpec(
            "test",
            command=f"{sys.executable} {SERVER}",
            credentials=["API_SECRET=env:TETHER_TEST_SCRUB_SECRET"],
        ),
    )
    tether.registry.register(ADMIN, spec("helper"))
    for tool in ("echo", "env_value"):
        tether.grants.add(ADMIN, GrantSpec("helper", "tools/call", f"test/{tool}"))
    tether.grants.add(ADMIN, GrantSpec("helper", "prompts/get", "test/summarise"))
    return _token(tether, "test"), value


@pytest.fixture
def echo_org(tether: Tether, monkeypatch: pytest.MonkeyPatch) -> tuple[Tether, str, str]:
    return (tether, *_echo_upstream(tether, monkeypatch))


async def _echo_session(transport: Any, token: str) -> dict[str, str]:
    async with _connect(transport, token) as c:
        echoed = await c.call_tool("echo", {"text": "keys: " + " ".join(KEYS.values())})
        injected = await c.call_tool("env_value", {"name": "API_SECRET"})
        prompt = await c.get_prompt("summarise", {"topic": KEYS["openai-api-key"]})
        plain = await c.call_tool("echo", {"text": "nothing to see at /srv/reports/a.txt"})
    return {
        "echoed": _text(echoed),
        "injected": _text(injected),
        "prompt": json.dumps([m.model_dump(mode="json") for m in prompt.messages]),
        "plain": _text(plain),
    }


@pytest.mark.slow
def test_echoed_keys_prompts_and_the_injected_credential_reach_the_agent_redacted(
    echo_org: tuple[Tether, str, str],
) -> None:
    tether, token, value = echo_org
    said = anyio.run(_served, tether, lambda t: _echo_session(t, token))
    assert _values(said["echoed"]) == [] and _values(said["prompt"]) == []
    assert {k for k, _ in MARK.findall(said["echoed"])} == set(KEYS)
    assert [k for k, _ in MARK.findall(said["prompt"])] == ["openai-api-key"]
    print_ = scrub.fingerprinter(tether.settings.home)(value)
    assert said["injected"] == f"[redacted:injected-credential:{print_}]"
    assert said["plain"] == "nothing to see at /srv/reports/a.txt"
    results = _results(tether)
    # each twice: the server sends its answer as content and as structuredContent
    assert [r["redacted"]["count"] for r in results[:2]] == [2 * len(KEYS), 2]
    assert results[1]["redacted"]["secrets"] == [
        {
            "type": "injected-credential",
            "fingerprint": print_,
            "credential": "API_SECRET",
            "count": 2,
        }
    ]
    assert "redacted" not in results[-1]
    recorded = _bodies(tether)
    assert value not in recorded and _values(recorded) == [] and PEM_BODY not in recorded
    metrics = tether.metrics.render({})
    assert 'tether_gateway_redactions_total{type="injected-credential"} 2' in metrics
    assert 'tether_gateway_redactions_total{type="openai-api-key"} 3' in metrics


@pytest.mark.slow
def test_with_scanning_off_the_values_pass_but_the_injected_credential_never(
    make_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(guard=GuardSettings(scan_results=False))
    Tether.init(settings)[0].close()
    with Tether.open(settings) as tether:
        token, value = _echo_upstream(tether, monkeypatch)
        said = anyio.run(_served, tether, lambda t: _echo_session(t, token))
        assert said["echoed"] == "keys: " + " ".join(KEYS.values())
        assert value not in said["injected"]
        assert said["injected"].startswith("[redacted:injected-credential:")


@pytest.mark.slow
def test_a_result_that_cannot_be_checked_is_withheld(
    echo_org: tuple[Tether, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tether, token, _ = echo_org

    def broken(texts: Any, mark: Any) -> Any:
        raise RuntimeError("scanner broke")

    monkeypatch.setattr(scrub, "redact_texts", broken)

    async def work(transport: Any) -> tuple[bool, str, str]:
        async with _connect(transport, token) as c:
            said = await c.call_tool("echo", {"text": KEYS["github-token"]})
            try:
                await c.get_prompt("summarise", {"topic": "anything at all, long enough"})
            except Exception as exc:  # the SDK raises the MCP error
                prompt = str(exc)
            else:
                prompt = "shown"
            return said.is_error, _text(said), prompt

    failed, text, prompt = anyio.run(_served, tether, work)
    assert failed and "withheld" in text and "could not be checked" in text, text
    assert KEYS["github-token"] not in text
    assert "withheld" in prompt, prompt
    assert [r["outcome"] for r in _results(tether)] == ["withheld", "withheld"]
    assert "tether_gateway_results_withheld_total 2" in tether.metrics.render({})


# ---- the scrubber itself --------------------------------------------------------------


def test_a_key_inside_a_long_line_is_found_and_binary_data_is_left_alone(home: Path) -> None:
    key = KEYS["github-token"]
    line = ("lorem ipsum " * 800) + key + (" dolor sit" * 800)  # one line of ~17 KiB
    blob = {"type": "image", "mimeType": "image/png", "data": "ghp_" + "A" * 36}
    value = {"content": [{"type": "text", "text": line}, blob]}
    cleaned, found = scrub.scrub(value, home)
    assert key not in json.dumps(cleaned) and cleaned["content"][1] == blob
    assert [f.type for f in found] == ["github-token"]


def test_an_openssh_key_and_keys_in_dict_keys_are_redacted(home: Path) -> None:
    ssh = _openssh()
    value = {KEYS["aws-access-key"]: [1, None, True, {"k": f"```\n{ssh}```"}]}
    cleaned, found = scrub.scrub(value, home)
    dumped = json.dumps(cleaned)
    assert KEYS["aws-access-key"] not in dumped
    assert all(line not in dumped for line in ssh.strip().splitlines()[1:-1])
    assert sorted(f.type for f in found) == ["aws-access-key", "private-key"]


def test_keys_encoded_in_base64_are_redacted(home: Path) -> None:
    """Red team: a result carrying keys in base64 (a Kubernetes Secret's ``data``, either
    alphabet, padded or not) reached the agent as it was; each encoded key is taken out,
    with the fingerprint of the key it encodes."""
    import base64

    pem = KEYS["private-key"].encode()
    data = {
        "token": base64.b64encode(KEYS["github-token"].encode()).decode(),
        "ai": base64.urlsafe_b64encode(KEYS["anthropic-api-key"].encode()).decode().rstrip("="),
        "tls.key": base64.b64encode(pem).decode(),
        "plain": base64.b64encode(b"nothing secret in this sentence at all").decode(),
    }
    text = "kind: Secret\ndata:\n" + "".join(f"  {k}: {v}\n" for k, v in data.items())
    cleaned, found = scrub.scrub({"content": [{"type": "text", "text": text}]}, home)
    dumped = json.dumps(cleaned)
    assert data["token"] not in dumped and data["ai"] not in dumped
    assert data["tls.key"] not in dumped and data["plain"] in dumped
    assert sorted(f.type for f in found) == ["anthropic-api-key", "github-token", "private-key"]
    with fingerprint_key(home_key(home)):
        assert {f.fingerprint for f in found if f.type == "github-token"} == {
            fingerprint(KEYS["github-token"])
        }


def test_a_text_file_served_as_a_blob_is_scanned(home: Path) -> None:
    """Red team: a resource (or an embedded resource in a tool result) whose text comes as
    a base64 ``blob`` with a textual MIME type was never looked at: the agent decodes it
    and has the key."""
    import base64

    env = f"OPENAI_API_KEY={KEYS['openai-api-key']}\nDEBUG=1\n".encode()
    blob = {"uri": "file:///srv/.env", "mimeType": "text/plain", "blob": ""}
    value = {
        "contents": [{**blob, "blob": base64.b64encode(env).decode()}],
        "content": [
            {"type": "resource", "resource": {**blob, "blob": base64.b64encode(env).decode()}},
            {"type": "image", "mimeType": "image/png", "data": base64.b64encode(env).decode()},
        ],
    }
    cleaned, found = scrub.scrub(value, home)
    for item in (cleaned["contents"][0], cleaned["content"][0]["resource"]):
        text = base64.b64decode(item["blob"]).decode()
        assert KEYS["openai-api-key"] not in text and "DEBUG=1" in text
        assert "[redacted:openai-api-key:" in text
    assert cleaned["content"][1] == value["content"][1]  # an image is left alone
    assert [f.type for f in found] == ["openai-api-key"]


def test_an_injected_credential_in_base64_is_redacted_however_it_is_aligned() -> None:
    """Red team: the upstream's injected credential echoed inside a Basic credential
    (``user:VALUE`` in base64) was not among the forms looked for."""
    import base64

    value = _random(30, string.ascii_letters + string.digits + "+/-_")
    redactor = Redactor([value])
    for prefix in ("", "u:", "us:", "user:"):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(f"{prefix}{value}\n".encode()).decode()
            said = redactor.redact(f"Authorization: Basic {encoded}")
            assert "[redacted]" in said
            # what is left decodes to at most a few bytes of the value
            rest = said.split("Basic ", 1)[1].replace("[redacted]", "")
            assert len(rest) <= len(prefix) * 2 + 8


def test_a_result_with_too_many_secrets_is_refused(home: Path) -> None:
    many = " ".join("ghp_" + _random(36) for _ in range(1100))
    with pytest.raises(ValueError, match="more than 1000"):
        scrub.scrub({"text": many}, home)


def test_the_event_summary_lists_at_most_a_hundred_secrets() -> None:
    found = {scrub.Found("github-token", f"{i:012x}"): 1 for i in range(150)}
    summary = scrub.summary(found)
    assert summary["count"] == 150 and summary["types"] == {"github-token": 150}
    assert len(summary["secrets"]) == 100 and summary["unlisted"] == 50


# A JSON value: scalars and strings, nested in lists and dicts.
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)


@st.composite
def _planted(draw: st.DrawFn) -> tuple[Any, list[str]]:
    """A JSON value with secrets planted in some of its strings (on lines of their own,
    between arbitrary text), and the kinds planted."""
    kinds: list[str] = []

    def plant(node: Any) -> Any:
        if isinstance(node, str) and draw(st.booleans()):
            kind = draw(st.sampled_from(sorted(KEYS)))
            kinds.append(kind)
            return f"{node}\n{KEYS[kind]}\n{draw(_TEXT)}"
        if isinstance(node, list):
            return [plant(item) for item in node]
        if isinstance(node, dict):
            return {key: plant(item) for key, item in node.items()}
        return node

    return plant(draw(_JSON)), kinds


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(planted=_planted())
def test_scrubbing_never_raises_and_never_leaves_a_planted_secret(
    planted: tuple[Any, list[str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    value, kinds = planted
    home = tmp_path_factory.getbasetemp() / "scrub-home"
    home.mkdir(exist_ok=True)
    cleaned, found = scrub.scrub(value, home)
    dumped = json.dumps(cleaned, ensure_ascii=False)
    assert _values(dumped) == [], dumped
    assert {f.type for f in found} == set(kinds)
    assert sum(found.values()) >= len(kinds)


@pytest.mark.parametrize("algorithm", ["HS256", "EdDSA"])
def test_a_jwt_is_redacted_whole_signature_included(tmp_path: Path, algorithm: str) -> None:
    """detect-secrets' JWT pattern may stop before the signature; the redaction takes the
    whole token (header, payload and signature), under the fingerprint discovery gives it."""
    import jwt

    key: Any = (
        "hmac-key-for-the-test-0123456789"
        if algorithm == "HS256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    token = jwt.encode({"sub": "user-42", "aud": "https://api.example.com"}, key, algorithm)
    header, payload, signature = token.split(".")
    result = {
        "content": [
            {"type": "text", "text": f"Authorization: Bearer {token}"},
            {"type": "text", "text": json.dumps({"access_token": token, "n": 1})},
        ]
    }
    cleaned, found = scrub.scrub(result, tmp_path)
    shown = json.dumps(cleaned)
    for part in (header, payload, signature):
        assert part not in shown
    assert [f.type for f in found] == ["jwt"]
    assert sum(found.values()) == 2
    assert re.search(r"Bearer \[redacted:jwt:[0-9a-f]{12}\]\"", shown)
