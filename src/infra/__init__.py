"""Shared infrastructure: settings, database, Kafka, logging, errors, crypto, embedded
servers. The lowest layer of ours: it imports no service and no domain package."""
