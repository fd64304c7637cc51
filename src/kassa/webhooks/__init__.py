"""Webhooks: endpoints, deliveries, signatures (SPEC §7)."""
