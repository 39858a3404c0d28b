"""Multi-region tests on real local clusters (see conftest.py)."""
