"""Create the pipeline's topics before the worker subscribes to them.

Faust only declares its internal topics; a consumer subscribed to a topic that does
not exist yet would wait for a metadata refresh (minutes) after it appears.
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from m1.settings import Settings


def pipeline_topics(settings: Settings) -> list[str]:
    """Names of the topics the pipeline reads and writes."""
    return [settings.topic_metrics, settings.topic_dead_letter, settings.topic_anomalies,
            settings.topic_otlp_spans, settings.topic_otlp_metrics, settings.topic_bottlenecks,
            settings.topic_forecasts, settings.topic_recommendations]


def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create missing topics with ``settings.topic_partitions``; returns the ones created."""
    wanted = names or pipeline_topics(settings)

    async def create() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap)
        await admin.start()
        try:
            missing = [n for n in wanted if n not in set(await admin.list_topics())]
            if missing:
                new = [NewTopic(n, num_partitions=settings.topic_partitions, replication_factor=1) for n in missing]
                try:
                    await admin.create_topics(new)
                except TopicAlreadyExistsError:
                    pass
            return missing
        finally:
            await admin.close()

    return asyncio.run(create())
