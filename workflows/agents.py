"""The engine inside the worker: Faust agents around the pure core (``workflows.engine``).

``wire(app, settings, store, publisher)`` (one line in ``streams.app.build_app``) adds:

* one source agent per source topic (anomalies, bottlenecks, costs (cost projections), region
  events): each record becomes a :class:`~workflows.signals.Signal` on
  ``workflow_signals``, keyed by tenant; a record that is not one is dead-lettered with the reason;
* the engine agent on ``workflow_signals``: its state is the Faust table ``workflow_state``
  (changelog topic ``<app id>-workflow_state-changelog``; a restarted worker reads it back before
  the agent runs), so groups, runs, incidents and silences survive restarts. Each input is
  applied by :meth:`Engine.handle`; the effects are carried out before the next input:
  notifications (enriched with the service's trace bottlenecks when a step asked) to the
  notifications topic, incident and run records to their topics, webhook calls in the
  background (their answers come back as controls on ``workflow_signals``);
* a leader timer putting a ``tick`` on every partition of ``workflow_signals`` each
  ``M1_WORKFLOW_TICK_SECONDS``, so deadlines are kept by the partition's owner, in order with its
  inputs; a tick also reloads the workflow files when they changed (a bad file keeps the old);
* batch consumers storing the incidents and workflow_runs topics in their tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import faust
import msgspec

from integrations import webhook
from integrations.notification import encode as encode_notification
from core.settings import Settings
from core.kafka.topics import check_partitions, ensure_topics
from sinks.clickhouse import Store
from streams.batch_consumer import BatchConsumer, KafkaEvent
from streams.metrics_handler import alert_records, records_of
from streams.metrics_pipeline import dead_letter
from streams.publisher import OutputRecord, Publisher, partition_of
from streams.tracing import in_thread
from workflows.engine import Effect, Engine
from workflows.enrich import Bottlenecks
from workflows.records import store_incidents, store_runs
from workflows.signals import Control, decode_input, encode_input, from_source
from workflows.spec import SpecError, TenantWorkflows, load_dir

log = logging.getLogger(__name__)
_json = msgspec.json.Encoder()


def workflows_dir(settings: Settings) -> Path:
    return (settings.workflows_dir or settings.home / "workflows").resolve()


class Specs:
    """The workflow files, reloaded when one changes (an invalid set keeps the last good one)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.stamp: tuple = ()
        self.current: dict[str, TenantWorkflows] = {}
        self.reload()

    def _stamp(self) -> tuple:
        if not self.directory.is_dir():
            return ()
        return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size)
                            for p in [*self.directory.glob("*.yaml"), *self.directory.glob("*.yml")]))

    def reload(self) -> bool:
        """Load the files again if they changed; True when the set in force changed."""
        stamp = self._stamp()
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        try:
            self.current = load_dir(self.directory) if stamp else {}
        except SpecError as exc:
            log.error("workflows: keeping the workflows in force: %s", exc)
            return False
        log.info("workflows: %d tenant file(s) from %s", len(self.current), self.directory)
        return True


class TableState(MutableMapping[str, str]):
    """The engine's key-value state over a Faust table, its changelog records sent explicitly to
    the partition of the key's tenant (every key starts ``<kind>:<tenant>``): the partition of
    ``workflow_signals`` that carries that tenant's inputs, whichever input of a batch wrote it."""

    def __init__(self, table: Any, partitions: int) -> None:
        self.table = table
        self.partitions = partitions

    def _partition(self, key: str) -> int:
        return partition_of(key[2:].split("|", 1)[0].encode(), self.partitions)

    def __getitem__(self, key: str) -> str:
        return self.table.data[key]

    def __setitem__(self, key: str, value: str) -> None:
        self.table.data[key] = value
        self.table.send_changelog(self._partition(key), key, value)

    def __delitem__(self, key: str) -> None:
        del self.table.data[key]
        self.table.send_changelog(self._partition(key), key, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.table.data.keys()))

    def __len__(self) -> int:
        return len(self.table.data)


#: How long an agent waits to fill a batch. Faust's ``take_events`` wakes the agent that often even
#: when nothing comes, and each wake costs tasks and futures: at 5-20 ms, the five agents took about
#: 8 % of a busy worker's CPU; a signal waits at most this long more.
TAKE_WITHIN_SECONDS = 0.1


def source_topics(settings: Settings) -> dict[str, str]:
    """Source name -> topic."""
    return {"anomalies": settings.topic_anomalies, "bottlenecks": settings.topic_bottlenecks,
            "costs": settings.topic_costs, "region_events": settings.topic_region_events}


