"""Payment orders: create, query, settle, expire."""
