"""Unit tests of :class:`tether.idp.IdentityProviders` with real keys and real JWTs.

Keys are made with ``cryptography``, tokens are minted with PyJWT (or by hand where PyJWT
refuses to make the hostile token), and the JWKS lives in a file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tether.callers import Caller
from tether.config import IdpConfig
from tether.errors import Unauthenticated
from tether.idp import IdentityProviders
from tether.model import Email

ISSUER = "https://idp.example.com"
AUDIENCE = "tether"
ADMIN_GROUP = "security-admins"

FUZZ = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


# ---- keys, JWKS and tokens -------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    ed: Ed25519PrivateKey
    ec: ec.EllipticCurvePrivateKey
    rsa: rsa.RSAPrivateKey


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        ed=Ed25519PrivateKey.generate(),
        ec=ec.generate_private_key(ec.SECP256R1()),
        rsa=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def _jwk(make: Callable[..., Any], public_key: Any, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = make(public_key, as_dict=True)
    jwk["kid"] = kid
    return jwk


def jwks_of(keys: Keys) -> dict[str, Any]:
    return {
        "keys": [
            _jwk(OKPAlgorithm.to_jwk, keys.ed.public_key(), "ed"),
            _jwk(ECAlgorithm.to_jwk, keys.ec.public_key(), "ec"),
            _jwk(RSAAlgorithm.to_jwk, keys.rsa.public_key(), "rsa"),
        ]
    }


def write_jwks(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def providers(
    jwks_file: Path, admin_groups: tuple[str, ...] = (ADMIN_GROUP,), **idp: Any
) -> IdentityProviders:
    config = IdpConfig(issuer=ISSUER, audience=AUDIENCE, jwks_file=jwks_file, **idp)
    return IdentityProviders([config], admin_groups)


@pytest.fixture
def jwks_file(tmp_path: Path, keys: Keys) -> Path:
    return write_jwks(tmp_path / "jwks.json", jwks_of(keys))


@pytest.fixture
def idps(jwks_file: Path) -> IdentityProviders:
    return providers(jwks_file)


def claims(**overrides: Any) -> dict[str, Any]:
    """Good claims; an override of ``None`` drops the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bob-1234",
        "email": "bob@example.com",
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def mint(
    key: Any, alg: str, kid: str | None, headers: dict[str, Any] | None = None, **kw: Any
) -> str:
    extra = dict(headers or {})
    if kid is not None:
        extra["kid"] = kid
    token: str = jwt.encode(claims(**kw), key, algorithm=alg, headers=extra)
    return token


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: Any) -> str:
    return b64url(json.dumps(value).encode("utf-8"))


def handmade(header: dict[str, Any], payload: Any, sign: Callable[[bytes], bytes]) -> str:
    """A compact JWS built by hand, for tokens PyJWT would refuse to make."""
    signing_input = f"{segment(header)}.{segment(payload)}"
    return f"{signing_input}.{b64url(sign(signing_input.encode('ascii')))}"


def es_raw(key: ec.EllipticCurvePrivateKey, message: bytes) -> bytes:
    """An ES* signature in JWS form: r || s, each as long as the curve's order."""
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# ---- accepted tokens --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("which", "alg", "kid"),
    [("ed", "EdDSA", "ed"), ("ec", "ES256", "ec"), ("rsa", "RS256", "rsa")],
)
def test_each_accepted_algorithm_names_the_person(
    idps: IdentityProviders, keys: Keys, which: str, alg: str, kid: str
) -> None:
    token = mint(getattr(keys, which), alg, kid, email="Bob@Example.COM")

    caller = idps.authenticate(token)

    assert caller == Caller(subject="user:bob@example.com", email=Email("bob@example.com"))
    assert caller.email == "bob@example.com"
    assert caller.is_admin is False
    assert caller.owns("bob@example.com")
    assert not caller.owns("alice@example.com")


@pytest.mark.parametrize(
    ("groups", "admin"),
    [
        ([ADMIN_GROUP], True),
        (["engineering", ADMIN_GROUP], True),
        (["engineering", "security"], False),
        ([], False),
        (None, False),
        # a bare string is not a list of groups (and must not match by substring)
        (ADMIN_GROUP, False),
        ([ADMIN_GROUP.upper()], False),
    ],
)
def test_only_a_configured_admin_group_makes_an_admin(
    idps: IdentityProviders, keys: Keys, groups: Any, admin: bool
) -> None:
    caller = idps.authenticate(mint(keys.ed, "EdDSA", "ed", groups=groups))
    assert caller.is_admin is admin
    assert caller.subject == "user:bob@example.com"


