"""The merchant console's sessions: signing in with an API key and secret, and staying so."""
