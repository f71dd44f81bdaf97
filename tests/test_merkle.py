"""RFC 9162 Merkle hashing and proofs: known answers, the transparency-dev vectors, and
round-trip properties of the proofs the log will serve."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.audit.merkle import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from tether.errors import VerificationFailed

VECTORS = Path(__file__).parent / "vectors" / "merkle"


def b64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def cases(kind: str) -> list[tuple[str, dict]]:
    found = sorted(VECTORS.glob(f"{kind}/**/*.json"))
    assert len(found) >= 90, f"missing {kind} vectors"
    return [(str(p.relative_to(VECTORS)), json.loads(p.read_text())) for p in found]


def test_rfc6962_known_answers() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert (
        leaf_hash(b"").hex() == "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert leaf_hash(b"L123456").hex() == (
        "395aa064aa4c29f7010acfe3f25db9485bbd4b91897b6ad7ad547639252b4d56"
    )
    assert node_hash(b"N123", b"N456").hex() == (
        "aa217fe888e47007fa15edab33c2b492a722cb106c64667fc2b044444de66bbb"
    )
    assert root([]) == EMPTY_ROOT


@pytest.mark.parametrize(
    ("name", "case"), cases("inclusion"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_inclusion_vectors(name: str, case: dict) -> None:
    def check() -> None:
        verify_inclusion(
            case["leafIdx"],
            case["treeSize"],
            b64(case["leafHash"]),
            [b64(p) for p in case["proof"] or []],
            b64(case["root"]),
        )

    if case["wantErr"]:
        with pytest.raises(VerificationFailed):
            check()
    else:
        check()


@pytest.mark.parametrize(
    ("name", "case"), cases("consistency"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_consistency_vectors(name: str, case: dict) -> None:
    def check() -> None:
        verify_consistency(
            case["size1"],
            case["size2"],
            b64(case["root1"]),
            b64(case["root2"]),
            [b64(p) for p in case["proof"] or []],
        )

    if case["wantErr"]:
        with pytest.raises(VerificationFailed):
            check()
    else:
        check()


trees = st.lists(st.binary(max_size=8), min_size=1, max_size=40).map(
    lambda data: [leaf_hash(d) for d in data]
)


@given(trees, st.data())
def test_every_inclusion_proof_verifies_and_a_changed_one_does_not(leaves, data) -> None:
    index = data.draw(st.integers(0, len(leaves) - 1))
    proof = inclusion_proof(index, leaves)
    verify_inclusion(index, len(leaves), leaves[index], proof, root(leaves))
    wrong = leaf_hash(b"not-in-the-tree")
    with pytest.raises(VerificationFailed):
        verify_inclusion(index, len(leaves), wrong, proof, root(leaves))
    if proof:
        bent = [*proof[:-1], node_hash(proof[-1], proof[-1])]
        with pytest.raises(VerificationFailed):
            verify_inclusion(index, len(leaves), leaves[index], bent, root(leaves))


@given(trees, st.data())
def test_every_consistency_proof_verifies_and_an_edited_history_does_not(leaves, data) -> None:
    size1 = data.draw(st.integers(1, len(leaves)))
    proof = consistency_proof(size1, leaves)
    old, new = root(leaves[:size1]), root(leaves)
    verify_consistency(size1, len(leaves), old, new, proof)
    if 0 < size1 < len(leaves):
        edited = [leaf_hash(b"edited"), *leaves[1:]]  # the first event changed afterwards
        with pytest.raises(VerificationFailed):
            verify_consistency(size1, len(leaves), old, root(edited), proof)