def test_no_admin_groups_configured_means_no_group_makes_an_admin(
    jwks_file: Path, keys: Keys
) -> None:
    idps = providers(jwks_file, admin_groups=())
    assert idps.authenticate(mint(keys.ed, "EdDSA", "ed", groups=[ADMIN_GROUP])).is_admin is False


def test_configured_claim_names_are_used(jwks_file: Path, keys: Keys) -> None:
    idps = providers(jwks_file, email_claim="upn", groups_claim="roles")
    token = mint(
        keys.ed,
        "EdDSA",
        "ed",
        email="mallory@example.com",
        upn="Carol@Example.com",
        groups=[ADMIN_GROUP],
        roles=[ADMIN_GROUP],
    )
    caller = idps.authenticate(token)
    assert caller.email == "carol@example.com"
    assert caller.is_admin is True

    # the default claim names mean nothing to this IdP
    only_defaults = mint(keys.ed, "EdDSA", "ed", groups=[ADMIN_GROUP])
    with pytest.raises(Unauthenticated, match="upn"):
        idps.authenticate(only_defaults)


def test_expiry_inside_the_leeway_is_accepted(idps: IdentityProviders, keys: Keys) -> None:
    token = mint(keys.ed, "EdDSA", "ed", exp=int(time.time()) - 5)
    assert idps.authenticate(token).email == "bob@example.com"


def test_providers_without_any_idp_are_falsy(jwks_file: Path) -> None:
    assert not IdentityProviders([], [ADMIN_GROUP])
    assert providers(jwks_file)


# ---- refused tokens ---------------------------------------------------------------------


def _hs256_with_public_key(keys: Keys) -> str:
    secret = public_pem(keys.ed)
    return handmade(
        {"alg": "HS256", "typ": "JWT", "kid": "ed"},
        claims(),
        lambda m: hmac.new(secret, m, hashlib.sha256).digest(),
    )


def _hs256_with_jwk_x(keys: Keys) -> str:
    secret = jwks_of(keys)["keys"][0]["x"].encode("ascii")
    return handmade(
        {"alg": "HS256", "kid": "ed"},
        claims(),
        lambda m: hmac.new(secret, m, hashlib.sha256).digest(),
    )


def _alg_none(_: Keys) -> str:
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(claims())}."


def _alg_none_with_kid(_: Keys) -> str:
    return f"{segment({'alg': 'none', 'kid': 'ed'})}.{segment(claims())}."


def _alg_none_capitalised(_: Keys) -> str:
    return f"{segment({'alg': 'None', 'kid': 'ed'})}.{segment(claims())}."


def _no_alg(keys: Keys) -> str:
    return handmade({"kid": "ed"}, claims(), keys.ed.sign)


def _es256_header_on_ed25519_key(keys: Keys) -> str:
    # signed properly with *an* ES256 key, but naming the Ed25519 key of the JWKS
    return handmade({"alg": "ES256", "kid": "ed"}, claims(), lambda m: es_raw(keys.ec, m))


def _eddsa_header_on_ec_key(keys: Keys) -> str:
    return mint(keys.ed, "EdDSA", "ec")


def _rs256_header_on_ec_key(keys: Keys) -> str:
    return mint(keys.rsa, "RS256", "ec")


def _es256_header_on_rsa_key(keys: Keys) -> str:
    return mint(keys.ec, "ES256", "rsa")


def _payload_changed_under_old_signature(keys: Keys) -> str:
    header, _, signature = mint(keys.ed, "EdDSA", "ed").split(".")
    forged = segment(claims(email="alice@example.com", groups=[ADMIN_GROUP]))
    return f"{header}.{forged}.{signature}"


def _header_changed_under_old_signature(keys: Keys) -> str:
    _, payload, signature = mint(keys.ec, "ES256", "ec").split(".")
    return f"{segment({'alg': 'ES256', 'kid': 'ec', 'typ': 'at+jwt'})}.{payload}.{signature}"


def _signature_truncated(keys: Keys) -> str:
    return mint(keys.rsa, "RS256", "rsa")[:-8]


