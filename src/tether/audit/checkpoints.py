"""Signed checkpoints of the audit log, the audit key that signs them, and the thread
that makes them every N events or T milliseconds.

The audit key is Ed25519 and used for nothing else (not the token key). Its private half
is ``TETHER_HOME/audit/audit-key.pem`` (mode 0600, written once); its verifier key is
published in the store. A checkpoint is signed only after the previous one verified and
a consistency proof from it to the new tree verified: a log that was rewritten or cut
back gets no new checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, insert, select, text

from tether.audit.log import AuditLog
from tether.audit.merkle import EMPTY_ROOT, leaf_hash, verify_consistency
from tether.audit.note import Checkpoint, Verifier, sign_checkpoint, verifier_key
from tether.audit.record import has_columns
from tether.audit.tree import Frontier
from tether.config import Settings
from tether.errors import Conflict, InvalidRequest, VerificationFailed
from tether.jobs import Periodic
from tether.store import Store, audit_checkpoints, audit_keys
from tether.store.locks import StoreLock

__all__ = [
    "CheckpointRecord",
    "Checkpointer",
    "Checkpoints",
    "MalformedCheckpoint",
    "key_file_of",
    "kind_of",
    "origin_of",
    "pinned_keys",
    "raw_text",
]

log = logging.getLogger("tether.audit")


@dataclass(frozen=True, slots=True)
class MalformedCheckpoint:
    """A checkpoint row that holds a value of the wrong kind: the ``place``-th row in size
    order, and what is wrong with it."""

    place: int
    problem: str


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    size: int
    root: bytes
    note: str
    verifier_key: str
    signed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "note": self.note,
            "verifier_key": self.verifier_key,
            "signed_at": self.signed_at.isoformat(),
        }


class Checkpoints:
    def __init__(
        self, store: Store, settings: Settings, log: AuditLog, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._settings = settings
        self._log = log
        self._clock = clock
        self._lock = threading.Lock()
        self._making = threading.Lock()
        self._key: Ed25519PrivateKey | None = None

    @property
    def origin(self) -> str:
        return origin_of(self._settings)

    @property
    def key_file(self) -> Path:
        return key_file_of(self._settings)

    # ---- the key -----------------------------------------------------------------------

    def has_key(self) -> bool:
        return self.key_file.exists()

    def ensure_key(self) -> str:
        """Make this home's audit key if it has none (``tether init``); its verifier key."""
        with self._lock:
            if not self.key_file.exists():
                _write_once(self.key_file, _new_key_pem())
        vkey = self.verifier_key()
        self._publish(vkey)
        return vkey

    def verifier_key(self) -> str:
        return verifier_key(self.origin, self._private())

    def _private(self) -> Ed25519PrivateKey:
        with self._lock:
            if self._key is None:
                self._key = _load_key(self.key_file)
            return self._key

    def _publish(self, vkey: str) -> None:
        """List the key in the store (for operators to see; never trusted from there)."""
        try:
            with self._store.write() as conn:
                known = conn.execute(
                    select(audit_keys.c.verifier_key).where(audit_keys.c.verifier_key == vkey)
                ).first()
                if known is None:
                    conn.execute(
                        insert(audit_keys).values(verifier_key=vkey, created_at=self._clock())
                    )
        except Conflict:  # another process listed it at the same moment
            pass

    def published_keys(self) -> list[str]:
        with self._store.read() as conn:
            return [r[0] for r in conn.execute(select(audit_keys.c.verifier_key))]

    def trusted(self, given: Sequence[str] | None = None) -> list[Verifier]:
        """The keys a verification trusts: those given, else this home's audit key and
        ``[audit] verifier_keys``. Never a key read from the store it protects."""
        texts = list(given or ())
        if not texts:
            texts = list(self._settings.audit.verifier_keys)
            if self.has_key():
                texts.append(self.verifier_key())
        return [Verifier.parse(text) for text in dict.fromkeys(texts)]

    # ---- the anchor kept outside the store --------------------------------------------

    @property
    def anchor_file(self) -> Path:
        return self._settings.home / "audit" / "checkpoint"

    def anchor(self) -> Checkpoint | None:
        """The last checkpoint this home signed, as kept in ``TETHER_HOME`` (verified)."""
        try:
            note = self.anchor_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise VerificationFailed(f"cannot read {self.anchor_file}: {exc}") from None
        try:
            return self.open_note(note)
        except VerificationFailed as exc:
            raise VerificationFailed(
                f"{self.anchor_file} (the last checkpoint this home signed) does not verify: "
                f"{exc.description}; if the audit key or origin was changed on purpose, "
                "move that file away"
            ) from None

    def open_note(self, note: str, given: Sequence[str] | None = None) -> Checkpoint:
        """The checkpoint in ``note`` once a trusted key's signature verifies."""
        problems = []
        for verifier in self.trusted(given):
            try:
                checkpoint = verifier.open(note)
            except VerificationFailed as exc:
                problems.append(exc.description)
                continue
            if checkpoint.origin != self.origin:
                raise VerificationFailed(f"the checkpoint is for another log ({checkpoint.origin})")
            return checkpoint
        raise VerificationFailed(
            "; ".join(problems)
            or "no audit key to trust: pass --verifier-key, or set [audit] verifier_keys"
        )

    # ---- checkpoints -------------------------------------------------------------------

    def list(self) -> list[CheckpointRecord | MalformedCheckpoint]:
        """Every checkpoint row in size order; a row holding a value of the wrong kind (it
        was tampered with) comes back as a :class:`MalformedCheckpoint` saying which."""
        with self._store.read() as conn, raw_text(conn):
            rows = conn.execute(text(f"{_SELECT} ORDER BY size")).all()
        listed: list[CheckpointRecord | MalformedCheckpoint] = []
        for place, row in enumerate(rows, 1):
            try:
                listed.append(_record(row, place))
            except VerificationFailed as exc:
                listed.append(MalformedCheckpoint(place, exc.description))
        return listed

    def latest(self) -> CheckpointRecord | None:
        """The newest checkpoint; :class:`VerificationFailed` if its row was tampered with."""
        with self._store.read() as conn, raw_text(conn):
            row = conn.execute(text(f"{_SELECT} ORDER BY size DESC LIMIT 1")).first()
        return _record(row) if row is not None else None

    def make(self) -> CheckpointRecord:
        """Sign a checkpoint of the tree as it is now (or return the latest, if the tree
        has not grown since).

        The base is the newest of the store's latest checkpoint and this home's anchor
        (both verified with trusted keys; the store must not have lost the anchor). The
        events since the base are recomputed from their bodies onto the base's frontier,
        which must fold to the signed base root; the new root must be the stored tree's
        and a consistency proof from the base must verify. Anything else: no signature."""
        key = self._private()
        vkey = verifier_key(self.origin, key)
        with self._making:
            latest = self.latest()
            stored = self.open_note(latest.note) if latest is not None else None
            if (
                latest is not None
                and stored is not None
                and (stored.size != latest.size or stored.root != latest.root)
            ):
                raise VerificationFailed(f"checkpoint {latest.size} does not match its note")
            anchor = self.anchor()
            if anchor is not None and (stored is None or stored.size < anchor.size):
                raise VerificationFailed(
                    f"this home signed checkpoint {anchor.size} but the store's newest is "
                    f"{stored.size if stored else 'none'}: checkpoints were removed (if this "
                    f"home now uses another store, remove {self.anchor_file})"
                )
            size, root = self._log.root()
            if anchor is not None and stored is not None and anchor.size < stored.size:
                self._check_consistent(anchor, stored)  # the store's newer one extends ours
            base = stored or anchor or Checkpoint(self.origin, 0, EMPTY_ROOT)
            self._check_extends(base, size, root)
            if stored is not None and stored.size == size:
                assert latest is not None
                return latest
            note = sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, key)
            record = CheckpointRecord(size, root, note, vkey, self._clock())
            try:
                with self._store.write() as conn:
                    conn.execute(
                        insert(audit_checkpoints).values(
                            size=size,
                            root=root,
                            note=note,
                            verifier_key=vkey,
                            signed_at=record.signed_at,
                        )
                    )
            except Conflict:  # another process checkpointed this size first
                with self._store.read() as conn, raw_text(conn):
                    row = conn.execute(text(f"{_SELECT} WHERE size = :size"), {"size": size})
                    record = _record(row.one())
                if record.root != root:
                    raise VerificationFailed(
                        f"another checkpoint of size {size} has a different root"
                    ) from None
            if anchor is None or anchor.size < size:  # our own note, never going back
                _replace_file(self.anchor_file, note.encode())
            return record

    def _check_consistent(self, old: Checkpoint, new: Checkpoint) -> None:
        proof = self._log.consistency(old.size, new.size) if old.size else []
        if old.size:
            try:
                verify_consistency(old.size, new.size, old.root, new.root, proof)
            except VerificationFailed as exc:
                raise VerificationFailed(
                    f"checkpoint {new.size} in the store does not extend checkpoint {old.size} "
                    f"this home signed ({exc.description}); no checkpoint signed"
                ) from None

    def _check_extends(self, base: Checkpoint, size: int, root: bytes) -> None:
        if base.size > size:
            raise VerificationFailed(
                f"the log holds {size} events but checkpoint {base.size} was signed: "
                f"events {size + 1}..{base.size} were removed; no checkpoint signed"
            )
        if base.size == size:
            if base.root != root:
                raise VerificationFailed(
                    f"the tree of size {size} no longer has its signed root; no checkpoint signed"
                )
            return
        with self._store.read(snapshot=True) as conn:
            frontier = self._log.frontier_at(conn, base.size) if base.size else None
            if frontier is not None and frontier.root() != base.root:
                raise VerificationFailed(
                    f"the stored tree no longer has checkpoint {base.size}'s root; "
                    "no checkpoint signed"
                )
            frontier = frontier or Frontier()
            with self._log.scan(conn, after=base.size, upto=size) as rows:
                for seq, time, type, subject, body, leaf in rows:
                    if not _matches(frontier.size + 1, seq, time, type, subject, body, leaf):
                        raise VerificationFailed(
                            f"event {seq} does not match its leaf: no checkpoint signed "
                            "(run tether audit verify)"
                        )
                    frontier.append(bytes(leaf))
        if frontier.size != size or frontier.root() != root:
            raise VerificationFailed(
                f"the events since checkpoint {base.size} do not give the stored tree's root; "
                "no checkpoint signed (run tether audit verify)"
            )
        proof = self._log.consistency(base.size, size) if base.size else []
        if base.size:
            try:
                verify_consistency(base.size, size, base.root, root, proof)
            except VerificationFailed as exc:
                raise VerificationFailed(
                    f"the log is not consistent with checkpoint {base.size} "
                    f"({exc.description}); no checkpoint signed"
                ) from None


