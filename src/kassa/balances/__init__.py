"""Balances: the merchant's (GET /api/v1/payment/balance) and a worker's, from the ledger."""
