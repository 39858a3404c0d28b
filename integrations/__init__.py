"""Integrations: the clients that carry a workflow's notification to people and systems.

``notification`` is the contract with the workflow engine (``workflows/``); one module per
receiver type builds that vendor's documented payload and sends it; ``delivery`` is the
outbox consumer that retries, breaks circuits, dead-letters and records every outcome.
"""
