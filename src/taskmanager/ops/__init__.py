"""Operational endpoints (health, readiness, metrics) and Prometheus metrics."""
