"""Tether's JOSE layer against public conformance vectors (``tests/vectors/``).

- Wycheproof ``ed25519_test.json``: every signature gives the expected answer through
  :func:`tether.jose.verify_ed25519`, and a failure is always :class:`InvalidToken`.
- Wycheproof ``json_web_signature_test.json``: none of its 401 tokens is EdDSA, so Tether
  refuses every one, compact or JSON-serialised, in :func:`tether.jose.read_header`, in
  ``Tether.tokens.verify`` and as a client assertion, and nothing but the refusal escapes.
- RFC 8037 (JOSE cookbook): :func:`tether.jose.sign` reproduces the Ed25519 example byte
  for byte and :func:`tether.jose.verify_ed25519` accepts it.

The vectors are copies (see ``tests/vectors/README.md``); nothing outside the checkout is read.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tether import Settings, Tether
from tether.errors import InvalidClient, InvalidToken
from tether.jose import raw_public, read_header, sign, verify_ed25519
from tether.tokens import ASSERTION_TYPE

VECTORS = Path(__file__).parent / "vectors"


def _load(relative: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / relative).read_text(encoding="utf-8"))
    return data


ED25519 = _load("wycheproof/ed25519_test.json")
JWS = _load("wycheproof/json_web_signature_test.json")
RFC8037 = _load("jose-cookbook/rfc8037-ed25519-jws.json")

ED25519_CASES = [
    (group["publicKey"]["pk"], case) for group in ED25519["testGroups"] for case in group["tests"]
]
JWS_CASES = [(group["comment"], case) for group in JWS["testGroups"] for case in group["tests"]]


def b64url_decode(text: str) -> bytes:
    """The test's own decoder (not Tether's)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _ed25519_id(item: tuple[str, dict[str, Any]]) -> str:
    return f"tc{item[1]['tcId']}-{item[1]['result']}"


def _jws_id(item: tuple[str, dict[str, Any]]) -> str:
    return f"tc{item[1]['tcId']}-{item[0]}-{item[1]['comment']}"


