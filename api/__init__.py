"""The authenticated HTTP API under /v1 (aiohttp), served next to the store owner."""
