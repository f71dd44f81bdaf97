"""Upstream MCP servers behind the gateway, as domain state: what they are and where they
run (:mod:`.servers`), the definitions pinned for them (:mod:`.pins`), where their secrets
live (:mod:`.credentials`) and how grants name what they serve (:mod:`.paths`).

The gateway (:mod:`tether.gateway`) enforces over this state; it sits above the core,
this package below it."""

from tether.upstreams.pins import Pins
from tether.upstreams.servers import Upstream, Upstreams, UpstreamSpec

__all__ = ["Pins", "Upstream", "UpstreamSpec", "Upstreams"]
