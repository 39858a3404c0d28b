"""A tenant's Kafka login may write only to topics under its prefix ``<tenant>.``
(``core.kafka.security.provision_tenant``). The worker's own topics carry no ``.``, so no tenant
name, not even one equal to ``M1_APP_ID`` or to a topic's first word, reaches them: a tenant
cannot forward rows to the store owner, forge RED spans, RED state or erasure notices, or feed the inputs of
another tenant."""

from __future__ import annotations

import pytest

from compliance import erasure_notices
from core.settings import Settings
from core.tenant_names import check_tenant
from sinks.forwarding import inserts_topic
from streams.red import red_topic
from streams.red_changelog import changelog_topic


def worker_topics(settings: Settings) -> dict[str, str]:
    """Every topic the worker reads or writes that is not a tenant's own input topic."""
    named = {name: value for name, value in settings.model_dump().items()
             if name.startswith("topic_") and isinstance(value, str)}
    return {**named, "store inserts": inserts_topic(settings.app_id), "RED spans": red_topic(settings),
            "RED state": changelog_topic(settings), "erasure notices": erasure_notices.topic(settings)}


@pytest.mark.parametrize("app_id", ["m1-analytics", "acme"])
def test_no_tenant_prefix_reaches_a_worker_topic(app_id: str) -> None:
    settings = Settings(app_id=app_id)
    assert check_tenant(app_id) == app_id  # the app id is itself a name a tenant could take
    for what, topic in worker_topics(settings).items():
        first, dot, _ = topic.partition(".")
        assert not dot, f"{what} topic {topic!r} lies under the prefix a tenant named {first!r} may write to"


@pytest.mark.parametrize("name,value", [("topic_audit", "acme.audit"), ("app_id", "acme.worker")])
def test_a_topic_name_under_a_tenant_prefix_is_refused_at_start(name: str, value: str) -> None:
    with pytest.raises(ValueError, match="under a tenant's topic prefix"):
        Settings(**{name: value})
