"""Secrets in free texts (an MCP tool's result, a resource's contents), taken out.

The gateway shows an agent what an upstream answered only after every secret in it is
replaced (:mod:`tether.gateway.scrub`). The secrets are found by discovery's own rules
(:mod:`tether.discover.secrets`), the high-confidence part of them, the part that needs no
file type or variable name to be right: the prefixed AI keys of
:mod:`tether.discover.ai_keys`, the keys without a prefix assigned to a name that says
whose they are (``MISTRAL_API_KEY=...``), and detect-secrets' named detectors (AWS,
GitHub, GitLab, Slack, Stripe, JWTs, PEM private keys, basic-auth URLs ...), with the same
placeholder and false-positive filters; and a base64 run (either alphabet) that decodes
to such a key or to a PEM private key is taken out whole (a Kubernetes Secret's data, a
key file pasted encoded). Not the keyword and entropy rules: in a text that
is not a configuration file they would take out ordinary words and hashes. Unlike a file,
a text cannot allowlist its own secrets (detect-secrets' ``pragma`` comments are ignored).

Each secret is replaced wherever its value occurs, in every text of the result (a PEM
private key: the whole block) by ``mark(Redaction(type, fingerprint))``; the fingerprint
is discovery's (:func:`tether.discover.interface.fingerprint`, under the key of the
current :func:`~tether.discover.interface.fingerprint_key` context), so a key the gateway
took out of a result matches the finding that discovery reports for it. No value leaves
this module.

Speed: a text is looked at only when it holds a run of 16 or more non-space characters
(every secret these rules find does, but for a basic-auth URL shorter than that); the
texts that do are joined by newlines and searched once, each detector first testing the
whole text for a literal or a gate pattern (:mod:`tether.discover.detectors`), so a result
with nothing that looks like a key costs a few passes of C code over its text. Each
detector's own patterns then run only on the lines the gates mark, and a PEM block is
looked for at most 64 KiB past its ``BEGIN`` line.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from tether.discover import detectors
from tether.discover.classify import find_keys
from tether.discover.interface import fingerprint
from tether.discover.secrets import _PEM, _filter, _hinted, _patterned, _pem_body, _Text

__all__ = ["MAX_SECRETS", "Redaction", "TooManySecrets", "redact_texts"]

MAX_SECRETS = 1000  # distinct secrets in one result: more is refused (not checked further)
_RUN = re.compile(r"\S{16,}")
_BEGIN = re.compile("-----BEGIN ")
_END = re.compile("-----END ")
_PEM_SPAN = 64 * 1024  # the longest PEM block looked for (as discovery's scanner does)
# a line longer than _LONG is searched in windows of _WINDOW characters, each overlapping
# the one before by _OVERLAP: detect-secrets' patterns may take time quadratic in the
# length of what they run over, so each runs over a bounded window (linear in all)
_LONG, _WINDOW, _OVERLAP = 4096, 1024, 256
# a base64 run (standard or URL-safe alphabet) long enough to hold a key: decoded, and
# taken out whole when what it encodes is a key (a Kubernetes Secret's data, a Basic
# credential, a key file pasted encoded); longer runs are blobs, not keys
_B64 = re.compile(r"(?<![A-Za-z0-9+/_=-])[A-Za-z0-9+/_-]{24,}={0,2}(?![A-Za-z0-9+/_=-])")
_B64_MAX = 8192


class TooManySecrets(ValueError):
    """A text holds more distinct secrets than :data:`MAX_SECRETS`."""


@dataclass(frozen=True, slots=True)
class Redaction:
    """A secret taken out of a text: its credential ``type`` (``aws-access-key``,
    ``openai-api-key``, ``private-key`` ...) and its ``fingerprint``, never its value."""

    type: str
    fingerprint: str


Mark = Callable[[Redaction], str]


def redact_texts(texts: Sequence[str], mark: Mark) -> tuple[list[str], Counter[Redaction]]:
    """``texts`` with every secret found in any of them replaced by ``mark`` of it, in
    every text; and how many times each secret was replaced. Raises
    :class:`TooManySecrets`."""
    candidates = [text for text in texts if _RUN.search(text)]
    if not candidates:
        return list(texts), Counter()
    keys: dict[str, Redaction] = {}
    source = _Text("\n".join(line for text in candidates for line in _lines(text)))
    engine = detectors.engine()
    found = [*_patterned(engine, source, False, pem=False), *_hinted(source)]
    first = {hit.value: hit for hit in reversed(found)}  # a value is judged once
    for hit in _filter(list(first.values()), source, file=False):
        redaction = Redaction(hit.type, fingerprint(hit.value))
        keys.setdefault(hit.value, redaction)
        if hit.type == "jwt":  # the whole token, signature included (same fingerprint)
            keys.setdefault(_whole_jwt(hit.value, source.text), redaction)
        _check(len(keys))
    for run, redaction in _encoded(candidates):
        keys.setdefault(run, redaction)
        _check(len(keys))
    blocks = sum(1 for text in candidates if "PRIVATE KEY" in text for _ in _pem_blocks(text))
    if not keys and not blocks:
        return list(texts), Counter()
    replacer = _Replacer(keys, mark)
    return [replacer(text) for text in texts], replacer.counts


def _whole_jwt(value: str, text: str) -> str:
    """A JWT as it stands in ``text``: detect-secrets' pattern may end before the
    signature (``header.payload.``), which would stay readable after the redaction; the
    token's following base64url segments are taken with it."""
    match = re.compile(re.escape(value) + r"[A-Za-z0-9_\-]{0,8192}(\.[A-Za-z0-9_\-]{1,8192}){0,3}")
    found = match.search(text)
    return found.group() if found is not None else value


