"""Merchant accounts and their API keys."""
