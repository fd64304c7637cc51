"""Seed 004's Payments resource: a Payment per payment order, retry and verify."""
