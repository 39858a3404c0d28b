"""The pipeline's topics: their names, the tenant a topic belongs to, and creating them.

Faust only declares its internal topics; a consumer subscribed to a topic that does
not exist yet would wait for a metadata refresh (minutes) after it appears.

With ``M1_TENANT_TOPICS`` each tenant writes to its own input topics ``<tenant>.<base>`` (base:
``topic_metrics``, ``topic_otlp_spans``, ``topic_otlp_metrics``), which Kafka ACLs reserve to its
principal (``core.kafka.security.provision_tenant``); the worker subscribes to every tenant's by
pattern and takes a record's tenant from its topic (:func:`tenant_of_topic`).

>>> from core.settings import Settings
>>> s = Settings(kafka_bootstrap="127.0.0.1:9092", tenant_topics=True)
>>> tenant_of_topic(s, "acme.metrics"), tenant_of_topic(s, "acme.anomalies"), tenant_of_topic(s, "Acme.metrics")
('acme', None, None)
>>> bool(re.fullmatch(tenant_topic_pattern("otlp_spans"), "acme.otlp_spans"))
True
>>> tenant_of_topic(Settings(kafka_bootstrap="127.0.0.1:9092"), "acme.metrics") is None  # tenant topics off
True
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping

from aiokafka.admin import NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from core.kafka.security import admin_client
from core.settings import Settings
from core.tenant_names import check_tenant


def input_topics(settings: Settings) -> list[str]:
    """The base names of the topics producers write to."""
    return [settings.topic_metrics, settings.topic_otlp_spans, settings.topic_otlp_metrics]


def tenant_topic(tenant: str, base: str) -> str:
    """The topic where ``tenant`` writes what goes to ``base``."""
    return f"{tenant}.{base}"


def tenant_topic_pattern(base: str) -> str:
    """A regular expression matching every tenant's topic for ``base`` (and any other
    ``<name>.<base>``: records of a topic whose name is no tenant's are dead-lettered)."""
    return rf"[^.]+\.{re.escape(base)}$"


def tenant_of_topic(settings: Settings, topic: str) -> str | None:
    """The tenant ``topic`` belongs to, with tenant topics on; ``None`` for any other topic."""
    if not settings.tenant_topics:
        return None
    tenant, dot, base = topic.partition(".")
    if not dot or base not in input_topics(settings):
        return None
    try:
        return check_tenant(tenant)
    except ValueError:
        return None


def pipeline_topics(settings: Settings) -> list[str]:
    """Names of the topics the pipeline reads and writes (with tenant topics: all but the inputs)."""
    inputs = [] if settings.tenant_topics else input_topics(settings)
    return inputs + [settings.topic_dead_letter, settings.topic_anomalies, settings.topic_bottlenecks,
                     settings.topic_forecasts, settings.topic_costs, settings.topic_recommendations]


def ensure_tenant_topics(settings: Settings, tenant: str) -> list[str]:
    """Create ``tenant``'s input topics if missing; returns the ones created."""
    return ensure_topics(settings, [tenant_topic(tenant, base) for base in input_topics(settings)])


class TopicLayoutError(RuntimeError):
    """A topic exists with another partition count than the one the worker needs."""


def ensure_topics(settings: Settings, names: list[str] | None = None, configs: Mapping[str, str] | None = None) -> list[str]:
    """Create missing topics with ``settings.topic_partitions`` (and the topic ``configs``, such as
    ``cleanup.policy``); returns the ones created."""
    wanted = names or pipeline_topics(settings)

    async def create() -> list[str]:
        admin = admin_client(settings)
        await admin.start()
        try:
            missing = [n for n in wanted if n not in set(await admin.list_topics())]
            if missing:
                new = [NewTopic(n, num_partitions=settings.topic_partitions, replication_factor=1,
                                topic_configs=dict(configs or {})) for n in missing]
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
            return missing
        finally:
            await admin.close()

    return asyncio.run(create())


def check_partitions(settings: Settings, names: list[str]) -> None:
    """Raise :class:`TopicLayoutError` naming each of ``names`` whose partition count is not
    ``settings.topic_partitions`` (a Faust table keeps a key's state on the partition its source
    topic gives the key, so the two must be partitioned alike). A topic the cluster's metadata does
    not show partitions of yet (just created) is asked again for up to 10 s, then taken as created
    by :func:`ensure_topics`, with ``settings.topic_partitions``."""
    if not names:
        return

    async def describe() -> dict[str, int]:
        admin = admin_client(settings)
        await admin.start()
        try:
            deadline = asyncio.get_running_loop().time() + 10.0
            while True:
                counts = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
                if all(counts.get(name) for name in names) or asyncio.get_running_loop().time() > deadline:
                    return {name: n for name, n in counts.items() if n}
                await asyncio.sleep(0.2)
        finally:
            await admin.close()

    wrong = {name: n for name, n in asyncio.run(describe()).items() if n != settings.topic_partitions}
    if wrong:
        found = ", ".join(f"{name} has {n}" for name, n in sorted(wrong.items()))
        raise TopicLayoutError(f"topic partitions differ from M1_TOPIC_PARTITIONS={settings.topic_partitions}: "
                               f"{found}. Set M1_TOPIC_PARTITIONS to match, or recreate the topic with "
                               f"{settings.topic_partitions} partitions (its state table is partitioned alike).")
