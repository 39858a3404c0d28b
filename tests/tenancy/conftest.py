"""Fixtures of the identity tests: settings with a registry of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from tenancy.registry import Registry


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, kafka_bootstrap="127.0.0.1:9")


@pytest.fixture
def registry(settings: Settings) -> Registry:
    registry = Registry.from_settings(settings)
    yield registry
    registry.close()