def _signed_by_another_ed25519_key(_: Keys) -> str:
    return mint(Ed25519PrivateKey.generate(), "EdDSA", "ed")


def _signed_by_another_rsa_key(_: Keys) -> str:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return mint(other, "RS256", "rsa")


def _no_kid_with_several_keys(keys: Keys) -> str:
    return mint(keys.ed, "EdDSA", None)


def _unknown_kid(keys: Keys) -> str:
    return mint(keys.ed, "EdDSA", "ed-rotated-away")


def _embedded_jwk_header(_: Keys) -> str:
    attacker = Ed25519PrivateKey.generate()
    embedded = OKPAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    return mint(attacker, "EdDSA", "ed", headers={"jwk": embedded})


def _header(name: str, value: Any) -> Callable[[Keys], str]:
    def make(keys: Keys) -> str:
        # correctly signed by the trusted key: only the header is wrong
        return mint(keys.ed, "EdDSA", "ed", headers={name: value})

    make.__name__ = f"_{name}_header"
    return make


def _claims(**overrides: Any) -> Callable[[Keys], str]:
    def make(keys: Keys) -> str:
        return mint(keys.ed, "EdDSA", "ed", **overrides)

    return make


REFUSED: dict[str, Callable[[Keys], str]] = {
    "hs256-signed-with-public-key-pem": _hs256_with_public_key,
    "hs256-signed-with-jwk-x": _hs256_with_jwk_x,
    "hs256-any-secret": lambda _: jwt.encode(claims(), "secret-" * 8, algorithm="HS256"),
    "hs512-any-secret": lambda _: jwt.encode(claims(), "s" * 64, algorithm="HS512"),
    "alg-none": _alg_none,
    "alg-none-with-kid": _alg_none_with_kid,
    "alg-None": _alg_none_capitalised,
    "no-alg": _no_alg,
    "ps256": lambda k: mint(k.rsa, "PS256", "rsa"),
    "rs512": lambda k: mint(k.rsa, "RS512", "rsa"),
    "es256-header-on-ed25519-key": _es256_header_on_ed25519_key,
    "eddsa-header-on-ec-key": _eddsa_header_on_ec_key,
    "rs256-header-on-ec-key": _rs256_header_on_ec_key,
    "es256-header-on-rsa-key": _es256_header_on_rsa_key,
    "payload-changed-under-old-signature": _payload_changed_under_old_signature,
    "header-changed-under-old-signature": _header_changed_under_old_signature,
    "signature-truncated": _signature_truncated,
    "signature-stripped": lambda k: mint(k.ed, "EdDSA", "ed").rsplit(".", 1)[0] + ".",
    "signed-by-another-ed25519-key": _signed_by_another_ed25519_key,
    "signed-by-another-rsa-key": _signed_by_another_rsa_key,
    "no-kid-with-several-keys": _no_kid_with_several_keys,
    "unknown-kid": _unknown_kid,
    "jku-header": _header("jku", "https://attacker.example/jwks.json"),
    "x5u-header": _header("x5u", "https://attacker.example/cert.pem"),
    "x5c-header": _header("x5c", ["MIIB"]),
    "jwk-header": _header("jwk", {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
    "jwk-header-with-attacker-key": _embedded_jwk_header,
    "crit-header": _header("crit", ["exp"]),
    "wrong-audience": _claims(aud="some-other-api"),
    "audience-list-without-tether": _claims(aud=["a", "b"]),
    "missing-audience": _claims(aud=None),
    "wrong-issuer": _claims(iss="https://evil.example.com"),
    "issuer-with-trailing-slash": _claims(iss=ISSUER + "/"),
    "missing-issuer": _claims(iss=None),
    "expired-beyond-leeway": _claims(exp=int(time.time()) - 120),
    "expired-long-ago": _claims(exp=1),
    "missing-exp": _claims(exp=None),
    "exp-not-a-number": _claims(exp="tomorrow"),
    "not-yet-valid": _claims(nbf=int(time.time()) + 3600),
    "missing-email": _claims(email=None),
    "email-not-a-string": _claims(email=["bob@example.com"]),
    "email-invalid": _claims(email="not-an-email"),
    "email-empty": _claims(email=""),
    "email-with-spaces-inside": _claims(email="bob smith@example.com"),
}


@pytest.mark.parametrize("make", REFUSED.values(), ids=REFUSED.keys())
def test_refused_tokens_raise_unauthenticated(
    idps: IdentityProviders, keys: Keys, make: Callable[[Keys], str]
) -> None:
    token = make(keys)
    with pytest.raises(Unauthenticated):
        idps.authenticate(token)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://attacker.example/jwks.json"),
        ("x5u", "https://attacker.example/cert.pem"),
        ("x5c", ["MIIB"]),
        ("jwk", {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}),
        ("crit", ["b64"]),  # a crit PyJWT itself would let through
    ],
)
def test_key_source_headers_are_refused_and_never_followed(
    idps: IdentityProviders, keys: Keys, monkeypatch: pytest.MonkeyPatch, name: str, value: Any
) -> None:
    def no_network(*_: Any, **__: Any) -> None:
        raise AssertionError("a token header made Tether fetch a URL")

    monkeypatch.setattr("tether.idp.httpx.get", no_network)
    header = {"alg": "EdDSA", "kid": "ed", name: value, "b64": True}
    token = handmade(header, claims(), keys.ed.sign)  # correctly signed by the trusted key
    with pytest.raises(Unauthenticated, match=f"'{name}'"):
        idps.authenticate(token)


