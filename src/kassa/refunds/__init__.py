"""Refunds: manual (POST /api/v1/payment/refund) and automatic (failed or cancelled tasks)."""
