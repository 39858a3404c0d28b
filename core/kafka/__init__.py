"""Kafka plumbing: client logins and TLS, the admin calls, topic names and creation, a producer, the local broker."""
