"""Idempotency-Key on every POST (SPEC §5): replay, reuse detection, in-progress."""
