"""Results guarded on the way back: secrets taken out of what an upstream answers before
the agent sees it (issue 17, item 6).

Every string of a tool's result, a resource's contents and a prompt's messages
(``content[].text``, ``structuredContent``, ``contents[].text``, ``messages[]``, dict keys
included; not the base64 ``data``/``blob`` of an image, audio or binary resource, but that
of a textual MIME type, ``text/*``, JSON, YAML, a PEM file..., decoded, and encoded again
once redacted) is searched for secrets with discovery's rules
(:func:`tether.discover.redaction.redact_texts`: AI keys, detect-secrets' named
detectors), and each is replaced by
``[redacted:<type>:<fingerprint>]``, the fingerprint being discovery's, under this
installation's discovery key (:func:`tether.discover.key.home_key`), so that a key seen
in a result matches the finding ``tether discover scan`` reports for it.

The upstream's injected credentials were already taken out by the upstream session
(:mod:`tether.gateway.upstream`), as ``[redacted:injected-credential:<fingerprint>]``; they
are reported the same way, with the credential's NAME. What was taken out is summed up by
:func:`summary` for the result's audit event (type and fingerprint, how many; never a
value). The gateway (:meth:`tether.gateway.enforce.Gateway._forward`) scrubs each result
when ``[guard] scan_results`` is on (the default), and withholds a result it could not
check: a failure here is never a result shown unchecked.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tether.discover.interface import fingerprint, fingerprint_key
from tether.discover.key import home_key
from tether.discover.redaction import redact_texts

__all__ = [
    "INJECTED",
    "Found",
    "fingerprinter",
    "injected",
    "mark",
    "scrub",
    "summary",
]

INJECTED = "injected-credential"  # the type an upstream's injected credential is reported as
_LISTED = 100  # the most secrets one result's event lists one by one (all are counted)
# fields of a content item or resource that hold base64 bytes, not text
_BINARY = frozenset({"data", "blob"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Found:
    """A secret taken out of a result: its ``type``, its ``fingerprint`` and, for an
    injected credential, its NAME (``credential``)."""

    type: str
    fingerprint: str
    credential: str | None = None


def mark(kind: str, print_: str) -> str:
    """What a secret is replaced by: ``[redacted:<type>:<fingerprint>]``."""
    return f"[redacted:{kind}:{print_}]"


@functools.lru_cache(maxsize=8)
def _key(home: Path) -> bytes:
    return home_key(home)


def fingerprinter(home: Path) -> Callable[[str], str]:
    """Discovery's fingerprint of a value under the key of the installation at ``home``
    (read once per process; raises InvalidRequest when it cannot be read or made)."""
    key = _key(home)

    def of(value: str) -> str:
        with fingerprint_key(key):
            return fingerprint(value)

    return of


def scrub(value: T, home: Path) -> tuple[T, Counter[Found]]:
    """``value`` (a JSON-like result) with every secret in its strings replaced, and what
    was taken out. Raises on any failure (the caller withholds the result)."""
    texts: list[str] = []
    _collect(value, texts)
    with fingerprint_key(_key(home)):
        cleaned, counts = redact_texts(texts, lambda r: mark(r.type, r.fingerprint))
    if not counts:
        return value, Counter()
    rebuilt: T = _rebuild(value, iter(cleaned))
    return rebuilt, Counter({Found(r.type, r.fingerprint): n for r, n in counts.items()})


def _binary(node: Mapping[Any, Any], key: Any) -> bool:
    """An image's or audio's ``data``, a binary resource's ``blob``: base64, not text."""
    return key in _BINARY and ("mimeType" in node or node.get("type") in ("image", "audio"))


_TEXT_TYPES = frozenset(
    {"application/json", "application/xml", "application/yaml", "application/x-yaml",
     "application/toml", "application/javascript", "application/x-sh",
     "application/x-pem-file", "application/x-www-form-urlencoded"}
)  # fmt: skip


def _decoded(node: Mapping[Any, Any], item: Any) -> str | None:
    """The text a base64 ``data``/``blob`` of a textual MIME type (``text/*``, JSON, YAML,
    a PEM file ...) holds, or None: a text file served as a blob is read like text."""
    mime = node.get("mimeType")
    if not isinstance(item, str) or not isinstance(mime, str):
        return None
    mime = mime.split(";", 1)[0].strip().lower()
    if not (mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml"))):
        return None
    try:
        return base64.b64decode(item, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _collect(node: Any, texts: list[str]) -> None:
    if isinstance(node, str):
        texts.append(node)
    elif isinstance(node, dict):
        for key, item in node.items():
            _collect(key, texts)
            if not _binary(node, key):
                _collect(item, texts)
            elif (text := _decoded(node, item)) is not None:
                texts.append(text)
    elif isinstance(node, list | tuple):
        for item in node:
            _collect(item, texts)


def _rebuild(node: Any, texts: Any) -> Any:
    """``node`` with its strings taken, in :func:`_collect`'s order, from ``texts``."""
    if isinstance(node, str):
        return next(texts)
    if isinstance(node, dict):
        rebuilt: dict[Any, Any] = {}
        for key, item in node.items():
            new_key = _rebuild(key, texts)
            if not _binary(node, key):
                rebuilt[new_key] = _rebuild(item, texts)
            elif (text := _decoded(node, item)) is not None:
                cleaned = next(texts)
                same = cleaned == text
                rebuilt[new_key] = item if same else base64.b64encode(cleaned.encode()).decode()
            else:
                rebuilt[new_key] = item
        return rebuilt
    if isinstance(node, list | tuple):
        return [_rebuild(item, texts) for item in node]
    return node


def summary(found: Mapping[Found, int]) -> dict[str, Any]:
    """What a result's audit event says was taken out: how many in all, how many of each
    type, and each secret (type, fingerprint, the credential's NAME for an injected one,
    how many times; the first 100, most frequent first). Never a value."""
    types: Counter[str] = Counter()
    for item, count in found.items():
        types[item.type] += count
    ordered = sorted(found.items(), key=lambda pair: (-pair[1], pair[0].type, pair[0].fingerprint))
    secrets = [
        {
            "type": item.type,
            "fingerprint": item.fingerprint,
            **({"credential": item.credential} if item.credential else {}),
            "count": count,
        }
        for item, count in ordered[:_LISTED]
    ]
    detail: dict[str, Any] = {
        "count": sum(types.values()),
        "types": dict(sorted(types.items())),
        "secrets": secrets,
    }
    if len(ordered) > _LISTED:
        detail["unlisted"] = len(ordered) - _LISTED
    return detail


def injected(counts: Mapping[str, int], prints: Mapping[str, str]) -> Counter[Found]:
    """The injected credentials an upstream session took out of a result (NAME -> how
    many, NAME -> fingerprint), as found secrets."""
    return Counter(
        {Found(INJECTED, prints.get(name, ""), name): count for name, count in counts.items()}
    )
