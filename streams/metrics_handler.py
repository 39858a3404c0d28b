"""The metrics path's batch handler: pipeline in a thread, outputs to Kafka, then return.

It returns the batch's :class:`~streams.metrics_pipeline.BatchOutcome`, whose decoded points
the forecast handler learns next (``streams.app`` wires the two). With a :class:`DecodeAhead`, a
batch read while the one before it is handled is decoded meanwhile, in a thread of its own: the
decoding's Python then runs while the batch before it is in the compiled kernels and the store
engine, which release the GIL. The batch consumer
(``streams.batch_consumer``) commits a batch's offsets only after both returned, that is
after the store inserts and the Kafka sends have all completed.

:func:`batch_dead_letters` dead-letters the records of a batch that the store kept rejecting
(``streams.retry``), for the metrics topic's consumer and the OTLP agents.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from streams.batch_consumer import BatchDeadLetters, KafkaEvent
from streams.metrics_pipeline import Anomaly, BatchOutcome, DeadLetter, MetricsPipeline, Record, dead_letter
from streams.publisher import Forward, OutputRecord, Publisher
from streams.tracing import batch_span, in_thread, prepare_span, record_outcome, stage

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def records_of(events: Sequence[KafkaEvent] | Sequence[Any]) -> list[Record]:
    """The pipeline's view of a batch: the batch consumer's records as they are (its list; a fetched
    record has the fields of :class:`Record`), a Faust agent's events as records of their messages."""
    if not events or isinstance(events[0], KafkaEvent):  # the batch's own list, not a copy (it touches every record)
        return events if isinstance(events, list) else list(events)
    return [Record(e.message.topic, e.message.partition, e.message.offset, e.key, e.value) for e in events]


#: What runs beside the scoring of a batch, given its admitted points (the forecasting step).
Alongside = Callable[[BatchOutcome], Awaitable[None]]
#: The handler of a metrics batch; it returns its outcome once ``alongside`` (if given) is done too.
MetricsHandler = Callable[[Sequence[KafkaEvent], Alongside | None], Awaitable[BatchOutcome]]


async def side_by_side(first: Awaitable[T], second: Awaitable[None]) -> T:
    """``first``'s result once ``second`` ended too; if either raised, the first error (after both ended:
    a retry never starts while a part of the try before it still runs)."""
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results[0]


def settle_from_thread(future: asyncio.Future[T], result: T | BaseException) -> None:
    """Settle ``future`` with ``result`` (an exception: raised by it) from a thread other than its loop's."""
    future.get_loop().call_soon_threadsafe(_settle, future, result)


def _settle(future: asyncio.Future[T], result: T | BaseException) -> None:
    if not future.done():  # not cancelled meanwhile
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


async def _then(admitted: asyncio.Future[BatchOutcome], alongside: Alongside) -> None:
    await alongside(await admitted)


def _ignore(_: object) -> None:
    pass


class DecodeAhead:
    """The decoding of the next metrics batch, started as soon as it is read in full (the batch
    consumer's ``ready``), while the batch before it is handled; the handler takes it once."""

    def __init__(self, pipeline: MetricsPipeline):
        self.pipeline = pipeline
        self._next: tuple[Sequence[KafkaEvent], asyncio.Future[BatchOutcome]] | None = None

    def ready(self, events: Sequence[KafkaEvent]) -> None:
        """Start decoding ``events`` in a thread (a batch read before and never handled is forgotten)."""
        self._next = (events, asyncio.ensure_future(in_thread(self._decode, records_of(events))))

    def _decode(self, records: list[Record]) -> BatchOutcome:
        with prepare_span(self.pipeline.settings.topic_metrics, len(records), agent="metrics"):
            return self.pipeline.decode(records)

    def take(self, events: Sequence[KafkaEvent]) -> asyncio.Future[BatchOutcome] | None:
        """The decoding of ``events`` (the very list :meth:`ready` was told of), once; else None."""
        if self._next is None or self._next[0] is not events:
            return None
        decoding, self._next = self._next[1], None
        return decoding


