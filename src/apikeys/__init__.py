"""API keys: scoped, stored as SHA-256 hashes, passed as ``Authorization: Bearer``."""
