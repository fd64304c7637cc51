"""The HTTP edge shared by every area: routing, auth, rate limits, errors, OpenAPI."""
