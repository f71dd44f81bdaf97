"""The OAuth 2 authorization server for agents: RFC 8414 metadata, the JWKS, the token
endpoint (client_credentials with private_key_jwt, RFC 7523), RFC 7662 introspection and
RFC 7009 revocation. Bodies are ``application/x-www-form-urlencoded``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tether.api.deps import CallerDep, TetherDep
from tether.callers import Caller
from tether.core import Tether
from tether.durations import parse_duration
from tether.errors import (
    Forbidden,
    InvalidClient,
    InvalidRequest,
    NotFound,
    TetherError,
    Unauthenticated,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from tether.model import Agent
from tether.tokens import ASSERTION_TYPE, EXCHANGE, TOKEN_TYPE_ACCESS

__all__ = ["router"]

router = APIRouter(tags=["OAuth 2"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_MAX_FORM = 32_768


async def _form(request: Request) -> dict[str, str]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise InvalidRequest("send the body as application/x-www-form-urlencoded")
    body = await request.body()
    if len(body) > _MAX_FORM:
        raise InvalidRequest("request body too large")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("malformed form body") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise InvalidRequest(f"parameter {key!r} given twice")  # RFC 6749 section 3.2
        form[key] = value
    return form


def _caller(tether: Tether, request: Request, form: dict[str, str]) -> Caller:
    """An admin (bearer) or an agent (client assertion in the form); a refusal is
    recorded."""
    try:
        caller, agent = _authenticate(tether, request, form)
    except UnauthorizedClient as exc:  # an agent that proved who it is, then refused
        tether.refused(exc.client_id or "anonymous", exc.description, request.url.path)
        raise
    except (InvalidClient, Unauthenticated) as exc:
        tether.refused("anonymous", exc.description, request.url.path)
        raise
    if not caller.is_admin and not agent:
        why = "only admins or agents (with a client assertion) may do this"
        tether.refused(caller.subject, why, request.url.path)
        raise Forbidden(why)
    return caller


def _authenticate(tether: Tether, request: Request, form: dict[str, str]) -> tuple[Caller, bool]:
    """(the caller, whether it is an agent)."""
    if "client_assertion" in form or "client_assertion_type" in form:
        agent = tether.tokens.authenticate_client(
            form.get("client_assertion_type"), form.get("client_assertion")
        )
        return Caller(f"agent:{agent.id}"), True
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        raise InvalidClient("authenticate with the admin token or a client assertion")
    return tether.authenticate(credentials.strip()), False


@router.get("/.well-known/oauth-authorization-server")
def metadata(tether: TetherDep) -> dict[str, Any]:
    issuer = tether.settings.issuer
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/oauth2/token",
        "introspection_endpoint": f"{issuer}/oauth2/introspect",
        "revocation_endpoint": f"{issuer}/oauth2/revoke",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials", EXCHANGE],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["EdDSA"],
        "introspection_endpoint_auth_methods_supported": ["private_key_jwt", "bearer"],
        "revocation_endpoint_auth_methods_supported": ["private_key_jwt", "bearer"],
        "response_types_supported": [],
        "scopes_supported": [],
    }


@router.get("/.well-known/jwks.json")
def jwks(tether: TetherDep) -> dict[str, Any]:
    return tether.keys.jwks()


@router.post("/oauth2/token")
async def token(tether: TetherDep, request: Request) -> JSONResponse:
    """Issue a token; a refused request is an audit event (``token.refused``) too."""
    form = await _form(request)
    return await run_in_threadpool(_token, tether, form)


def _token(tether: Tether, form: dict[str, str]) -> JSONResponse:
    agent: Agent | None = None
    try:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        if grant_type not in ("client_credentials", EXCHANGE):
            raise UnsupportedGrantType(f"grant_type {grant_type!r} is not supported")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
        agent = tether.tokens.authenticate_client(
            form.get("client_assertion_type"), form.get("client_assertion")
        )
        audience = form.get("resource") or form.get("audience")
        ttl = parse_duration(form["ttl"]) if form.get("ttl") else None
        if grant_type == EXCHANGE:
            issued = tether.tokens.exchange(
                agent,
                form.get("subject_token"),
                form.get("subject_token_type"),
                audience,
                form.get("scope"),
                ttl,
            )
            body = {**issued.to_dict(), "issued_token_type": TOKEN_TYPE_ACCESS}
            return JSONResponse(body, headers=_NO_STORE)
        issued = tether.tokens.client_credentials(agent, audience, form.get("scope"), ttl)
        return JSONResponse(issued.to_dict(), headers=_NO_STORE)
    except TetherError as exc:
        known = agent.id if agent is not None else getattr(exc, "client_id", None)
        tether.refused(
            known or "anonymous",
            exc.description,
            "token",
            type="token.refused",
            subject=known,
            action="token/" + ("exchange" if form.get("grant_type") == EXCHANGE else "issue"),
            resource=(form.get("resource") or form.get("audience") or "")[:512] or None,
            detail={"error": exc.error, "grant_type": (form.get("grant_type") or "")[:100]},
        )
        raise


@router.post("/oauth2/introspect")
async def introspect(tether: TetherDep, request: Request) -> JSONResponse:
    form = await _form(request)
    return await run_in_threadpool(_introspect, tether, request, form)


def _introspect(tether: Tether, request: Request, form: dict[str, str]) -> JSONResponse:
    _caller(tether, request, form)
    if "token" not in form:
        raise InvalidRequest("the token parameter is required")
    return JSONResponse(tether.tokens.introspect(form["token"]), headers=_NO_STORE)


@router.post("/oauth2/revoke")
async def revoke(tether: TetherDep, request: Request) -> JSONResponse:
    form = await _form(request)
    return await run_in_threadpool(_revoke, tether, request, form)


def _revoke(tether: Tether, request: Request, form: dict[str, str]) -> JSONResponse:
    caller = _caller(tether, request, form)
    if "token" not in form:
        raise InvalidRequest("the token parameter is required")
    count = tether.tokens.revoke(caller, form["token"])
    return JSONResponse({"revoked": count}, headers=_NO_STORE)


@router.post("/v1/keys/rotate", tags=["keys"])
def rotate_keys(tether: TetherDep, caller: CallerDep) -> dict[str, Any]:
    kid = tether.keys.rotate(caller)
    return {"kid": kid, "jwks": tether.keys.jwks()}


@router.post("/v1/dev/user-token", tags=["development"])
def dev_user_token(tether: TetherDep, caller: CallerDep, body: dict[str, Any]) -> dict[str, str]:
    """A person's token from the development IdP (only with --demo or dev_idp = true);
    ``groups``, a list of names, become its groups claim."""
    if tether.dev_idp is None:
        raise NotFound("the development identity provider is off (tether up --demo enables it)")
    email, groups = body.get("email"), body.get("groups", [])
    if not isinstance(email, str):
        raise InvalidRequest("give the person's email")
    if not isinstance(groups, list):
        raise InvalidRequest("groups must be a list of group names")
    if not caller.is_admin:
        tether.refused(caller.subject, "only admins mint development user tokens", "dev.token")
    token = tether.dev_idp.user_token(email, is_admin_caller=caller.is_admin, groups=groups)
    return {"token": token, "issuer": tether.dev_idp.issuer, "warning": "development IdP"}
