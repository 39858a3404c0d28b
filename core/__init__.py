"""The ground floor: settings, telemetry, tenant names and Kafka plumbing that every layer uses.

Nothing here imports another package of this project (``tests/test_layers.py`` checks it).
"""
