"""The double-entry ledger: every cent, in balanced entries."""
