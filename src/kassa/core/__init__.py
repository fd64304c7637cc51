"""Pure domain: money, ids, state machines, ledger entries. Standard library only."""
