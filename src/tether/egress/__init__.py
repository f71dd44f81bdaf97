"""The identity-aware egress proxy: agents' HTTP API calls, brokered instead of their secrets.

An agent sends its request to a registered destination (:mod:`tether.upstreams.destinations`)
through Tether, as a reverse-proxy route (``/egress/NAME/...``) or through the forward
proxy (``HTTPS_PROXY``, with the installation's CA for the hosts Tether brokers). Each
request is a decision (action = the HTTP method, resource = ``NAME/<normalised path>``,
:mod:`tether.egress.paths`) recorded before anything is forwarded; the destination's
credential is injected on the way out and taken out of what comes back.
"""
