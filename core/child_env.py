"""The environment that hands a process's settings to a child process (a worker, a region's agent, a test's CLI call)."""

from __future__ import annotations

import os

from pydantic import SecretStr

from core.kafka.security import login_of
from core.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces ``settings`` in a child process (secrets included: the
    environment of one's own child is as private as one's memory)."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:  # the field's default; an inherited variable must not override it
            env.pop(f"M1_{name.upper()}", None)
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"M1_{name.upper()}"] = str(value)
    env["M1_KAFKA_BOOTSTRAP"] = settings.bootstrap
    env.update(login_of(settings).env())  # the login the settings resolve to (the local broker's, too)
    return env
