"""Invoices: a PDF for every payment order that was paid (SPEC §10)."""
