"""The event outbox: every announced state change, recorded with the change itself."""