def _outcome(pk: str, case: dict[str, Any]) -> str:
    """``accepted`` or ``rejected``; any exception other than InvalidToken propagates."""
    try:
        verify_ed25519(bytes.fromhex(pk), bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"]))
    except InvalidToken:
        return "rejected"
    return "accepted"


# ---- Wycheproof Ed25519 -----------------------------------------------------------------


def test_ed25519_vectors_are_the_expected_set() -> None:
    assert ED25519["algorithm"] == "EDDSA"
    assert len(ED25519_CASES) == ED25519["numberOfTests"] == 150
    assert Counter(case["result"] for _, case in ED25519_CASES) == {"valid": 88, "invalid": 62}
    assert {g["publicKey"]["curve"] for g in ED25519["testGroups"]} == {"edwards25519"}


@pytest.mark.parametrize(("pk", "case"), ED25519_CASES, ids=map(_ed25519_id, ED25519_CASES))
def test_ed25519_vector(pk: str, case: dict[str, Any]) -> None:
    outcome = _outcome(pk, case)
    if case["result"] == "valid":
        assert outcome == "accepted", case
    elif case["result"] == "invalid":
        assert outcome == "rejected", case
    else:  # "acceptable": either answer, but only InvalidToken may escape (checked above)
        assert outcome in ("accepted", "rejected")


def test_ed25519_vector_totals() -> None:
    """All 150 in one pass: 88 accepted exactly where valid, 62 rejected where invalid."""
    tally = Counter((case["result"], _outcome(pk, case)) for pk, case in ED25519_CASES)
    assert tally == {("valid", "accepted"): 88, ("invalid", "rejected"): 62}


def test_ed25519_rejects_a_malformed_public_key_as_invalid_token() -> None:
    pk, case = ED25519_CASES[0]
    message, signature = bytes.fromhex(case["msg"]), bytes.fromhex(case["sig"])
    for key in (b"", bytes.fromhex(pk)[:31], bytes.fromhex(pk) + b"\x00"):
        with pytest.raises(InvalidToken):
            verify_ed25519(key, message, signature)


# ---- Wycheproof JWS: none of it is EdDSA, all of it is refused --------------------------


@pytest.fixture(scope="module")
def sqlite_tether(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tether]:
    """A real Tether on a temporary SQLite store."""
    home = tmp_path_factory.mktemp("jose-home")
    settings = Settings.load(home)
    first, _ = Tether.init(settings)
    first.close()
    with Tether.open(settings) as tether:
        yield tether


def _declared_alg(token: str) -> str | None:
    if token.lstrip().startswith("{"):
        # tc17 is a JSON serialisation, truncated in the vector file itself (no closing
        # "]}"): read its protected header without parsing the document.
        found = re.search(r'"protected"\s*:\s*"([^"]*)"', token)
        if found is None:
            return None
        protected = found.group(1)
    else:
        protected = token.split(".", 1)[0]
    try:
        header = json.loads(b64url_decode(protected))
    except (ValueError, binascii.Error):
        return None
    return header.get("alg") if isinstance(header, dict) else None


def test_jws_vectors_are_the_expected_set() -> None:
    assert len(JWS_CASES) == JWS["numberOfTests"] == 401
    assert Counter(case["result"] for _, case in JWS_CASES) == {"valid": 46, "invalid": 355}
    algs = Counter(_declared_alg(case["jws"]) for _, case in JWS_CASES)
    assert not any(str(alg).lower() == "eddsa" for alg in algs), algs
    assert algs["none"] + algs["NONE"] == 5  # the alg-none attacks are in the set
    json_serialised = [c for _, c in JWS_CASES if c["jws"].lstrip().startswith("{")]
    assert [c["tcId"] for c in json_serialised] == [17]


@pytest.mark.parametrize(("group", "case"), JWS_CASES, ids=map(_jws_id, JWS_CASES))
def test_jws_vector_is_refused_by_read_header(group: str, case: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken):
        read_header(case["jws"])
    with pytest.raises(InvalidToken):
        read_header(case["jws"], require_kid=False)  # as for client assertions


@pytest.mark.parametrize(("group", "case"), JWS_CASES, ids=map(_jws_id, JWS_CASES))
def test_jws_vector_is_refused_by_verify(
    sqlite_tether: Tether, group: str, case: dict[str, Any]
) -> None:
    with pytest.raises(InvalidToken):
        sqlite_tether.tokens.verify(case["jws"], None)
    with pytest.raises(InvalidToken):
        sqlite_tether.tokens.verify(case["jws"], "http://127.0.0.1:8700/mcp/github")
    assert sqlite_tether.tokens.introspect(case["jws"]) == {"active": False}


@pytest.mark.parametrize(("group", "case"), JWS_CASES, ids=map(_jws_id, JWS_CASES))
def test_jws_vector_is_refused_as_a_client_assertion(
    sqlite_tether: Tether, group: str, case: dict[str, Any]
) -> None:
    with pytest.raises(InvalidClient):
        sqlite_tether.tokens.authenticate_client(ASSERTION_TYPE, case["jws"])


# ---- RFC 8037 (JOSE cookbook) -----------------------------------------------------------


def _rfc8037_key() -> Ed25519PrivateKey:
    jwk = RFC8037["input"]["key"]
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    private = Ed25519PrivateKey.from_private_bytes(b64url_decode(jwk["d"]))
    assert raw_public(private.public_key()) == b64url_decode(jwk["x"])
    return private


def test_rfc8037_sign_is_byte_for_byte() -> None:
    payload = RFC8037["input"]["payload"].encode()
    token = sign(payload, _rfc8037_key(), {"typ": None})
    assert token == RFC8037["output"]["compact"]
    assert token.rpartition(".")[0] == RFC8037["signing"]["sig-input"]
    assert token.rpartition(".")[2] == RFC8037["signing"]["sig"]


def test_rfc8037_signature_verifies() -> None:
    signing_input, _, signature = RFC8037["output"]["compact"].rpartition(".")
    public = b64url_decode(RFC8037["input"]["key"]["x"])
    verify_ed25519(public, signing_input.encode(), b64url_decode(signature))
    tampered = bytearray(b64url_decode(signature))
    tampered[0] ^= 1
    with pytest.raises(InvalidToken):
        verify_ed25519(public, signing_input.encode(), bytes(tampered))
    with pytest.raises(InvalidToken):
        verify_ed25519(public, signing_input.encode() + b"!", b64url_decode(signature))


def test_rfc8037_header_is_read_only_without_the_kid_rule() -> None:
    compact = RFC8037["output"]["compact"]
    assert read_header(compact, require_kid=False) == RFC8037["signing"]["protected"]
    with pytest.raises(InvalidToken):
        read_header(compact)  # Tether's own tokens must name a kid


@pytest.mark.parametrize("form", ["json", "json_flat"])
def test_rfc8037_json_serialisations_are_refused(sqlite_tether: Tether, form: str) -> None:
    """A valid EdDSA signature, but JWS JSON serialisation is not accepted anywhere."""
    token = json.dumps(RFC8037["output"][form])
    with pytest.raises(InvalidToken):
        read_header(token, require_kid=False)
    with pytest.raises(InvalidToken):
        sqlite_tether.tokens.verify(token, None)
    with pytest.raises(InvalidClient):
        sqlite_tether.tokens.authenticate_client(ASSERTION_TYPE, token)
