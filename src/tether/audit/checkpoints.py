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
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert, select

from tether.audit.log import AuditLog
from tether.audit.merkle import verify_consistency
from tether.audit.note import Checkpoint, Verifier, sign_checkpoint, verifier_key
from tether.config import Settings
from tether.errors import Conflict, InvalidRequest, VerificationFailed
from tether.store import Store, audit_checkpoints, audit_keys

__all__ = ["CheckpointRecord", "Checkpointer", "Checkpoints"]

log = logging.getLogger("tether.audit")


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
        self._key: Ed25519PrivateKey | None = None

    @property
    def origin(self) -> str:
        return self._settings.audit.origin or f"{self._settings.trust_domain}/tether/audit"

    @property
    def key_file(self) -> Path:
        return self._settings.home / "audit" / "audit-key.pem"

    # ---- the key -----------------------------------------------------------------------

    def has_key(self) -> bool:
        return self.key_file.exists()

    def verifier_key(self) -> str:
        """This home's verifier key (making the audit key if there is none yet)."""
        return verifier_key(self.origin, self._private())

    def _private(self) -> Ed25519PrivateKey:
        with self._lock:
            if self._key is None:
                self._key = self._load_or_create()
                self._publish(verifier_key(self.origin, self._key))
            return self._key

    def _load_or_create(self) -> Ed25519PrivateKey:
        path = self.key_file
        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            staging = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
            try:
                os.link(staging, path)  # atomic, and never replaces a key another process made
            except FileExistsError:
                pass
            finally:
                staging.unlink()
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"cannot read the audit key {path}: {exc}") from exc
        if not isinstance(loaded, Ed25519PrivateKey):
            raise InvalidRequest(f"the audit key {path} is not an Ed25519 key")
        return loaded

    def _publish(self, vkey: str) -> None:
        with self._store.write() as conn:
            known = conn.execute(
                select(audit_keys.c.verifier_key).where(audit_keys.c.verifier_key == vkey)
            ).first()
            if known is None:
                conn.execute(insert(audit_keys).values(verifier_key=vkey, created_at=self._clock()))

    def published_keys(self) -> list[str]:
        with self._store.read() as conn:
            return [r[0] for r in conn.execute(select(audit_keys.c.verifier_key))]

    def trusted(self, given: list[str] | None = None) -> list[Verifier]:
        """The keys a verification trusts: those given, else this home's audit key, else
        (a home without one) the verifier keys published in the store."""
        if given:
            return [Verifier.parse(text) for text in given]
        if self.has_key():
            return [Verifier.parse(self.verifier_key())]
        return [Verifier.parse(text) for text in self.published_keys()]

    # ---- checkpoints -------------------------------------------------------------------

    def list(self) -> list[CheckpointRecord]:
        with self._store.read() as conn:
            rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.size))
            return [_record(row) for row in rows]

    def latest(self) -> CheckpointRecord | None:
        with self._store.read() as conn:
            row = conn.execute(
                select(audit_checkpoints).order_by(audit_checkpoints.c.size.desc()).limit(1)
            ).first()
        return _record(row) if row is not None else None

    def make(self) -> CheckpointRecord:
        """Sign a checkpoint of the tree as it is now (or return the latest, if the tree
        has not grown since). Refused if the tree is not consistent with the latest."""
        key = self._private()
        vkey = verifier_key(self.origin, key)
        size, root = self._log.root()
        latest = self.latest()
        if latest is not None:
            old = self._open(latest)
            if old.size > size:
                raise VerificationFailed(
                    f"the log holds {size} events but checkpoint {old.size} was signed: "
                    f"events from {size + 1} on were removed; no checkpoint signed"
                )
            if old.size == size:
                if old.root != root:
                    raise VerificationFailed(
                        f"the tree of size {size} no longer has the checkpointed root; "
                        "no checkpoint signed"
                    )
                return latest
            proof = self._log.consistency(old.size, size)
            try:
                verify_consistency(old.size, size, old.root, root, proof)
            except VerificationFailed as exc:
                raise VerificationFailed(
                    f"the log is not consistent with checkpoint {old.size} ({exc.description}); "
                    "no checkpoint signed"
                ) from None
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
            with self._store.read() as conn:
                row = conn.execute(
                    select(audit_checkpoints).where(audit_checkpoints.c.size == size)
                ).one()
            if bytes(row.root) != root:
                raise VerificationFailed(
                    f"another checkpoint of size {size} has a different root"
                ) from None
            return _record(row)
        return record

    def _open(self, record: CheckpointRecord) -> Checkpoint:
        """The checkpoint in ``record`` once its signature verifies with a trusted key."""
        trusted = {v.text: v for v in self.trusted()}
        verifier = trusted.get(record.verifier_key)
        if verifier is None:
            published = set(self.published_keys())
            if record.verifier_key not in published:
                raise VerificationFailed(
                    f"checkpoint {record.size} is signed by an unknown key {record.verifier_key}"
                )
            verifier = Verifier.parse(record.verifier_key)
        checkpoint = verifier.open(record.note)
        if checkpoint.size != record.size or checkpoint.root != record.root:
            raise VerificationFailed(f"checkpoint {record.size} does not match its signed note")
        return checkpoint


def _record(row: Any) -> CheckpointRecord:
    return CheckpointRecord(
        size=int(row.size),
        root=bytes(row.root),
        note=str(row.note),
        verifier_key=str(row.verifier_key),
        signed_at=row.signed_at,
    )


class Checkpointer:
    """Signs a checkpoint every ``every`` events or ``interval`` seconds, whichever first."""

    def __init__(
        self, checkpoints: Checkpoints, log: AuditLog, every: int, interval: float
    ) -> None:
        self._checkpoints = checkpoints
        self._log = log
        self._every = every
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._signed = -1
        self._thread = threading.Thread(target=self._run, name="tether-checkpointer", daemon=True)
        log.on_commit(self._appended)

    def _appended(self, size: int) -> None:
        if self._signed >= 0 and size - self._signed >= self._every:
            self._wake.set()

    def start(self) -> None:
        latest = self._checkpoints.latest()
        self._signed = latest.size if latest is not None else 0
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if self._log.size() > self._signed:
                    self._signed = self._checkpoints.make().size
            except Exception:  # retried next tick; verification reports what is wrong
                log.exception("checkpoint failed")
