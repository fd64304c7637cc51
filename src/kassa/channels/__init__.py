"""Upstream payment channels behind one interface. Wire <-> core translation lives here."""
