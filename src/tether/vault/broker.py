"""The vault broker: hands out vault secrets and tokens, remembers who got what, and
takes it all back when an agent is killed.

* :meth:`Broker.read` fetches a KV field for the gateway's upstream credentials, cached
  for ``cache_ms``; nothing is recorded per agent.
* :meth:`Broker.issue` gives an agent (whose grant the caller checked) a KV field or a new
  token, and records it: a ``vault_issued`` row and a ``credential.issued`` event in one
  transaction, under the caller's *hold* (a lock on the agent's row and a check that it is
  still active). A token's row is *announced* (no accessor yet) before the vault is asked,
  and settled after: a kill that commits in between waits for the announced row, and the
  issue, finding its agent killed, revokes the token before it refuses. So across
  processes sharing the store, when a kill returns no token of its agents is alive (or its
  report says which one it could not wait for). Events hold the reference, the KV version
  or the lease length, never the value, the token or its accessor (the accessor is not a
  secret to Vault, but it is a handle to look up and revoke the token, and the append-only
  log is exported: it stays in the ``vault_issued`` row, which is what the kill switch
  needs).
* :meth:`Broker.revoke_and_rotate` is the kill switch's part: it waits for the tokens
  being issued to the agents, then revokes every live token the agents received and
  rotates every KV field they read. A rotation writes a new version of the whole secret
  (other fields kept) with the field's new value, guarded by check-and-set; it affects
  everybody who holds the old value, so every row of that path and field issued before the
  rotation is marked rotated, whichever agent it names. The ``credential.rotated`` event
  names the versions the killed agents read as ``compromised_versions``. Nothing raises
  per item: failures are collected and the rows stay unmarked, so a later call (the
  sweeper's retry) does what is left.

Dynamic tokens are orphans (``auth/token/create-orphan``): their life is their own TTL,
at most ``dynamic_ttl_max``, whatever happens to the broker's token (an AppRole login is
replaced as it expires). They are not renewable, keep Vault's ``default`` policy (so an
agent can look up and revoke its own token) and carry the agent's ID in their display
name and ``meta.tether_agent``. Vault only lets a non-root broker hand out policies it
holds itself, so the broker's token needs each policy it issues, plus ``update`` on
``auth/token/create-orphan`` and ``auth/token/revoke-accessor``, and ``read``, ``create``,
``update`` on the KV mount's ``data/`` paths (Vault takes the most specific path of all a
token's policies, so a handed-out policy naming a narrower KV path shadows the broker's
rights there unless the broker's policy names that path too).

**The broker's own token must not hold ``root``** (nor a policy that grants ``sudo`` on
``auth/token/*``): a root broker can mint any policy, so a single slip in what is asked
becomes a root token. :meth:`Broker.root_warning` (``auth/token/lookup-self``) says so,
and ``tether up`` prints and logs it. Whatever the broker's token, every token the vault
returns is checked: its policies must be exactly the one asked for plus ``default``,
compared as the vault compares policy names, and never ``root``; any other answer is
revoked at once and refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from tether.audit.record import Entry
from tether.errors import Denied, InvalidRequest
from tether.services import Services
from tether.store import vault_issued
from tether.vault.client import NewToken, VaultClient, VaultUnavailable
from tether.vault.refs import VaultRef, as_ref, vault_policy_name
from tether.vault.rotation import RotationFailed, new_value

__all__ = ["Broker", "Brokered", "Hold", "VaultActions"]

log = logging.getLogger("tether.vault")

_CHUNK = 500  # agent IDs per IN (...) list
_CACHE_MAX = 1024

# Locks the agent's row in the issue's transaction; raises if it may not receive credentials.
Hold = Callable[[Connection], None]


@dataclass(frozen=True, slots=True)
class Brokered:
    """What :meth:`Broker.issue` handed out. ``value`` is the secret or the token."""

    ref: str
    value: str = field(repr=False)
    kind: str  # static | dynamic
    version: int | None = None  # static: the KV version read
    lease_seconds: int | None = None  # dynamic: the token's TTL
    accessor: str | None = field(default=None, repr=False)  # dynamic
    expires_at: datetime | None = None  # dynamic: when the token dies

    def to_dict(self) -> dict[str, Any]:
        """The body of ``POST /v1/credentials``: ``ref``, ``kind``, ``value`` and either
        ``version`` (static) or ``lease_seconds`` and ``expires_at`` (dynamic). Never the
        accessor."""
        body: dict[str, Any] = {"ref": self.ref, "kind": self.kind, "value": self.value}
        if self.kind == "static":
            body["version"] = self.version
        else:
            body["lease_seconds"] = self.lease_seconds
            body["expires_at"] = self.expires_at.isoformat() if self.expires_at else None
        return body


@dataclass
class VaultActions:
    """What :meth:`Broker.revoke_and_rotate` did, and what failed (retry later). No secrets."""

    leases_revoked: list[str] = field(default_factory=list)
    secrets_rotated: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "leases_revoked": list(self.leases_revoked),
            "secrets_rotated": list(self.secrets_rotated),
            "failures": list(self.failures),
        }


class Broker:
    """Vault secrets and tokens for agents and upstreams (see the module doc)."""

    def __init__(self, services: Services, *, client: VaultClient | None = None) -> None:
        settings = services.settings.vault
        if not settings.configured:
            raise InvalidRequest("the vault broker needs [vault] address in tether.toml")
        self._settings = settings
        self._store = services.store
        self._log = services.events
        self._clock = services.clock
        self._client = client if client is not None else VaultClient(settings)
        self._cache: dict[str, tuple[str, datetime]] = {}
        self._cache_lock = threading.Lock()
        self._generation = 0  # moved by forget(): a read begun before it caches nothing
        self.pause: Callable[[float], None] = time.sleep  # a kill waiting for an issue

    @property
    def address(self) -> str:
        """The vault's address as messages show it."""
        return self._client.address

    def root_warning(self) -> str | None:
        """A warning when the broker's own token holds the ``root`` policy (or it cannot
        be looked up); None when it does not."""
        try:
            held = {vault_policy_name(p) for p in self._client.own_policies()}
        except VaultUnavailable as exc:
            return f"could not check the policies of Tether's vault token: {exc.description}"
        if "root" not in held:
            return None
        return (
            f"Tether's token for the vault at {self.address} holds the root policy: give the "
            "broker a token with only the policies it hands out and the paths it needs "
            "(see tether.vault.broker)"
        )

    # ---- upstream credentials -----------------------------------------------------------

    def read(self, ref: str | VaultRef) -> str:
        """The current value of a ``vault:`` field, cached for ``cache_ms``. Raises
        :class:`VaultUnavailable` (503) naming the reference, never the value."""
        parsed = as_ref(ref)
        if parsed.kind != "static":
            raise InvalidRequest(f"{parsed.text}: only vault:<path>#<field> can be read")
        now = self._clock()
        with self._cache_lock:
            hit = self._cache.get(parsed.text)
            generation = self._generation
        if hit is not None and now < hit[1]:
            return hit[0]
        value, _ = self._field(parsed)
        if self._settings.cache_ms > 0:
            until = now + timedelta(milliseconds=self._settings.cache_ms)
            with self._cache_lock:
                if generation == self._generation:  # no rotation while it was fetched
                    if len(self._cache) >= _CACHE_MAX:
                        self._cache.clear()
                    self._cache[parsed.text] = (value, until)
        return value

    def forget(self, ref: str | VaultRef) -> None:
        """Drop the cached value of ``ref`` (it was rotated)."""
        with self._cache_lock:
            self._cache.pop(as_ref(ref).text, None)
            self._generation += 1

    # ---- agents' credentials ------------------------------------------------------------

    def issue(
        self,
        agent_id: str,
        ref: str | VaultRef,
        max_ttl_seconds: int,
        *,
        hold: Hold | None = None,
    ) -> Brokered:
        """Give ``agent_id`` the credential ``ref`` names and record it (row and
        ``credential.issued`` event, one transaction). A token is created with a TTL of
        ``min(max_ttl_seconds, dynamic_ttl_max)``; if recording fails it is revoked again.

        ``hold(conn)`` runs first in every transaction of the issue: it locks the agent's
        row and raises if the agent may no longer receive credentials (killed since the
        decision). A token is announced in ``vault_issued`` before the vault is asked, and
        checked again after: a kill that commits meanwhile waits for it (see
        :meth:`revoke_and_rotate`), and the issue revokes it and raises the refusal."""
        parsed = as_ref(ref)
        if isinstance(max_ttl_seconds, bool) or not isinstance(max_ttl_seconds, int):
            raise InvalidRequest("max_ttl_seconds must be an integer")
        if max_ttl_seconds < 1:
            raise InvalidRequest("max_ttl_seconds must be at least 1")
        if parsed.kind == "static":
            return self._issue_static(agent_id, parsed, hold)
        return self._issue_dynamic(agent_id, parsed, max_ttl_seconds, hold)

    def _issue_static(self, agent_id: str, ref: VaultRef, hold: Hold | None) -> Brokered:
        # recorded after the read, under the hold: a kill committed before this sees the
        # row (and rotates), one committed after makes hold refuse (nobody got the value)
        value, version = self._field(ref)
        with self._store.write() as conn:
            if hold is not None:
                hold(conn)
            conn.execute(
                insert(vault_issued).values(
                    agent_id=agent_id,
                    ref=ref.text,
                    kind=ref.kind,
                    path=ref.path,
                    field=ref.field,
                    version=version,
                    issued_at=self._clock(),
                )
            )
            self._issued(conn, agent_id, ref, {"version": version})
        return Brokered(ref.text, value, "static", version=version)

    def _issued(
        self, conn: Connection, agent_id: str, ref: VaultRef, shown: dict[str, Any]
    ) -> None:
        """The ``credential.issued`` event: the reference and ``shown``, never a secret."""
        self._log.append(
            conn,
            Entry.of(
                "credential.issued",
                actor=agent_id,
                subject=agent_id,
                resource=ref.resource,
                detail={"ref": ref.text, "kind": ref.kind, **shown},
            ),
        )

    def _issue_dynamic(
        self, agent_id: str, ref: VaultRef, max_ttl_seconds: int, hold: Hold | None
    ) -> Brokered:
        ttl = min(max_ttl_seconds, int(self._settings.dynamic_ttl_max.total_seconds()))
        if ttl < 1:  # a TTL of 0 would mean the vault's default
            raise InvalidRequest("[vault] dynamic_ttl_max must be at least one second")
        intent = self._announce(agent_id, ref, ttl, hold)
        try:
            made = self._client.create_token(
                ref.path,
                ttl,
                display_name=f"tether-{agent_id}",
                meta={"tether_agent": agent_id, "tether_ref": ref.text},
                what=ref.text,
            )
        except BaseException:
            self._withdraw(intent)  # no token reached anybody
            raise
        try:
            self._check_policies(ref, made.policies)
            if not 0 < made.lease_seconds <= ttl:  # fail closed on a token that outlives it
                raise VaultUnavailable(
                    f"{ref.text}: the vault at {self.address} made a token with a lease of "
                    f"{made.lease_seconds} s instead of at most {ttl} s"
                )
            expires_at = self._clock() + timedelta(seconds=made.lease_seconds)
            self._settle(intent, agent_id, ref, made, expires_at, hold)
        except BaseException:
            self._take_back(intent, ref, made)
            raise
        return Brokered(
            ref.text,
            made.token,
            "dynamic",
            lease_seconds=made.lease_seconds,
            accessor=made.accessor,
            expires_at=expires_at,
        )

    def _announce(self, agent_id: str, ref: VaultRef, ttl: int, hold: Hold | None) -> int:
        """The ``vault_issued`` row of a token about to be asked for (no accessor yet; its
        ``expires_at`` bounds the life of whatever the vault makes). Its id."""
        now = self._clock()
        with self._store.write() as conn:
            if hold is not None:
                hold(conn)
            made = conn.execute(
                insert(vault_issued).values(
                    agent_id=agent_id,
                    ref=ref.text,
                    kind=ref.kind,
                    path=ref.path,
                    issued_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
            key = made.inserted_primary_key
            assert key is not None
            return int(key[0])

    def _settle(
        self,
        intent: int,
        agent_id: str,
        ref: VaultRef,
        made: NewToken,
        expires_at: datetime,
        hold: Hold | None,
    ) -> None:
        """Record the token on its announced row and the ``credential.issued`` event, in
        one transaction under the hold; refuse if a kill closed the row meanwhile."""
        with self._store.write() as conn:
            if hold is not None:
                hold(conn)
            settled = conn.execute(
                update(vault_issued)
                .where(*_announced(intent))
                .values(accessor=made.accessor, expires_at=expires_at)
            ).rowcount
            if settled != 1:
                raise Denied(
                    f"{ref.text}: {agent_id} may no longer receive credentials; "
                    "the token was revoked",
                    ("the agent's credentials were taken back while this one was issued",),
                )
            self._issued(
                conn,
                agent_id,
                ref,
                {"lease_seconds": made.lease_seconds, "expires_at": expires_at.isoformat()},
            )

    def _take_back(self, intent: int, ref: VaultRef, made: NewToken) -> None:
        """Revoke a token that will not be handed out, then close its row (with its
        accessor, so a kill or the sweeper revokes it if the vault did not answer now)."""
        try:
            self._client.revoke_accessor(made.accessor, what=ref.text)
            revoked: datetime | None = self._clock()
        except VaultUnavailable as exc:  # the row keeps the accessor: a kill retries
            log.warning("a token for %s that was not handed out was not revoked: %s", ref, exc)
            revoked = None
        try:  # no event: nothing was issued (the refusal is recorded by the caller)
            with self._store.write() as conn:
                conn.execute(
                    update(vault_issued)
                    .where(vault_issued.c.id == intent)
                    .values(accessor=made.accessor, revoked_at=revoked)
                )
        except Exception as exc:  # it dies at its TTL; a kill waits for the row until then
            log.warning(
                "the token for %s that was taken back is not on record: %s",
                ref,
                type(exc).__name__,
            )

    def _withdraw(self, intent: int) -> None:
        """Drop the row of a token the vault did not hand over (nobody holds one)."""
        try:
            with self._store.write() as conn:
                conn.execute(delete(vault_issued).where(*_announced(intent)))
        except Exception as exc:  # the row ends at its expires_at
            log.warning("an announced token row was not withdrawn: %s", type(exc).__name__)

    def _check_policies(self, ref: VaultRef, policies: Collection[str]) -> None:
        """Refuse a token whose policies are not exactly ``ref``'s plus ``default`` (as
        the vault compares names), or that holds ``root`` at all."""
        got = set(policies)
        asked = {ref.path, "default"}
        if got == asked and ref.path == vault_policy_name(ref.path):
            return
        rooted = "root" in {vault_policy_name(p) for p in got}
        which = "the root policy" if rooted else f"other policies than {ref.path} and default"
        raise VaultUnavailable(
            f"{ref.text}: the vault at {self.address} made a token with {which}; it was revoked"
        )

    def _field(self, ref: VaultRef) -> tuple[str, int]:
        data, version = self._client.read_secret(ref.path, what=ref.text)
        value = data.get(ref.field or "")
        if value is None:
            raise VaultUnavailable(
                f"{ref.text}: the secret in the vault at {self.address} has no field "
                f"{ref.field!r} (version {version})"
            )
        if not isinstance(value, str) or not value:
            raise VaultUnavailable(
                f"{ref.text}: the field in the vault at {self.address} is not a non-empty "
                f"string (version {version})"
            )
        return value, version

    # ---- the kill switch ----------------------------------------------------------------

    def revoke_and_rotate(self, agent_ids: Collection[str], by: str) -> VaultActions:
        """Revoke the live tokens of ``agent_ids`` and rotate the KV fields they read; what
        is done already is skipped, what fails is reported (and left for a retry)."""
        actions = VaultActions()
        ids = sorted(set(agent_ids))
        self._await_issues(ids, actions)
        rows = self._pending(ids)
        if not rows:
            return actions
        down: VaultUnavailable | None = None  # once nothing answers, stop asking
        for row in rows:
            if row.kind == "dynamic":
                down = self._revoke(row, by, actions, down)
        groups: dict[tuple[str, str], list[Row[Any]]] = {}
        for row in rows:
            if row.kind == "static":
                groups.setdefault((row.path, row.field), []).append(row)
        for (path, name), held in groups.items():
            down = self._rotate(path, name, held, by, actions, down)
        return actions

    def _await_issues(self, agent_ids: Sequence[str], actions: VaultActions) -> None:
        """Wait until no token announced for ``agent_ids`` is still being asked for: each
        gets its accessor (then it is revoked like any other), or is taken back by its
        issue, or ends at its ``expires_at``. One whose issue seems gone (older than the
        wait) or does not finish in time is a failure: it was not handed out (the issue's
        hold refuses a killed agent), but it may live until its ``expires_at``."""
        limit = 3 * self._settings.timeout_ms / 1000 + 1.0  # an issue's vault calls, and more
        deadline = time.monotonic() + limit
        lost: set[int] = set()
        while True:
            now = self._clock()
            waiting: list[Row[Any]] = []
            for row in self._rows(agent_ids, _ANNOUNCED):
                if row.expires_at <= now:
                    self._expire(row.id, now)
                elif row.id in lost:
                    continue
                elif now - row.issued_at > timedelta(seconds=limit):
                    lost.add(row.id)
                    actions.failures.append(_unfinished(row, "its issue did not finish"))
                else:
                    waiting.append(row)
            if not waiting:
                return
            if time.monotonic() >= deadline:
                actions.failures.extend(
                    _unfinished(row, f"still being issued after {limit:g} s") for row in waiting
                )
                return
            self.pause(0.005)

    def _expire(self, row_id: int, now: datetime) -> None:
        """Close an announced row whose token (if any was made) is dead by now."""
        try:
            with self._store.write() as conn:
                conn.execute(update(vault_issued).where(*_announced(row_id)).values(revoked_at=now))
        except Exception as exc:  # retried on the next look
            log.warning("an expired announced token row was not closed: %s", type(exc).__name__)

    def _rows(self, agent_ids: Sequence[str], where: Any) -> list[Row[Any]]:
        """The ``vault_issued`` rows of ``agent_ids`` that match ``where``, oldest first."""
        found: list[Row[Any]] = []
        with self._store.read() as conn:
            for chunk in _chunks(agent_ids, _CHUNK):
                found.extend(
                    conn.execute(
                        select(vault_issued).where(vault_issued.c.agent_id.in_(chunk), where)
                    )
                )
        found.sort(key=lambda r: r.id)
        return found

    def _pending(self, agent_ids: Sequence[str]) -> list[Row[Any]]:
        """Rows of these agents with something left to do, oldest first."""
        return self._rows(
            agent_ids,
            (
                (vault_issued.c.kind == "dynamic")
                & vault_issued.c.revoked_at.is_(None)
                & vault_issued.c.accessor.is_not(None)
            )
            | (
                (vault_issued.c.kind == "static")
                & vault_issued.c.rotated_at.is_(None)
                & vault_issued.c.field.is_not(None)
            ),
        )

    def _revoke(
        self, row: Row[Any], by: str, actions: VaultActions, down: VaultUnavailable | None
    ) -> VaultUnavailable | None:
        what = f"vault-token/{row.path} (accessor …{row.accessor[-4:]}) of {row.agent_id}"
        if down is not None:
            actions.failures.append(f"{what}: not tried, {down.description}")
            return down
        try:
            live = self._client.revoke_accessor(row.accessor, what=what)
        except VaultUnavailable as exc:
            actions.failures.append(_failure(what, exc))
            return exc if exc.unreachable else None
        try:
            with self._store.write() as conn:
                marked = conn.execute(
                    update(vault_issued)
                    .where(vault_issued.c.id == row.id, vault_issued.c.revoked_at.is_(None))
                    .values(revoked_at=self._clock())
                ).rowcount
                if marked:
                    self._log.append(
                        conn,
                        Entry.of(
                            "credential.revoked",
                            actor=by,
                            subject=row.agent_id,
                            resource=f"vault-token/{row.path}",
                            detail={"ref": row.ref, "kind": "dynamic", "was_live": live},
                        ),
                    )
        except Exception as exc:
            actions.failures.append(f"{what}: revoked, but not recorded ({type(exc).__name__})")
            return None
        if marked:
            actions.leases_revoked.append(what if live else f"{what}, gone already")
        return None

    def _rotate(
        self,
        path: str,
        name: str,
        held: list[Row[Any]],
        by: str,
        actions: VaultActions,
        down: VaultUnavailable | None,
    ) -> VaultUnavailable | None:
        ref = f"vault:{path}#{name}"
        what = f"vault/{path}#{name}"
        if down is not None:
            actions.failures.append(f"{what}: not tried, {down.description}")
            return down
        try:
            # every row issued before this point read the value being replaced (a row is
            # written after its read), so marking ids up to here is exact
            with self._store.read() as conn:
                upto = conn.execute(
                    select(func.max(vault_issued.c.id)).where(*_same_field(path, name))
                ).scalar()
            if upto is None:  # a concurrent call rotated it already
                return None
            data, old = self._client.read_secret(path, what=what)
            if name not in data:
                raise VaultUnavailable(
                    f"{what}: the secret in the vault at {self.address} has no field {name!r} "
                    f"any more (version {old})"
                )
            value = new_value(self._settings.rotation_command, path, name)
            new = self._client.write_secret(path, {**data, name: value}, cas=old, what=what)
        except VaultUnavailable as exc:
            actions.failures.append(_failure(what, exc))
            return exc if exc.unreachable else None
        except RotationFailed as exc:
            actions.failures.append(f"{what}: {exc}")
            return None
        except Exception as exc:  # the store read: nothing was changed
            actions.failures.append(f"{what}: not rotated ({type(exc).__name__})")
            return None
        self.forget(ref)
        killed = sorted({r.agent_id for r in held})
        try:
            with self._store.write() as conn:
                others = self._mark_rotated(conn, path, name, upto, set(killed))
                self._log.append(
                    conn,
                    Entry.of(
                        "credential.rotated",
                        actor=by,
                        subject=killed[0],
                        resource=f"vault/{path}",
                        detail={
                            "ref": ref,
                            "path": path,
                            "field": name,
                            "old_version": old,
                            "new_version": new,
                            "compromised_versions": sorted({r.version for r in held}),
                            "agents": killed,
                            "also_held_by": others,
                        },
                    ),
                )
        except Exception as exc:
            actions.failures.append(
                f"{what}: rotated to v{new} but not recorded ({type(exc).__name__}); "
                "it will be rotated again"
            )
            return None
        actions.secrets_rotated.append(f"{what} v{old} -> v{new}")
        return None

    def _mark_rotated(
        self, conn: Connection, path: str, name: str, upto: int, killed: set[str]
    ) -> list[str]:
        """Mark every row of ``path#name`` up to id ``upto`` rotated; the other agents
        that held the old value (at most 100 named)."""
        where = (*_same_field(path, name), vault_issued.c.id <= upto)
        holders = set(conn.execute(select(vault_issued.c.agent_id).where(*where)).scalars())
        conn.execute(update(vault_issued).where(*where).values(rotated_at=self._clock()))
        return sorted(holders - killed)[:100]


def _failure(what: str, exc: VaultUnavailable) -> str:
    """``what: why``, where the vault's message may name ``what`` already."""
    said = exc.description
    return said if said.startswith(f"{what}: ") else f"{what}: {said}"


_ANNOUNCED = (
    (vault_issued.c.kind == "dynamic")
    & vault_issued.c.accessor.is_(None)
    & vault_issued.c.revoked_at.is_(None)
)


def _unfinished(row: Row[Any], why: str) -> str:
    return (
        f"vault-token/{row.path} being issued to {row.agent_id}: {why}; it was not handed "
        f"out, and whatever the vault made dies by {row.expires_at.isoformat()}"
    )


def _announced(intent: int) -> tuple[Any, ...]:
    """The row ``intent`` while it waits for its token (no accessor, not closed)."""
    return (
        vault_issued.c.id == intent,
        vault_issued.c.accessor.is_(None),
        vault_issued.c.revoked_at.is_(None),
    )


def _same_field(path: str, name: str) -> tuple[Any, ...]:
    return (
        vault_issued.c.kind == "static",
        vault_issued.c.path == path,
        vault_issued.c.field == name,
        vault_issued.c.rotated_at.is_(None),
    )


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
