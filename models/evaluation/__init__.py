"""Offline evaluation of the detectors: NAB scoring (``models.evaluation.nab``) and its CLI."""
