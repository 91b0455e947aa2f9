"""Request-level logic; imports protocol, engines and store, never FastAPI."""
