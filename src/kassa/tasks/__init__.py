"""Tasks: the work a customer pays for (the minimum the payment API needs)."""
