"""The Merkle tree as the store keeps it: perfect subtrees and the frontier (compact range).

Every perfect, aligned subtree — ``(level, index)`` covers leaves ``index * 2**level`` up
to ``(index + 1) * 2**level`` — is stored once, when its last leaf is appended. Any range
hash the RFC 9162 recursion needs is then a fold of at most ~log2(n) stored nodes, so a
proof costs O(log n) node reads and hashes, never a rebuild of the tree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tether.audit.merkle import EMPTY_ROOT, node_hash

__all__ = [
    "Frontier",
    "Node",
    "blocks",
    "consistency_ranges",
    "fold",
    "inclusion_ranges",
]

Node = tuple[int, int]  # (level, index)
Range = tuple[int, int]  # leaves [lo, hi)


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def blocks(lo: int, hi: int) -> list[Node]:
    """The perfect subtrees whose fold is MTH(D[lo:hi]), largest first. ``lo`` must be
    aligned as the RFC 9162 recursion leaves it (a multiple of the largest block)."""
    out: list[Node] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def fold(hashes: Sequence[bytes]) -> bytes:
    """The hash of consecutive perfect subtrees, largest first (right to left fold)."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges whose hashes form PATH(index, D[size]), in proof order."""
    out: list[Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            lo += k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """The ranges whose hashes form PROOF(size1, D[size2]), in proof order
    (``0 < size1 < size2``)."""
    out: list[Range] = []
    lo, hi, m, complete = 0, size2, size1, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            out.append((lo + k, hi))
            hi = lo + k
        else:
            out.append((lo, lo + k))
            m -= k
            lo += k
            complete = False
    if not complete:
        out.append((lo, hi))
    out.reverse()
    return out


class Frontier:
    """The roots of the perfect subtrees that make up a tree of ``size`` leaves, largest
    first: all that is needed to append and to compute the current root."""

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: Iterable[bytes] = ()) -> None:
        self.size = size
        self.hashes = list(hashes)
        if len(self.hashes) != size.bit_count():
            raise ValueError("frontier does not match the tree size")

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns every perfect subtree it completes as
        ``(level, index, hash)``, the leaf itself first."""
        return self.push(leaf, 0)

    def push(self, value: bytes, level: int) -> list[tuple[int, int, bytes]]:
        """Add the hash of a perfect subtree of ``2**level`` leaves (the tree's size must
        be a multiple of that); returns it and every subtree it completes, as
        ``(level, index, hash)``, lowest first."""
        if self.size & ((1 << level) - 1):
            raise ValueError(f"a subtree of level {level} cannot follow {self.size} leaves")
        index = self.size >> level
        made = [(level, index, value)]
        current = value
        while index & 1:
            current = node_hash(self.hashes.pop(), current)
            index >>= 1
            level += 1
            made.append((level, index, current))
        self.hashes.append(current)
        self.size += 1 << made[0][0]
        return made

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)

    def root(self) -> bytes:
        return fold(self.hashes)
