"""The vault broker: OpenBao / HashiCorp Vault secrets and tokens for agents and upstreams.

``vault:<path>#<field>`` names a field of a KV v2 secret, ``vault-token:<policy>`` a new
token with that policy (:mod:`tether.vault.refs`); :class:`Broker` reads, issues, revokes
and rotates them (:mod:`tether.vault.broker`), through :class:`VaultClient`
(:mod:`tether.vault.client`), with new values from :mod:`tether.vault.rotation`.
"""

from tether.vault.broker import Broker, Brokered, VaultActions
from tether.vault.client import VaultClient, VaultUnavailable
from tether.vault.refs import VaultRef, parse_ref
from tether.vault.rotation import RotationFailed, new_value

__all__ = [
    "Broker",
    "Brokered",
    "RotationFailed",
    "VaultActions",
    "VaultClient",
    "VaultRef",
    "VaultUnavailable",
    "new_value",
    "parse_ref",
]