def _encoded(texts: Sequence[str]) -> Iterator[tuple[str, Redaction]]:
    """Each base64 run of ``texts`` that encodes a key (the prefixed AI keys, AWS access
    key IDs, GitHub tokens) or a PEM private key, with the secret it encodes (its type,
    and the fingerprint of the decoded secret: what discovery reports for it)."""
    seen: set[str] = set()
    for text in texts:
        for match in _B64.finditer(text):
            run = match.group()
            if len(run) > _B64_MAX or run in seen:
                continue
            seen.add(run)
            decoded = _decode(run)
            if decoded is None:
                continue
            if "PRIVATE KEY-----" in decoded:
                yield run, Redaction("private-key", fingerprint(decoded.strip()))
                continue
            for key in find_keys(decoded):
                yield run, Redaction(key.type, fingerprint(key.value))
                break


def _decode(run: str) -> str | None:
    """``run`` decoded from base64 (either alphabet, padding optional) as UTF-8 text, or
    None when it is not."""
    compact = run.rstrip("=")
    if len(compact) % 4 == 1:
        return None
    padded = compact + "=" * (-len(compact) % 4)
    if "-" in padded or "_" in padded:
        if "+" in padded or "/" in padded:
            return None
        padded = padded.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(padded, validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None


def _check(count: int) -> None:
    if count > MAX_SECRETS:
        raise TooManySecrets(f"more than {MAX_SECRETS} distinct secrets in one text")


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text``, a long one as overlapping windows."""
    for line in text.split("\n"):
        if len(line) <= _LONG:
            yield line
            continue
        step = _WINDOW - _OVERLAP
        for at in range(0, len(line) - _OVERLAP, step):
            yield line[at : at + _WINDOW]


def _pem_blocks(text: str) -> Iterator[tuple[int, int, str]]:
    """Each PEM private key block in ``text`` (start, end, body): each ``BEGIN`` looked
    at once, and only when an ``END`` follows within 64 KiB (linear in the text)."""
    ends = [match.start() for match in _END.finditer(text)]
    done = 0
    for begin in _BEGIN.finditer(text):
        start = begin.start()
        at = bisect.bisect_left(ends, start)
        if start < done or at == len(ends) or ends[at] > start + _PEM_SPAN:
            continue
        match = _PEM.match(text, start, min(len(text), start + _PEM_SPAN))
        body = _pem_body(match) if match is not None else None
        if match is not None and body is not None:
            done = match.end()
            yield start, done, body


class _Replacer:
    """Replaces the secrets found in each text it is given, counting each."""

    def __init__(self, keys: dict[str, Redaction], mark: Mark):
        self.counts: Counter[Redaction] = Counter()
        self._keys, self._mark = keys, mark
        ordered = sorted(keys, key=len, reverse=True)  # a longer secret wins over its parts
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __call__(self, text: str) -> str:
        if "PRIVATE KEY" in text:
            text = self._replace_blocks(text)
        if self._pattern is not None:
            text = self._pattern.sub(self._key, text)
        return text

    def _key(self, match: re.Match[str]) -> str:
        return self._use(self._keys[match.group()])

    def _replace_blocks(self, text: str) -> str:
        """``text`` with each PEM private key block replaced whole (fingerprinted by its
        body, as discovery does)."""
        pieces: list[str] = []
        done = 0
        for start, end, body in _pem_blocks(text):
            pieces += [text[done:start], self._use(Redaction("private-key", fingerprint(body)))]
            done = end
        return "".join([*pieces, text[done:]]) if pieces else text

    def _use(self, redaction: Redaction) -> str:
        self.counts[redaction] += 1
        _check(len(self.counts))
        return self._mark(redaction)
