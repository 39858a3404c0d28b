"""The worker's own health as Prometheus metrics (served at ``GET /v1/metrics``, text format).

Ground floor: it imports only ``prometheus_client``, so every layer (the store, the streams,
the API) can report to it. One :class:`PipelineMetrics` holds a registry of its own, never
prometheus_client's global one, so several can live in one process (tests, benchmarks).

==============================================  =========  ==================================================
family                                          type       meaning
==============================================  =========  ==================================================
``m1_consumer_lag_records{topic,partition}``    gauge      records of the partition not handled yet (its end
                                                           offset - the next to handle), asked at each scrape
``m1_batch_seconds``                            histogram  time to handle one batch of the metrics topic
                                                           (stored, and its outputs acknowledged by Kafka)
``m1_points_stored_total``                      counter    points of the metrics topic stored: ``rate()`` of
                                                           it is points/s
``m1_dead_letters_total{reason}``               counter    dead letters of the metrics topic's batches, by
                                                           :func:`reason_class` (whole batches the store kept
                                                           rejecting included)
``m1_live_models{bank}``                        gauge      live models of each model bank
``m1_checkpoint_age_seconds``                   gauge      seconds since the last successful checkpoint
                                                           (since the metrics were made, before the first)
``m1_store_insert_seconds{table}``              histogram  one insert into the store, by table
==============================================  =========  ==================================================

Every label is bounded: topics and partitions are the consumer's assignment (with tenant
topics, the tenants' topic names), banks and tables are the pipeline's own, and reasons are
classes (a dead letter's reason holds the record's own text, so it never becomes a label).

>>> m = PipelineMetrics()
>>> m.batch_handled(0.25, stored=100, dead_letter_reasons=["quota: over 5 points/s", "Expected `float`"])
>>> async def lag(): return {("metrics", 0): 7}
>>> m.watch_lag(lag)
>>> asyncio.run(m.refresh())
>>> text = m.exposition().decode()
>>> 'm1_points_stored_total 100.0' in text, 'm1_dead_letters_total{reason="quota"} 1.0' in text
(True, True)
>>> 'm1_consumer_lag_records{partition="0",topic="metrics"} 7.0' in text
True
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

#: Content type of :meth:`PipelineMetrics.exposition`: text format 0.0.4, which every Prometheus
#: reads (the names here are plain ASCII, so the text is the same in the newer 1.0.0).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Dead-letter reason classes: a reason starting with the prefix counts as the class. Any other
#: reason (a schema or decoding error, whose text comes from the record) counts as ``invalid``.
REASON_CLASSES: tuple[tuple[str, str], ...] = (
    ("quota:", "quota"),
    ("tenant mismatch:", "tenant_mismatch"),
    ("malformed JSON", "malformed_json"),
    ("empty record", "empty"),
    ("payload of ", "oversize"),
    ("ts is ", "future"),
    ("store:", "store"),  # a batch the store kept rejecting (streams.retry)
)

#: Longest wait for the consumer lag at a scrape (Prometheus' default scrape timeout is 10 s).
LAG_TIMEOUT_SECONDS = 2.0
#: Batch latency buckets (seconds): a batch takes from a few milliseconds to a few seconds.
BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Store insert buckets (seconds).
INSERT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)

#: A topic partition: ``(topic, partition)`` (aiokafka's TopicPartition is one).
Partition = tuple[str, int]
#: Dead-letters every record of a batch with one reason (``streams.batch_consumer.BatchDeadLetters``).
BatchDeadLetters = Callable[[Sequence[Any], str], Awaitable[None]]
#: Records not handled yet, by partition (``streams.batch_consumer.BatchConsumer.lag``).
LagSource = Callable[[], Awaitable[Mapping[Partition, int]]]
log = logging.getLogger(__name__)


def reason_class(reason: str) -> str:
    """The bounded class a dead letter's reason counts under (see :data:`REASON_CLASSES`).

    >>> reason_class("tenant mismatch: payload says 'beta', topic belongs to 'acme'")
    'tenant_mismatch'
    >>> reason_class("Object contains unknown field `anything a producer chose`")
    'invalid'
    """
    for prefix, name in REASON_CLASSES:
        if reason.startswith(prefix):
            return name
    return "invalid"


class PipelineMetrics:
    """The families of the module docstring, in a registry of their own; thread-safe (the
    pipeline reports from its threads, the API reads on the event loop). A scrape awaits
    :meth:`refresh`, then reads :meth:`exposition`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.lag = Gauge("m1_consumer_lag_records", "Records of the partition not handled yet (highwater - next offset).",
                         ["topic", "partition"], registry=r)
        self.batch_seconds = Histogram("m1_batch_seconds", "Time to handle one batch of the metrics topic.",
                                       buckets=BATCH_BUCKETS, registry=r)
        self.points = Counter("m1_points_stored", "Points stored.", registry=r)
        self.dead_letters = Counter("m1_dead_letters", "Dead letters, by reason class.", ["reason"], registry=r)
        self.live_models = Gauge("m1_live_models", "Live models of a model bank.", ["bank"], registry=r)
        self.checkpoint_age = Gauge("m1_checkpoint_age_seconds", "Seconds since the last successful checkpoint.",
                                    registry=r)
        self.insert_seconds = Histogram("m1_store_insert_seconds", "One insert into the store, by table.", ["table"],
                                        buckets=INSERT_BUCKETS, registry=r)
        self._last_checkpoint = time.monotonic()
        self.checkpoint_age.set_function(lambda: time.monotonic() - self._last_checkpoint)
        self._lag_source: LagSource | None = None

    def batch_handled(self, seconds: float, stored: int, dead_letter_reasons: Iterable[str]) -> None:
        """One batch of the metrics topic handled in ``seconds``: ``stored`` points, and dead
        letters with these reasons."""
        self.batch_seconds.observe(seconds)
        self.outputs(stored, dead_letter_reasons)

    def outputs(self, stored: int, dead_letter_reasons: Iterable[str]) -> None:
        """A batch of any topic stored ``stored`` points and dead-lettered records with these reasons."""
        self.points.inc(stored)
        for reason in dead_letter_reasons:
            self.dead_letters.labels(reason_class(reason)).inc()

    def counting_dead_letters(self, dead_letter: BatchDeadLetters) -> BatchDeadLetters:
        """``dead_letter`` that, once it returned, counts the batch's records under the reason's class."""

        async def counted(records: Sequence[Any], reason: str) -> None:
            await dead_letter(records, reason)
            self.dead_letters.labels(reason_class(reason)).inc(len(records))

        return counted

    def watch_lag(self, lag: LagSource) -> None:
        """Ask ``await lag()`` for the consumer lag at every :meth:`refresh`."""
        self._lag_source = lag

    async def refresh(self) -> None:
        """Ask for what is known only on request, on the event loop the source runs on: the
        consumer lag, replaced as a whole (a partition no longer assigned disappears). If the
        answer fails or takes over :data:`LAG_TIMEOUT_SECONDS`, the last values stay (logged)."""
        if self._lag_source is None:
            return
        try:
            lags = await asyncio.wait_for(self._lag_source(), LAG_TIMEOUT_SECONDS)
        except Exception as exc:
            log.warning("consumer lag unknown at this scrape (%s); the last values stay", exc or type(exc).__name__)
            return
        self.lag.clear()
        for (topic, partition), records in lags.items():
            self.lag.labels(topic, str(partition)).set(records)

    def watch_bank(self, bank: str, live: Callable[[], int]) -> None:
        """Report ``live()`` as the live models of ``bank`` at every scrape."""
        self.live_models.labels(bank).set_function(live)

    def checkpointed(self) -> None:
        """A checkpoint succeeded now."""
        self._last_checkpoint = time.monotonic()

    def store_insert(self, table: str, seconds: float) -> None:
        """One insert into ``table`` took ``seconds``."""
        self.insert_seconds.labels(table).observe(seconds)

    def exposition(self) -> bytes:
        """Every family in Prometheus' text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)