def test_the_refusal_cases_are_refused_only_for_their_flaw(
    idps: IdentityProviders, keys: Keys
) -> None:
    """The control: the same construction without the flaw is accepted, so the refusals
    above are not all refusals of something else the helpers got wrong."""
    assert idps.authenticate(mint(keys.ed, "EdDSA", "ed")).email == "bob@example.com"
    assert idps.authenticate(
        handmade({"alg": "EdDSA", "kid": "ed", "b64": True}, claims(), keys.ed.sign)
    )
    assert idps.authenticate(
        handmade({"alg": "ES256", "kid": "ec"}, claims(), lambda m: es_raw(keys.ec, m))
    )
    assert idps.authenticate(mint(keys.ed, "EdDSA", "ed", aud=["a", AUDIENCE]))


def test_es256_header_on_a_p384_key_is_refused(tmp_path: Path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    path = write_jwks(
        tmp_path / "jwks.json", {"keys": [_jwk(ECAlgorithm.to_jwk, p384.public_key(), "p384")]}
    )
    token = handmade({"alg": "ES256", "kid": "p384"}, claims(), lambda m: es_raw(p384, m))
    with pytest.raises(Unauthenticated):
        providers(path).authenticate(token)


def test_a_key_whose_declared_alg_differs_is_refused(tmp_path: Path, keys: Keys) -> None:
    rsa_jwk = _jwk(RSAAlgorithm.to_jwk, keys.rsa.public_key(), "rsa")
    path = write_jwks(tmp_path / "jwks.json", {"keys": [{**rsa_jwk, "alg": "PS256"}]})
    with pytest.raises(Unauthenticated):
        providers(path).authenticate(mint(keys.rsa, "RS256", "rsa"))
    # and declared correctly, it is used
    write_jwks(path, {"keys": [{**rsa_jwk, "alg": "RS256"}]})
    assert providers(path).authenticate(mint(keys.rsa, "RS256", "rsa")).email == "bob@example.com"


def test_an_issuer_not_configured_is_refused_even_with_a_trusted_key(
    jwks_file: Path, keys: Keys
) -> None:
    other = IdentityProviders(
        [IdpConfig(issuer="https://other-idp.example.com", audience=AUDIENCE, jwks_file=jwks_file)],
        [ADMIN_GROUP],
    )
    with pytest.raises(Unauthenticated, match="issuer"):
        other.authenticate(mint(keys.ed, "EdDSA", "ed"))


def test_the_audience_is_per_issuer(tmp_path: Path, keys: Keys) -> None:
    path = write_jwks(tmp_path / "jwks.json", jwks_of(keys))
    idps = IdentityProviders(
        [
            IdpConfig(issuer=ISSUER, audience=AUDIENCE, jwks_file=path),
            IdpConfig(issuer="https://b.example.com", audience="other", jwks_file=path),
        ],
        [],
    )
    assert idps.authenticate(mint(keys.ed, "EdDSA", "ed")).email == "bob@example.com"
    with pytest.raises(Unauthenticated):
        idps.authenticate(mint(keys.ed, "EdDSA", "ed", iss="https://b.example.com"))
    b = mint(keys.ed, "EdDSA", "ed", iss="https://b.example.com", aud="other")
    assert idps.authenticate(b).email == "bob@example.com"


# ---- the JWKS file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        None,  # missing
        b"",
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"keys"',
        b"{}",
        b'{"keys": {}}',
        b'{"keys": []}',
        b'{"keys": ["ed"]}',
        b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "ed"}]}',
        b'{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "!!notbase64", "kid": "ed"}]}',
        b'{"keys": [{"kty": "EC", "crv": "P-256", "kid": "ed"}]}',
    ],
    ids=lambda c: "missing" if c is None else repr(c[:24]),
)
def test_a_broken_jwks_file_refuses_tokens(
    tmp_path: Path, keys: Keys, content: bytes | None
) -> None:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(Unauthenticated):
        providers(path).authenticate(mint(keys.ed, "EdDSA", "ed"))


