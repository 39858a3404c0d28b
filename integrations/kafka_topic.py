"""A Kafka topic as a receiver: the generic webhook's event (``webhook.payload``) as JSON, keyed by
the notification id (consumers de-duplicate by it), on ``options["topic"]`` of the pipeline's
cluster. Delivered once Kafka acknowledged it (all in-sync replicas)."""

from __future__ import annotations

import msgspec

from integrations import webhook
from integrations.context import Context
from integrations.notification import Notification
from integrations.outcome import Outcome

payload = webhook.payload


async def deliver(ctx: Context, n: Notification) -> Outcome:
    topic = n.receiver.options.get("topic", "")
    if not topic or ctx.publish is None:
        return Outcome(False, reason="kafka: no topic" if not topic else "kafka: no producer")
    try:
        await ctx.publish([(topic, n.id.encode(), msgspec.json.encode(payload(n)))])
    except Exception as exc:  # aiokafka errors: the broker may be back on the next try
        return Outcome(False, True, reason=f"kafka: {type(exc).__name__}: {exc}"[:300])
    return Outcome(True, status=200)