def _matches(
    expected: int, seq: Any, time: Any, type: Any, subject: Any, body: Any, leaf: Any
) -> bool:
    """A raw event row is the leaf it claims to be, in its place, with its columns."""
    if not (
        seq == expected
        and isinstance(body, bytes | memoryview)
        and isinstance(leaf, bytes | memoryview)
    ):
        return False
    data = bytes(body)
    return leaf_hash(data) == bytes(leaf) and has_columns(data, seq, subject, time, type)


def origin_of(settings: Settings) -> str:
    """The checkpoint origin line (and audit key name) of a configuration."""
    return settings.audit.origin or f"{settings.trust_domain}/tether/audit"


def key_file_of(settings: Settings) -> Path:
    return settings.home / "audit" / "audit-key.pem"


def pinned_keys(settings: Settings, given: Sequence[str] = ()) -> list[str]:
    """Verifier keys a client pins: those given, else the configured ones and this
    home's own audit key (if it has one)."""
    if given:
        return list(given)
    keys = list(settings.audit.verifier_keys)
    if key_file_of(settings).exists():
        keys.append(verifier_key(origin_of(settings), _load_key(key_file_of(settings))))
    return keys


def _new_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_key(path: Path) -> Ed25519PrivateKey:
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise InvalidRequest(
            f"this home has no audit key ({path}): run `tether init`, or copy the audit key "
            "of the home that signs this store's checkpoints"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read the audit key {path}: {exc}") from exc
    if not isinstance(loaded, Ed25519PrivateKey):
        raise InvalidRequest(f"the audit key {path} is not an Ed25519 key")
    return loaded


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _staged(path: Path, data: bytes) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return staging


def _write_once(path: Path, data: bytes) -> None:
    """Create ``path`` (0600) atomically; never replace a file another process made."""
    staging = _staged(path, data)
    try:
        os.link(staging, path)
    except FileExistsError:
        pass
    finally:
        staging.unlink()
    _fsync_dir(path.parent)


def _replace_file(path: Path, data: bytes) -> None:
    """Replace ``path`` (0600) atomically and durably."""
    os.replace(_staged(path, data), path)
    _fsync_dir(path.parent)


# The columns as stored, the time as text: nothing converted by SQLAlchemy or the
# driver, so a value of the wrong kind is read (and reported) rather than failing the read.
_SELECT = "SELECT size, root, note, verifier_key, CAST(signed_at AS TEXT) FROM audit_checkpoints"


def _record(row: Sequence[Any], place: int | None = None) -> CheckpointRecord:
    """A checkpoint row (as :data:`_SELECT` reads it) checked value by value; a value of
    the wrong kind is tampering: :class:`VerificationFailed` naming the row."""
    size, root, note, vkey, signed_at = row
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        where = f"the checkpoint row {place}" if place is not None else "a checkpoint row"
        raise VerificationFailed(f"{where} was changed: its size is {kind_of(size)}")
    at = _time(signed_at)
    if not isinstance(root, bytes | memoryview) or len(root) != 32:
        problem = f"its root is {kind_of(root)}, not a 32-byte hash"
    elif not isinstance(note, str):
        problem = f"its note is {kind_of(note)}"
    elif not isinstance(vkey, str):
        problem = f"its verifier key is {kind_of(vkey)}"
    elif at is None:
        problem = f"its signing time is {kind_of(signed_at)}"
    else:
        return CheckpointRecord(size, bytes(root), note, vkey, at)
    raise VerificationFailed(f"checkpoint {size} was changed: {problem}")


def _time(stored: object) -> datetime | None:
    """A stored time read as text (UTC; SQLite keeps it without a zone), if it is one."""
    try:
        at = datetime.fromisoformat(stored)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def kind_of(value: object) -> str:
    """What a stored value is, for a report (never the value: it may be anything)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool | int):
        return "a negative number" if value < 0 else "a number"
    if isinstance(value, float):
        return "a fraction"
    if isinstance(value, bytes | memoryview):
        return f"{len(value)} bytes"
    if isinstance(value, str):
        return "a text"
    return "a value of the wrong kind"


@contextlib.contextmanager
def raw_text(conn: Connection) -> Iterator[None]:
    """Read text as stored: on SQLite, text that is not UTF-8 (SQLite keeps whatever it is
    given) comes back as its bytes, a value of the wrong kind, instead of failing the read."""
    raw = conn.connection.dbapi_connection
    if not isinstance(raw, sqlite3.Connection):
        yield
        return
    before = raw.text_factory
    raw.text_factory = _text_or_bytes
    try:
        yield
    finally:
        raw.text_factory = before


def _text_or_bytes(data: bytes) -> str | bytes:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


class Checkpointer:
    """Signs a checkpoint every ``every`` events or ``interval`` seconds, whichever first
    (a background job: once per store when given the store's ``lock``)."""

    name = "checkpointer"

    def __init__(
        self,
        checkpoints: Checkpoints,
        log: AuditLog,
        every: int,
        interval: float,
        *,
        lock: StoreLock | None = None,
    ) -> None:
        self._checkpoints = checkpoints
        self._log = log
        self._every = every
        self._signed = -1
        self._job = Periodic(self.name, interval, self._tick, lock=lock)
        log.on_commit(self._appended)

    def _appended(self, size: int) -> None:
        if self._signed >= 0 and size - self._signed >= self._every:
            self._job.wake()

    def start(self) -> None:
        if not self._checkpoints.has_key():
            log.warning(
                "no audit key in this home (%s): this process signs no checkpoints",
                self._checkpoints.key_file,
            )
            return
        try:
            latest = self._checkpoints.latest()
        except VerificationFailed as exc:  # make() would refuse every time: sign nothing
            log.error("no checkpoints are signed: %s (run tether audit verify)", exc.description)
            return
        self._signed = latest.size if latest is not None else 0
        self._job.start()

    def stop(self) -> None:
        self._job.stop()

    def _tick(self) -> None:
        if self._log.size() > self._signed:  # verification reports what is wrong, if any
            self._signed = self._checkpoints.make().size
