"""RFC 9162 (Certificate Transparency v2) Merkle tree hashing, proofs and their checks.

leaf = SHA-256(0x00 || leaf bytes), node = SHA-256(0x01 || left || right); the root of
an empty tree is SHA-256 of nothing. Proof generation here works on a list of leaf hashes
(the reference the store-backed log is checked against); verification follows RFC 9162
sections 2.1.3.2 and 2.1.4.2 step by step and raises :class:`VerificationFailed`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from tether.errors import VerificationFailed

__all__ = [
    "EMPTY_ROOT",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

_HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf *hashes*."""
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]): the audit path of leaf ``index``."""
    if not 0 <= index < len(leaves):
        raise VerificationFailed(f"leaf {index} is not in a tree of size {len(leaves)}")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def consistency_proof(size1: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]): the tree of the first ``size1`` leaves is a prefix of ``leaves``."""
    if not 0 <= size1 <= len(leaves):
        raise VerificationFailed(f"size {size1} is beyond a tree of size {len(leaves)}")
    if size1 in (0, len(leaves)):
        return []
    return _subproof(size1, leaves, complete=True)


def _subproof(m: int, leaves: Sequence[bytes], *, complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], complete=complete), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], complete=False), root(leaves[:k])]


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != _HASH_SIZE:
        raise VerificationFailed(f"{what} is not a SHA-256 hash")


def verify_inclusion(
    leaf_index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2; raises :class:`VerificationFailed`."""
    for value, what in ((leaf, "the leaf hash"), (expected_root, "the root")):
        _check_hash(value, what)
    if leaf_index < 0 or leaf_index >= tree_size:
        raise VerificationFailed(f"leaf {leaf_index} is not in a tree of size {tree_size}")
    fn, sn, r = leaf_index, tree_size - 1, leaf
    for p in proof:
        _check_hash(p, "a proof hash")
        if sn == 0:
            raise VerificationFailed("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0 or not hmac.compare_digest(r, expected_root):
        raise VerificationFailed("inclusion proof does not lead to the root")


def _trivially_consistent(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> bool:
    """Check the cases without a proof walk; True when nothing is left to check."""
    if size1 < 0 or size2 < size1:
        raise VerificationFailed(f"a tree of size {size2} cannot extend one of size {size1}")
    if size1 == 0:  # as transparency-dev: every tree extends the empty one, proving nothing
        raise VerificationFailed("a consistency proof from the empty tree proves nothing")
    if size1 == size2:  # as transparency-dev: the same tree, byte for byte
        if proof or not hmac.compare_digest(root1, root2):
            raise VerificationFailed("equal sizes need equal roots and an empty proof")
        return True
    for value, what in ((root1, "the first root"), (root2, "the second root")):
        _check_hash(value, what)
    if not proof:
        raise VerificationFailed("consistency proof is empty")
    return False


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2; raises :class:`VerificationFailed`. Equal sizes need
    equal roots and no proof; a proof from the empty tree is refused (it proves nothing)."""
    if _trivially_consistent(size1, size2, root1, root2, proof):
        return
    path = list(proof)
    for p in path:
        _check_hash(p, "a proof hash")
    if size1 & (size1 - 1) == 0:  # an exact power of two
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise VerificationFailed("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0 or not hmac.compare_digest(fr, root1) or not hmac.compare_digest(sr, root2):
        raise VerificationFailed("consistency proof does not join the two roots")
