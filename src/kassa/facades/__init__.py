"""Merchant-facing protocols over the same services (SPEC §9): EasyPay (seed 003) and the
crypto gateway (seed 002)."""
