"""How grants name what an upstream serves: the resource path of a tool, resource or prompt.

A tool or a prompt of upstream ``SERVER`` is ``SERVER/<its name>``; the name must itself be
a resource path (segments of ``A-Z a-z 0-9 . _ ~ : @ + = , -``, see
:mod:`tether.permissions`).

A resource is named by its **URI**, never by its display name (MCP resource names are not
unique; URIs are): ``SERVER/`` followed by the URI written in the resource alphabet, one
``/``-separated piece of the URI per segment:

- in each piece, every character other than ``A-Z a-z 0-9 . _ ~ : @ + , -`` (so ``=``
  itself too, and ``%``, ``?``, ``#``, ``*``, spaces and any non-ASCII letter) is written
  ``=`` and two upper-case hex digits for each byte of its UTF-8 form (``=`` is ``=3D``,
  ``?`` is ``=3F``, ``é`` is ``=C3=A9``);
- a piece that is empty is written ``=`` alone, and a piece that is exactly ``.`` or
  ``..`` is written ``=2E`` or ``=2E=2E``.

So ``note://welcome`` is ``SERVER/note:/=/welcome`` and ``file:///docs/readme.md`` is
``SERVER/file:/=/=/docs/readme.md``; the mapping is one to one (``=`` never stands for
itself), and ordinary patterns work on it: ``files/file:/=/=/docs/*`` is every resource
directly in ``/docs``, ``files/file:/=/=/docs/**`` everything below it.

An item that cannot be named this way (a tool name outside the alphabet, a URI with a
control character, a path longer than 512 characters or deeper than 16 segments) cannot be
granted: the gateway hides it and refuses it (:class:`~tether.errors.InvalidRequest` here,
with the reason).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from tether.errors import InvalidRequest
from tether.permissions import check_resource

__all__ = ["FIELD", "item_key", "item_path", "uri_path"]

# kind -> the field naming an item in a listing (and its pin)
FIELD = {"tool": "name", "resource": "uri", "prompt": "name"}

_KEEP = re.compile(r"[A-Za-z0-9._~:@+,-]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def item_key(kind: str, item: Mapping[str, Any]) -> str:
    """What identifies ``item`` among the upstream's items of ``kind``: its name (a tool,
    a prompt) or its URI (a resource); raises InvalidRequest when it has none."""
    value = item.get(FIELD[kind])
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"a {kind} without a {FIELD[kind]}")
    return value


def item_path(server: str, kind: str, item: Mapping[str, Any]) -> str:
    """The resource path grants name ``item`` by; raises InvalidRequest (the reason)
    when it cannot be named."""
    key = item_key(kind, item)
    path = f"{server}/{uri_path(key) if kind == 'resource' else key}"
    try:
        return check_resource("tools/call", path)
    except InvalidRequest:
        what = "URI" if kind == "resource" else "name"
        raise InvalidRequest(
            f"its {what} cannot be named in a grant (a path of at most 512 characters and "
            "16 segments of A-Z a-z 0-9 . _ ~ : @ + = , -)"
        ) from None


def uri_path(uri: str) -> str:
    """``uri`` as resource path segments (the module's rule); raises InvalidRequest for a
    URI with a control character or a lone surrogate."""
    if _CONTROL.search(uri) is not None:
        raise InvalidRequest("its URI contains a control character")
    try:
        return "/".join(_piece(piece) for piece in uri.split("/"))
    except UnicodeEncodeError:
        raise InvalidRequest("its URI is not valid Unicode") from None


def _piece(piece: str) -> str:
    if piece in ("", ".", ".."):
        return "=" if not piece else "=2E" * len(piece)
    return "".join(
        c if _KEEP.fullmatch(c) else "".join(f"={b:02X}" for b in c.encode("utf-8")) for c in piece
    )
