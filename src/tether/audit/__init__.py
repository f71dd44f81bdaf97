"""The audit log: an RFC 9162 Merkle tree over Tether's events (proofs, verification)."""
