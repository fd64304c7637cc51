"""Durable jobs: settle sandbox payments, expire orders, housekeeping."""
