"""Patterns the course teaches, as working code: retries and backoff, idempotency stores,
sagas, event sourcing, delivery semantics."""