def test_a_jwks_url_is_fetched_and_its_failures_refuse(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "https://idp.example.com/.well-known/jwks.json"
    answers: list[httpx.Response | Exception] = [
        httpx.ConnectError("down"),
        httpx.Response(500, text="oops"),
        httpx.Response(200, text="<html>"),
        httpx.Response(200, json=jwks_of(keys)),
    ]
    fetched: list[str] = []

    def fake_get(target: str, **_: Any) -> httpx.Response:
        fetched.append(target)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        answer.request = httpx.Request("GET", target)
        return answer

    monkeypatch.setattr("tether.idp.httpx.get", fake_get)
    idps = IdentityProviders([IdpConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=url)], [])
    token = mint(keys.ed, "EdDSA", "ed")
    for _ in range(3):
        with pytest.raises(Unauthenticated, match="JWKS"):
            idps.authenticate(token)
    assert idps.authenticate(token).email == "bob@example.com"
    assert fetched == [url] * 4


# ---- garbage ----------------------------------------------------------------------------


@FUZZ
@given(token=st.text())
def test_garbage_text_raises_unauthenticated_only(idps: IdentityProviders, token: str) -> None:
    with pytest.raises(Unauthenticated):
        idps.authenticate(token)


@FUZZ
@given(token=st.text(alphabet="abcXYZ019-_.=", min_size=0, max_size=80))
def test_jws_alphabet_garbage_raises_unauthenticated_only(
    idps: IdentityProviders, token: str
) -> None:
    with pytest.raises(Unauthenticated):
        idps.authenticate(token)


_json_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_json = st.recursive(
    _json_scalar,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_alg = st.sampled_from(["EdDSA", "ES256", "RS256", "HS256", "none"]) | _json_scalar
_kid = st.sampled_from(["ed", "ec", "rsa", "nope"]) | _json


@FUZZ
@given(
    alg=_alg,
    kid=_kid,
    extra_header=st.dictionaries(st.text(max_size=8), _json, max_size=3),
    payload=_json
    | st.fixed_dictionaries(
        {"iss": st.just(ISSUER)},
        optional={
            "aud": _json,
            "exp": _json,
            "email": _json,
            "groups": _json,
            "nbf": _json,
        },
    ),
    signature=st.binary(max_size=300),
)
def test_wellformed_but_hostile_jws_raises_unauthenticated_only(
    idps: IdentityProviders,
    alg: Any,
    kid: Any,
    extra_header: dict[str, Any],
    payload: Any,
    signature: bytes,
) -> None:
    header = {**extra_header, "alg": alg, "kid": kid}
    token = f"{segment(header)}.{segment(payload)}.{b64url(signature)}"
    with pytest.raises(Unauthenticated):
        idps.authenticate(token)


@pytest.mark.parametrize("alg", [["EdDSA"], {"EdDSA": 1}])
def test_an_unhashable_alg_header_raises_unauthenticated(idps: IdentityProviders, alg: Any) -> None:
    token = f"{segment({'alg': alg, 'kid': 'ed'})}.{segment(claims())}.{b64url(b'sig')}"
    with pytest.raises(Unauthenticated):
        idps.authenticate(token)


def test_unhashable_group_values_do_not_crash(idps: IdentityProviders, keys: Keys) -> None:
    caller = idps.authenticate(mint(keys.ed, "EdDSA", "ed", groups=[{"name": ADMIN_GROUP}]))
    assert caller.is_admin is False
