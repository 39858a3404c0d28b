"""Tenants, API keys, roles, quotas: who may do what, on whose data."""
