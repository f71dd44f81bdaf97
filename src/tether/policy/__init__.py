"""Least privilege: grants compiled to Cedar, guardrails, and the decision point."""
