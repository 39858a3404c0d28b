"""Per-series online forecasters with conformal intervals, cost projection and scaling advice."""
