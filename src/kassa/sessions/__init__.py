"""Merchant console sign-in sessions: signing in with an API key and secret, and staying
so. The console's pages are kassa.web.console."""