def metrics_handler(pipeline: MetricsPipeline, publisher: Publisher, settings: Settings,
                    forward: Forward | None = None, ahead: DecodeAhead | None = None) -> MetricsHandler:
    """The handler of metrics batches, bound to its pipeline and publisher; re-keyed records go
    through ``forward`` if given (the consumer's transaction: ``streams.publisher.Forwarder``); a
    batch ``ahead`` decoded already is taken from there (a retry decodes it again)."""

    def admit_and_score(records: list[Record], decoded: BatchOutcome | None,
                        admitted: Callable[[BatchOutcome | BaseException], None]) -> BatchOutcome:
        """Admit the batch (decoded first unless ``decoded``), hand ``admitted`` its points (or the
        error), then score and store it: one thread, with no hop back to the event loop between."""
        try:
            outcome = pipeline.admit(pipeline.decode(records) if decoded is None else decoded)
        except BaseException as exc:
            admitted(exc)
            raise
        admitted(outcome)
        return pipeline.score_admitted(outcome)

    async def handle(events: Sequence[KafkaEvent], alongside: Alongside | None = None) -> BatchOutcome:
        with batch_span(settings.topic_metrics, events, agent="metrics") as span:
            with stage("consume"):
                records = records_of(events)
            decoding = None if ahead is None else ahead.take(events)
            decoded = None if decoding is None else await decoding
            if alongside is None:
                outcome = await in_thread(admit_and_score, records, decoded, _ignore)
            else:
                admitted: asyncio.Future[BatchOutcome] = asyncio.get_running_loop().create_future()
                outcome = await side_by_side(in_thread(admit_and_score, records, decoded, partial(settle_from_thread, admitted)),
                                             _then(admitted, alongside))
            with stage("produce"):
                alerts = alert_records(settings, outcome.dead_letters, outcome.anomalies)
                if forward is None or not outcome.rekeyed:
                    await publisher.publish(alerts + outcome.rekeyed)
                else:
                    await asyncio.gather(publisher.publish(alerts), forward(outcome.rekeyed))
            record_outcome(span, stored=outcome.stored, dead_letters=len(outcome.dead_letters),
                           anomalies=len(outcome.anomalies), rekeyed=len(outcome.rekeyed))
        return outcome

    return handle


def alert_records(settings: Settings, dead_letters: Iterable[DeadLetter], anomalies: Iterable[Anomaly]) -> list[OutputRecord]:
    """Dead letters (unkeyed) and anomalies (keyed by series) as records for their topics."""
    records: list[OutputRecord] = [(settings.topic_dead_letter, None, msgspec.json.encode(d)) for d in dead_letters]
    records += [(settings.topic_anomalies, a.series.encode(), msgspec.json.encode(a)) for a in anomalies]
    return records


def batch_dead_letters(pipeline: MetricsPipeline, publisher: Publisher, settings: Settings) -> BatchDeadLetters:
    """Dead-letters every record of a batch with a reason: on the dead-letter topic first, and
    returns once the broker has them (the topic is the record of truth, since the store may be
    what fails), then in the dead_letters table if the store takes them (if not, that is logged)."""

    async def dead_letter_batch(events: Sequence[KafkaEvent], reason: str) -> None:
        now = time.time()
        letters = [dead_letter(record, reason, now, settings.max_payload_bytes) for record in records_of(events)]
        with stage("produce"):
            await publisher.publish(alert_records(settings, letters, ()))
        try:  # the pipeline's way in for dead letters (nothing to score here)
            await in_thread(pipeline.score_and_store, {}, now, letters)
        except Exception as exc:
            log.warning("%d dead letters are on %s but not in the dead_letters table: %s",
                        len(letters), settings.topic_dead_letter, exc)

    return dead_letter_batch
