"""Webhooks: subscriptions, signed deliveries from the outbox, SSRF-safe targets (API.md §7)."""
