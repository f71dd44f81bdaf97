"""Upstream MCP servers behind the gateway, as domain state: what they are and where they
run (:mod:`.servers`), the definitions pinned for them (:mod:`.pins`), where their secrets
live (:mod:`.credentials`), how grants name what they serve (:mod:`.paths`), the labels
on what they serve (:mod:`.labels`) and the labels the work has touched (:mod:`.flows`);
and the HTTP API destinations of the egress proxy (:mod:`.destinations`).

The gateway (:mod:`tether.gateway`) enforces over this state; it sits above the core,
this package below it."""

from tether.upstreams.destinations import (
    Destination,
    Destinations,
    DestinationSpec,
    Injection,
    OAuthClient,
)
from tether.upstreams.flows import Flows, flow_reads, flow_scopes
from tether.upstreams.labels import ItemLabels, Labels, LabelSnapshot
from tether.upstreams.pins import Pins
from tether.upstreams.servers import Upstream, Upstreams, UpstreamSpec

__all__ = [
    "Destination",
    "DestinationSpec",
    "Destinations",
    "Flows",
    "Injection",
    "ItemLabels",
    "LabelSnapshot",
    "Labels",
    "OAuthClient",
    "Pins",
    "Upstream",
    "UpstreamSpec",
    "Upstreams",
    "flow_reads",
    "flow_scopes",
]
