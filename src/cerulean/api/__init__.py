"""Thin routers, one per API surface."""