def wire(app: faust.App, settings: Settings, store: Store, publisher: Publisher) -> Engine:
    """Add the workflow agents, table, timer and table writers to ``app``; returns the engine."""
    sources = source_topics(settings)
    created = ensure_topics(settings, [*sources.values(), settings.topic_workflow_signals, settings.topic_incidents,
                                       settings.topic_workflow_runs, settings.topic_notifications])
    check_partitions(settings, [t for t in [settings.topic_workflow_signals] if t not in created])
    specs = Specs(workflows_dir(settings))
    table = app.Table("workflow_state", partitions=settings.topic_partitions, schema=faust.Schema(
        key_type=str, value_type=str, key_serializer="json", value_serializer="raw"))
    engine = Engine(specs.current, TableState(table, settings.topic_partitions), clear_after=settings.incident_clear_seconds)
    signals = app.topic(settings.topic_workflow_signals, key_serializer="raw", value_serializer="raw",
                        partitions=settings.topic_partitions)
    bottlenecks = Bottlenecks(store)
    calls: set[asyncio.Task] = set()

    for source, topic in sources.items():
        app.agent(app.topic(topic, key_serializer="raw", value_serializer="raw"), name=f"workflow_source_{source}")(
            source_agent(source, settings, publisher))

    async def answer(effect: Effect) -> None:
        """Call the webhook of a step and put its answer on the engine's input."""
        v = effect.value
        status, body = await webhook.call(v["receiver"], v["payload"], msg_id=effect.key, timeout=v["timeout"])
        control = Control("answer", tenant=v["tenant"], ts=time.time(), data={
            "group": v["group"], "run": v["run"], "call": v["call"], "status": status,
            "json": body if isinstance(body, dict) else {}})
        await publisher.publish([(settings.topic_workflow_signals, v["tenant"].encode(), encode_input(control))])

    async def carry_out(effects: list[Effect], records: list[OutputRecord]) -> None:
        for effect in effects:
            if effect.kind == "notification":
                n = effect.value
                if effect.enrich:
                    found = await in_thread(bottlenecks, n.tenant, n.incident.get("service", ""), n.source_ts, effect.enrich)
                    n = msgspec.structs.replace(n, enrichment={**n.enrichment, "bottlenecks": found})
                records.append((settings.topic_notifications, n.id.encode(), encode_notification(n)))
            elif effect.kind == "incident":
                records.append((settings.topic_incidents, effect.key.encode(), _json.encode(effect.value)))
            elif effect.kind == "run":
                records.append((settings.topic_workflow_runs, effect.key.encode(), _json.encode(effect.value)))
            else:
                task = asyncio.create_task(answer(effect))
                calls.add(task)
                task.add_done_callback(calls.discard)
        if records:
            await publisher.publish(records)

    def apply(event: Any, now: float) -> list[Effect]:
        """One input applied; raises ValueError for one that is not valid."""
        try:
            item = decode_input(event.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ValueError(f"workflows: bad input: {exc}") from None
        if isinstance(item, Control) and item.action == "tick":
            if specs.reload():
                engine.specs = dict(specs.current)
            n = settings.topic_partitions
            return engine.tick(now, [t for t in engine.tenants() if partition_of(t.encode(), n) == event.message.partition])
        try:
            return engine.handle(item, now)
        except (ValueError, TypeError) as exc:  # a control naming nothing valid
            raise ValueError(f"workflows: {exc}") from None

    @app.agent(signals, name="workflow_engine")
    async def run_engine(stream: Any) -> None:
        # A batch's effects are published together before the next batch is read (then its
        # offsets may be committed): a crash replays the inputs whose effects may not be out.
        async for events in stream.take_events(500, within=TAKE_WITHIN_SECONDS):
            effects: list[Effect] = []
            letters = []
            for event in events:
                now = time.time()
                try:
                    effects += apply(event, now)
                except ValueError as exc:
                    letters.append(dead_letter(records_of([event])[0], str(exc), now, settings.max_payload_bytes))
            await carry_out(effects, alert_records(settings, letters, []))

    @app.timer(settings.workflow_tick_seconds, on_leader=True, name="workflow_tick")
    async def tick() -> None:
        value = encode_input(Control("tick", ts=time.time()))
        for partition in range(settings.topic_partitions):
            await signals.send(value=value, partition=partition)

    for topic, write in ((settings.topic_incidents, store_incidents), (settings.topic_workflow_runs, store_runs)):
        app.service(BatchConsumer(settings.model_copy(update={"tenant_topics": False}), topic,
                                  group_id=f"{settings.app_id}-{topic}", handler=table_writer(store, write),
                                  checkpoints=[]))
    return engine


def table_writer(store: Store, write: Any) -> Any:
    """A batch handler storing the JSON records of a batch with ``write(store, records)``."""

    async def handle(batch: Sequence[KafkaEvent]) -> None:
        await in_thread(write, store, [msgspec.json.decode(e.value) for e in batch if e.value])

    return handle


def source_agent(source: str, settings: Settings, publisher: Publisher) -> Any:
    """An agent turning each record of ``source``'s topic into a signal on ``workflow_signals``."""

    async def agent(stream: Any) -> None:
        async for events in stream.take_events(1000, within=TAKE_WITHIN_SECONDS):
            now = time.time()
            records: list[OutputRecord] = []
            letters = []
            for event in events:
                raw = event.value or b""
                try:
                    signal = from_source(source, raw, received=now)
                except ValueError as exc:
                    letters.append(dead_letter(records_of([event])[0], str(exc), now, settings.max_payload_bytes))
                    continue
                records.append((settings.topic_workflow_signals, signal.tenant.encode(), encode_input(signal)))
            await publisher.publish(records + alert_records(settings, letters, []))

    return agent
