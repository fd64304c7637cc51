"""Kassa: a self-hosted payment gateway for task marketplaces."""

__version__ = "0.1.0"
