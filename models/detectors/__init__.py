"""River-based anomaly detectors with per-series calibration (see ``models.registry``)."""
