"""Discovery: find the agents that already run (MCP client configurations, secrets in
files, agent code, Kubernetes manifests, CI workflows, cloud IAM exports) and reconcile
them with the registry. See :mod:`tether.discover.interface` for what scanners share."""
