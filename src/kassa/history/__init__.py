"""The merchant's transaction history: payments, deposits and refunds as the seed lists them."""
