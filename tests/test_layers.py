"""What holds the layers in place beside the import contracts (``make lint``).

Every module of ``tether`` has a place in the layers contract, so none escapes it.

Migration 0004 carries old events into the Merkle log with a frozen copy of the encoding
(:mod:`tether.store.migrations.audit_0004`), not the live code. Today the two agree byte
for byte; if the live encoding ever changes, this test fails, and the change is then a
deliberate one (a new revision for the new encoding), never a silent rewrite of what 0004
wrote.
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import tether
from tether.audit.record import REQUEST_ID, Entry, prepare, stage
from tether.audit.tree import Frontier
from tether.store.migrations import audit_0004 as frozen

_TEXTS = [
    "",
    "plain",
    "é ü 日本 🙂",
    "a\x00b",
    "lone \ud800 surrogate",
    "x" * 2049,
    '\u2028\u2029\x7f\x1f"\\',
]


def _detail(rng: random.Random, depth: int = 0) -> Mapping[str, Any]:
    values: list[Any] = [
        *_TEXTS,
        0,
        -1,
        2**53 - 1,
        2**53,
        -(2**60),
        1.5,
        float("nan"),
        float("inf"),
        1e300,
        True,
        False,
        None,
        [1, "two", None],
        ("t", 1),
        {"set"},
    ]
    out: dict[Any, Any] = {}
    for i in range(rng.randint(0, 5)):
        key: Any = rng.choice([f"k{i}", "ключ", "\ue000", "\U0001f600", 7, "\U0001d4b3", "a\x00"])
        if depth < 2 and rng.random() < 0.2:
            out[key] = _detail(rng, depth + 1)
        else:
            out[key] = rng.choice(values)
    return out


def _old_events(n: int, seed: int) -> list[frozen.OldEvent]:
    rng = random.Random(seed)
    start = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    return [
        (
            rng.choice(["agent.registered", "grant.refused", "decision", "x" * 70]),
            rng.choice(["admin", "user:alice@example.com", "é" * 3000]),
            rng.choice([None, "spiffe://tether.local/agent/a", *_TEXTS]),
            rng.choice(["", "why", *_TEXTS]),
            _detail(rng),
            (start + timedelta(seconds=i, microseconds=rng.randint(0, 999_999))).astimezone(
                rng.choice(zones)
            ),
        )
        for i in range(n)
    ]


def _live(events: list[frozen.OldEvent]) -> tuple[Any, Any, Frontier]:
    frontier = Frontier()
    token = REQUEST_ID.set(None)  # a migration runs outside any request
    events_rows: list[Any] = []
    node_rows: list[Any] = []
    try:
        for type_, actor, subject, reason, detail, at in events:  # each at its own time
            entry = Entry.of(type_, actor=actor, subject=subject, reason=reason, detail=detail)
            more_events, more_nodes = stage([prepare(entry)], at, frontier)
            events_rows += more_events
            node_rows += more_nodes
    finally:
        REQUEST_ID.reset(token)
    return events_rows, node_rows, frontier


def test_migration_0004s_frozen_encoding_equals_the_live_one_today() -> None:
    for n, seed in [(0, 0), (1, 1), (2, 2), (7, 3), (16, 4), (33, 5), (100, 6)]:
        events = _old_events(n, seed)
        live_events, live_nodes, live_frontier = _live(events)
        old_frontier = frozen.Frontier()
        old_events, old_nodes = frozen.stage(events, old_frontier)
        assert old_events == live_events  # bodies, leaf hashes and columns, byte for byte
        assert old_nodes == live_nodes
        assert (old_frontier.size, old_frontier.hashes) == (
            live_frontier.size,
            live_frontier.hashes,
        )


def test_the_frozen_hashes_are_rfc_9162s() -> None:
    from tether.audit import merkle

    for data in (b"", b"\x00", b"event", bytes(range(256))):
        assert frozen.leaf_hash(data) == merkle.leaf_hash(data)
        assert frozen.node_hash(data, data[::-1]) == merkle.node_hash(data, data[::-1])


def _contracts() -> dict[str, dict[str, Any]]:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def _layer_modules(layer: str) -> list[str]:
    names = re.split(r"[|:]", layer)
    return [n.strip().strip("()") for n in names]


def test_every_module_of_tether_has_a_layer() -> None:
    """A module the layers contract does not name is checked by nothing: each one has a
    place, and each from the core down is held to the plain-below-gateway contract."""
    package = Path(tether.__file__).parent
    modules = {
        f"tether.{p.stem if p.suffix == '.py' else p.name}"
        for p in package.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    contracts = _contracts()
    layers = [_layer_modules(layer) for layer in contracts["layers"]["layers"]]
    named = {m for layer in layers for m in layer}
    assert modules - named == set()
    core = next(i for i, layer in enumerate(layers) if "tether.core" in layer)
    below_gateway = {m for layer in layers[core:] for m in layer} & modules
    plain = set(contracts["plain-below-gateway"]["source_modules"])
    assert below_gateway == plain
