"""Requests that ask the destination to run another method, path or host than their own.

Many web frameworks let a request name the method, path or virtual host to act on in a
header or a parameter, in place of the request line's: ``X-HTTP-Method-Override: DELETE``
(Google APIs, Express's ``method-override``, OData), ``X-Original-URL`` and
``X-Rewrite-URL`` (IIS URL Rewrite, Symfony, some Spring set-ups), ``X-Host`` (virtual
hosting), and a POST's ``_method`` parameter in its query or form body (Rails, Laravel,
Symfony). Tether decides the request line's method on the normalised path; a destination
that honoured such an override would run something nobody decided: a GET allowed on
``github/repos/acme/x`` executed as a DELETE, or on ``/admin``. So the proxy refuses a
request that carries one (:func:`override_in`), whatever its value: the agent sends the
method itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import unquote_plus

__all__ = ["OVERRIDE_HEADERS", "override_in"]

OVERRIDE_HEADERS = frozenset(
    {
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
        "x-original-url",
        "x-rewrite-url",
        "x-host",
        "x-http-host-override",
    }
)
PARAMETER = "_method"
_FORM = "application/x-www-form-urlencoded"
# a multipart part named _method (quoted or not), in its Content-Disposition line
_MULTIPART_FIELD = re.compile(
    rb"content-disposition:[^\r\n]*;\s*name\s*=\s*\"?_method(?:\"|\s*(?:;|\r|\n|$))",
    re.IGNORECASE,
)


def override_in(
    headers: Sequence[tuple[str, str]],
    query: Sequence[tuple[str, str]],
    body: bytes,
) -> str | None:
    """Why the request (its headers, its decoded query pairs, its body) asks for another
    method, path or host than its own, or None when it does not."""
    for name, _ in headers:
        if name.lower() in OVERRIDE_HEADERS:
            return (
                f"the request carries {name.lower()}, which tells some servers to run another "
                "method, path or host than the one decided: send the method and path themselves"
            )
    kinds = [v.split(";", 1)[0].strip().lower() for k, v in headers if k.lower() == "content-type"]
    if any(n == PARAMETER for n, _ in query) or (body and _in_body(body, kinds)):
        return (
            f"the request carries a {PARAMETER} parameter, which tells some servers to run "
            "another method than the one decided: send that method itself"
        )
    return None


def _in_body(body: bytes, kinds: list[str]) -> bool:
    if _FORM in kinds:
        return any(
            unquote_plus(piece.partition(b"=")[0].decode("latin-1")) == PARAMETER
            for piece in body.split(b"&")
        )
    if any(kind.startswith("multipart/") for kind in kinds):
        return _MULTIPART_FIELD.search(body) is not None
    return False
