"""Engine, sessions, tables and migrations (SQLite and PostgreSQL)."""
