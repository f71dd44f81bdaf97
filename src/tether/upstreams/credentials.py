"""Where an upstream's secret lives (``--credential NAME=REF``), and fetching it.

``NAME`` is the environment variable (stdio upstream) or HTTP header (HTTP upstream) that
receives the secret; ``REF`` says where it is: ``env:VAR``, an environment variable of
the Tether process, or ``vault:<path>#<field>``, a KV v2 field read through the vault
broker (cached briefly; ``vault-token:`` references are for agents, not upstreams). A
secret is fetched only when an upstream is started, and it never appears in a listing, an
event, a log line or an error: those name the reference only. If it cannot be fetched
(the vault is down, the variable unset), the upstream does not start: fail closed.

A value is checked before it is used, so that no library ever has it in an error of its
own: for an HTTP header it must be an RFC 9110 field value of printable ASCII (spaces and
tabs inside it only; no CR, LF, NUL or other control, no leading or trailing blank, no
obs-text); for an environment variable it must not hold a NUL. A value that breaks the
rule is refused with an error naming the reference and the rule, never the value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tether.errors import InvalidRequest, StoreUnavailable
from tether.redact import is_field_value
from tether.vault import Broker, VaultUnavailable, parse_ref

__all__ = [
    "FORBIDDEN_HEADERS",
    "HEADER_NAME",
    "Credential",
    "check_ref",
    "check_value",
    "parse_credential",
    "resolve",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")  # an RFC 9110 token
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclass(frozen=True, slots=True)
class Credential:
    """``name`` receives the secret found at ``ref``."""

    name: str
    ref: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "ref": self.ref}


def parse_credential(text: str, transport: str) -> Credential:
    """``NAME=REF`` for an upstream of ``transport`` (``stdio`` or ``http``)."""
    name, sep, ref = text.partition("=")
    if not sep or not name or not ref:
        raise InvalidRequest(f"a credential is NAME=REF, e.g. GITHUB_TOKEN=env:GH_TOKEN: {text!r}")
    if transport == "stdio" and _ENV_NAME.fullmatch(name) is None:
        raise InvalidRequest(f"{name!r} is not an environment variable name")
    if transport == "http" and (
        HEADER_NAME.fullmatch(name) is None or name.lower() in FORBIDDEN_HEADERS
    ):
        raise InvalidRequest(f"{name!r} is not a header Tether may set")
    return Credential(name, check_ref(ref))


def check_ref(ref: str) -> str:
    """``ref`` if it names where a secret for an upstream lives: ``env:VAR`` or
    ``vault:<path>#<field>``; else InvalidRequest saying what is accepted."""
    scheme, _, where = ref.partition(":")
    if scheme == "env":
        if _ENV_NAME.fullmatch(where) is None:
            raise InvalidRequest(f"env:{where} does not name an environment variable")
    elif scheme == "vault":
        parse_ref(ref)  # checked now: a malformed reference is refused at `gateway add`
    elif scheme == "vault-token":
        raise InvalidRequest(
            "vault-token: references are for agents; give an upstream vault:<path>#<field>"
        )
    else:
        raise InvalidRequest(
            f"unknown credential reference {ref!r}: use env:VARIABLE or vault:<path>#<field>"
        )
    return ref


def resolve(
    credential: Credential,
    environ: Mapping[str, str] | None = None,
    vault: Broker | None = None,
    *,
    transport: str = "http",
) -> str:
    """The secret itself (for the upstream only), checked for use by an upstream of
    ``transport`` (:func:`check_value`). Fails closed, naming the reference."""
    env = os.environ if environ is None else environ
    scheme, _, where = credential.ref.partition(":")
    if scheme == "vault":
        if vault is None:
            raise VaultUnavailable(
                f"cannot fetch {credential.ref}: no vault is configured ([vault] in tether.toml)"
            )
        value: object = vault.read(credential.ref)
    elif scheme == "env":
        value = env.get(where)
        if not value:
            raise StoreUnavailable(
                f"the credential {credential.ref} is not set in Tether's environment"
            )
    else:
        raise StoreUnavailable(f"cannot fetch {credential.ref}: unknown kind {scheme}:")
    return check_value(credential, value, transport)


def check_value(credential: Credential, value: object, transport: str) -> str:
    """``value`` if an upstream of ``transport`` may be given it as ``credential``; else
    InvalidRequest naming the reference and the rule (never the value)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"the credential {credential.ref} is not text")
    if transport == "stdio":
        if "\x00" in value:
            raise InvalidRequest(
                f"the credential {credential.ref} (environment variable {credential.name}) "
                "holds a NUL character, which no environment variable can carry"
            )
        return value
    if not is_field_value(value):
        raise InvalidRequest(
            f"the credential {credential.ref} (header {credential.name}) is not a valid "
            "HTTP header value: it must be printable ASCII, with no control character "
            "(a trailing newline?) and no space or tab at either end (RFC 9110)"
        )
    return value
