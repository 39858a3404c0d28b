"""A ``workflow_signals`` topic partitioned unlike ``M1_TOPIC_PARTITIONS`` stops the worker at start with a
clear reason (before, the engine crashed later ticking a partition its table did not have)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.settings import Settings
from core.kafka.topics import TopicLayoutError, check_partitions, ensure_topics
from core.child_env import settings_env
from tests.helpers import isolated_settings

pytestmark = pytest.mark.kafka


def test_check_partitions_names_the_topic_that_differs(tmp_path, kafka_bootstrap: str) -> None:
    settings = isolated_settings(tmp_path, kafka_bootstrap)
    ensure_topics(settings, [settings.topic_workflow_signals, settings.topic_incidents])
    check_partitions(settings, [settings.topic_workflow_signals, settings.topic_incidents])  # alike: no error
    wider = settings.model_copy(update={"topic_partitions": 3})
    with pytest.raises(TopicLayoutError, match=f"{settings.topic_workflow_signals} has 2"):
        check_partitions(wider, [settings.topic_workflow_signals])


def test_the_worker_refuses_to_start_on_a_mismatched_signals_topic(tmp_path, kafka_bootstrap: str) -> None:
    settings: Settings = isolated_settings(tmp_path, kafka_bootstrap)
    ensure_topics(settings, [settings.topic_workflow_signals])  # 2 partitions
    env = {**settings_env(settings.model_copy(update={"topic_partitions": 3})), "COLUMNS": "300"}
    out = subprocess.run([sys.executable, "-m", "m1.cli", "worker"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{settings.topic_workflow_signals} has 2" in out.stdout and "M1_TOPIC_PARTITIONS=3" in out.stdout
    assert "Traceback" not in out.stdout + out.stderr
