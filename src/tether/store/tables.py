"""The tables. Their shape changes only through the Alembic migrations beside this file."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
)

from tether.store.types import UtcDateTime

__all__ = [
    "admin_tokens",
    "agents",
    "alerts",
    "approvals",
    "assertion_jtis",
    "audit_checkpoints",
    "audit_head",
    "audit_keys",
    "audit_nodes",
    "budget_usage",
    "detect_actions",
    "detect_baselines",
    "detect_cursor",
    "detect_risk",
    "discovery_findings",
    "egress_destinations",
    "epoch_acks",
    "event_terms",
    "events",
    "flow_labels",
    "gateway_labels",
    "gateway_pins",
    "gateway_servers",
    "grant_uses",
    "grants",
    "issued_tokens",
    "metadata",
    "policies",
    "signing_keys",
    "sink_cursors",
    "state_epoch",
    "vault_issued",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

agents = Table(
    "agents",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("owner", String(254), nullable=True),
    Column("purpose", Text, nullable=False),
    Column("parent", String(63), ForeignKey("agents.name"), nullable=True),
    Column("labels", JSON, nullable=False),
    Column("created_by", String(300), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_changed_at", UtcDateTime, nullable=False),
    Column("unowned_since", UtcDateTime, nullable=True),
    Column("public_key", String(64), nullable=False, unique=True),
    Column("key_rotated_at", UtcDateTime, nullable=False),
    # the admin whose suspension this is (an admin hold: only an admin lifts it); NULL when
    # the agent is not suspended, or its owner suspended it
    Column("held_by", String(300), nullable=True),
    Index("ix_agents_owner", "owner"),
    Index("ix_agents_state", "state"),
    Index("ix_agents_parent", "parent"),
)

# The record of every lifecycle change and refusal; the audit issue chains these rows.
# The audit log: one row per event, ``body`` being its RFC 8785 canonical JSON (the leaf
# bytes). ``seq`` is 1-based and gap-free (leaf index = seq - 1); ``at``, ``type`` and
# ``subject`` are index copies that verification checks against the body.
events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime, nullable=False),
    Column("type", String(64), nullable=False),
    Column("subject", Text, nullable=True),
    Column("body", Text, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Index("ix_events_subject", "subject"),
    Index("ix_events_type", "type"),
    Index("ix_events_at", "at"),
)

# Who appears in each event and which request it served, for searches that would otherwise
# read the whole log: kind 'p' (a principal of its chain, its actor or its subject) or 'r'
# (its request id), the term, the event's seq. On PostgreSQL, written by a trigger on
# ``events`` in the appending transaction (migration 0013), so it is exact; terms over 512
# characters are left out (their searches read the log). Empty on SQLite.
event_terms = Table(
    "event_terms",
    metadata,
    Column("kind", String(1), primary_key=True),
    Column("term", String(512), primary_key=True),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
)

# When each grant last allowed a decision (the latest allowed ``decision`` event naming
# it), written by the same trigger in the same transaction: ``grant list --unused``.
# PostgreSQL only, as event_terms.
grant_uses = Table(
    "grant_uses",
    metadata,
    Column("grant_id", String(32), primary_key=True),
    Column("last_used", UtcDateTime, nullable=False),
)

# Every perfect subtree of the Merkle tree above the leaves, stored when completed.
audit_nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

# One row: the tree size and its frontier. Appenders lock it, so sequence numbers are
# handed out in commit order by one writer at a time: no gap, no duplicate, no fork.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", BigInteger, nullable=False),
    Column("frontier", Text, nullable=False),
)

# Signed checkpoints (C2SP tlog-checkpoint notes) of the tree at a size.
audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("verifier_key", String(300), nullable=False),
    Column("signed_at", UtcDateTime, nullable=False),
)

# The audit keys' verifier keys (C2SP vkey strings), as published by the processes that
# hold the private halves (in their TETHER_HOME, mode 0600).
audit_keys = Table(
    "audit_keys",
    metadata,
    Column("verifier_key", String(300), primary_key=True),
    Column("created_at", UtcDateTime, nullable=False),
)

# How far each streaming SIEM sink has delivered (the last seq it acknowledged).
sink_cursors = Table(
    "sink_cursors",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("last_error", Text, nullable=True),
)

admin_tokens = Table(
    "admin_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

# Permissions given to a principal (an agent or a user). No grant, no access.
grants = Table(
    "grants",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("principal", String(300), nullable=False),
    Column("action", String(64), nullable=False),
    Column("resource", String(512), nullable=False),
    Column("condition", Text, nullable=True),
    Column("broad", Boolean, nullable=False),
    Column("granted_by", String(300), nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Column("revoked_by", String(300), nullable=True),
    # budgets: JSON list of {"metric": "calls"|"bytes", "amount": int, "window": seconds}
    Column("limits", Text, nullable=True),
    Column("approval", String(16), nullable=True),  # owner | admin: calls wait for approval
    Index("ix_grants_principal", "principal"),
)

# Organisation-wide Cedar guardrails, one row per policy (named by its @id).
policies = Table(
    "policies",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("text", Text, nullable=False),
    Column("source", String(300), nullable=False),
    Column("added_by", String(300), nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
)

# One counter that every change to agents, grants or policies bumps, in the same
# transaction: decision points rebuild their compiled state when it moves.
state_epoch = Table(
    "state_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("value", BigInteger, nullable=False),
)

# Each listening process's latest confirmed epoch (PostgreSQL): a kill waits until every
# live process has confirmed the kill's epoch (or the staleness bound has passed).
epoch_acks = Table(
    "epoch_acks",
    metadata,
    Column("process", String(200), primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),
)

# Tether's token-signing keys: public halves here (every process can verify), private
# halves only in TETHER_HOME (mode 0600). A retired key stays published until the tokens
# it signed have expired.
signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("public_key", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("retired_at", UtcDateTime, nullable=True),
)

# Every access token issued: for introspection, revocation and the exchange family tree.
issued_tokens = Table(
    "issued_tokens",
    metadata,
    Column("jti", String(64), primary_key=True),
    Column("parent_jti", String(64), nullable=True),
    Column("subject", String(300), nullable=False),
    Column("client_id", String(300), nullable=False),
    Column("audience", String(512), nullable=False),
    Column("scope", Text, nullable=False),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    Index("ix_issued_tokens_parent_jti", "parent_jti"),
)

# Client-assertion IDs already used (RFC 7523 jti): a replay is refused.
assertion_jtis = Table(
    "assertion_jtis",
    metadata,
    Column("jti", String(300), primary_key=True),
    Column("client_id", String(300), nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
)

# Upstream MCP servers behind the gateway. Credentials are references (env:VAR), never
# secrets; env holds only non-secret values.
gateway_servers = Table(
    "gateway_servers",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("transport", String(8), nullable=False),
    Column("command", JSON, nullable=False),
    Column("url", Text, nullable=True),
    Column("env", JSON, nullable=False),
    Column("credentials", JSON, nullable=False),
    Column("created_by", String(300), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("owner", String(320), nullable=True),  # approves changed definitions (and admins)
    # the kinds (tool, resource, prompt) whose first listing was pinned: later ones are held
    Column("listed", String(64), nullable=False, server_default=""),
)

# HTTP API destinations agents reach through the egress proxy (issue 18): the base URL,
# what is injected (credential references, never secrets), labels, and whether it may
# resolve to private addresses (internal).
egress_destinations = Table(
    "egress_destinations",
    metadata,
    Column("name", String(63), primary_key=True),
    Column("base", Text, nullable=False),
    Column("host", String(255), nullable=False),  # lower case, as CONNECT names it
    Column("port", Integer, nullable=False),
    Column("credentials", JSON, nullable=False),
    Column("oauth", JSON, nullable=True),
    Column("labels", JSON, nullable=False),
    Column("internal", Boolean, nullable=False),
    Column("owner", String(320), nullable=True),
    Column("created_by", String(300), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Index("ix_egress_destinations_host", "host", "port"),
)

# The pinned definition of each tool, resource and prompt an upstream serves.
gateway_pins = Table(
    "gateway_pins",
    metadata,
    Column("server", String(63), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("name", String(512), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("pinned_hash", String(64), nullable=False),
    Column("pinned", JSON, nullable=False),
    Column("pending_hash", String(64), nullable=True),
    Column("pending", JSON, nullable=True),
    Column("pinned_at", UtcDateTime, nullable=False),
    Column("changed_at", UtcDateTime, nullable=True),
    Column("approved_by", String(300), nullable=True),
    # 2: the hash of the whole definition; 1: of part of it, cut (pinned before 0010)
    Column("hash_version", Integer, nullable=False, server_default="1"),
)


# What the vault broker handed out: which agent received which secret (a KV v2 version) or
# dynamic token (its accessor), so a kill knows what to revoke and what to rotate.
vault_issued = Table(
    "vault_issued",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_id", String(300), nullable=False),
    Column("ref", String(600), nullable=False),
    Column("kind", String(16), nullable=False),  # static | dynamic
    Column("path", String(512), nullable=False),  # KV path, or the token policy
    Column("field", String(255), nullable=True),  # KV field
    Column("version", Integer, nullable=True),  # KV version read
    Column("accessor", String(255), nullable=True),  # dynamic token accessor
    Column("issued_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),  # dynamic: lease end
    Column("revoked_at", UtcDateTime, nullable=True),  # dynamic: revoked
    Column("rotated_at", UtcDateTime, nullable=True),  # static: a new version replaced it
    Index("ix_vault_issued_agent", "agent_id"),
)


# What discovery found, reconciled with the registry: registered, shadow or stale.
discovery_findings = Table(
    "discovery_findings",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("name", String(512), nullable=False),
    Column("scanner", String(32), nullable=False),
    Column("location", String(2048), nullable=False),  # the file's absolute path
    Column("line", Integer, nullable=True),
    Column("status", String(16), nullable=False),  # registered | shadow | stale
    Column("agent", String(63), nullable=True),  # the agent it is (registered, stale)
    Column("body", JSON, nullable=False),  # the finding (never a secret)
    Column("first_seen", UtcDateTime, nullable=False),
    Column("last_seen", UtcDateTime, nullable=False),
    Index("ix_discovery_findings_status", "status"),
)


# Alerts the behaviour detector raised (tether.detect.alerts): who they are about, why,
# the evidence (audit seqs) and their state (open, acknowledged, resolved, suppressed).
alerts = Table(
    "alerts",
    metadata,
    Column("id", String(24), primary_key=True),  # alt_ + 16 hex, from the finding
    Column("created_at", UtcDateTime, nullable=False),
    Column("detector", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("agent", String(300), nullable=False),  # the agent's SPIFFE ID
    Column("owner", String(254), nullable=True),  # the agent's owner when it was raised
    Column("chain", JSON, nullable=False),  # human first, the agent last
    Column("summary", Text, nullable=False),
    Column("evidence", JSON, nullable=False),  # audit seqs, in order
    Column("detail", JSON, nullable=False),  # the detector's figures (never a secret)
    Column("state", String(16), nullable=False),
    Column("state_by", String(300), nullable=True),
    Column("state_reason", Text, nullable=True),
    Column("state_at", UtcDateTime, nullable=True),
    Column("actions", JSON, nullable=False),  # automatic responses taken on it
    Index("ix_alerts_agent", "agent"),
    Index("ix_alerts_state", "state"),
    Index("ix_alerts_owner", "owner"),
    Index("ix_alerts_created_at", "created_at"),
)

# Each agent's learned behaviour (tether.detect.baseline), as the runner last saved it.
detect_baselines = Table(
    "detect_baselines",
    metadata,
    Column("agent", String(300), primary_key=True),
    Column("body", Text, nullable=False),  # JSON
    Column("updated_at", UtcDateTime, nullable=False),
)

# How far the detector has read the audit log (the last seq it processed), by name.
detect_cursor = Table(
    "detect_cursor",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Each agent's risk score (0-100) from its open and acknowledged alerts; ``rev`` is a
# store-wide revision that grows with every write, so processes read only what changed.
detect_risk = Table(
    "detect_risk",
    metadata,
    Column("agent", String(300), primary_key=True),  # the agent's SPIFFE ID
    Column("score", Integer, nullable=False),
    Column("rev", BigInteger, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_detect_risk_rev", "rev"),
)

# Automatic responses (suspend, kill) taken or refused by the circuit breaker.
detect_actions = Table(
    "detect_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alert_id", String(24), nullable=False),
    Column("action", String(32), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_detect_actions_at", "at"),
)


# Labels on the items an upstream serves (``tether gateway label``): explicit, by an admin
# or the server's owner. ``item`` is the tool or prompt name, or the resource URI.
gateway_labels = Table(
    "gateway_labels",
    metadata,
    Column("server", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("item", String(512), primary_key=True),
    Column("label", String(32), primary_key=True),
    Column("added_by", String(300), nullable=False),
    Column("added_at", UtcDateTime, nullable=False),
)

# The labels the work has touched (data-flow rules): per token family (``family:<jti>``)
# and per agent and person (``pair:<agent>|<person>``); the latest decision that touched
# each label, by its event sequence number.
flow_labels = Table(
    "flow_labels",
    metadata,
    Column("scope", String(700), primary_key=True),
    Column("label", String(32), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("resource", String(600), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_flow_labels_at", "at"),
)

# Budgets: what each limited grant has used in its current fixed window.
budget_usage = Table(
    "budget_usage",
    metadata,
    Column("grant_id", String(32), primary_key=True),
    Column("metric", String(16), primary_key=True),
    Column("window_start", UtcDateTime, primary_key=True),
    Column("used", BigInteger, nullable=False),
)

# Human approvals of held calls, bound to the digest of (chain, action, resource, args).
approvals = Table(
    "approvals",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("digest", String(64), nullable=False),
    Column("agent", String(300), nullable=False),
    Column("owner", String(320), nullable=True),
    Column("approver", String(16), nullable=False),  # owner | admin
    Column("chain", JSON, nullable=False),
    Column("action", String(64), nullable=False),
    Column("resource", String(600), nullable=False),
    Column("arguments", Text, nullable=False),  # exact, canonical JSON: for the approver
    Column("redacted", Text, nullable=False),  # what the audit log keeps
    Column("reasons", JSON, nullable=False),
    Column("state", String(16), nullable=False),  # pending | approved | denied | used | expired
    Column("requested_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("request_seq", BigInteger, nullable=True),
    Column("decided_by", String(320), nullable=True),
    Column("decided_at", UtcDateTime, nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("used_at", UtcDateTime, nullable=True),
    Index("ix_approvals_digest", "digest"),
    Index("ix_approvals_state", "state"),
)
