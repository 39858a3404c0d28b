"""Online anomaly detectors and forecasters, one per module, behind ``models.base``."""
