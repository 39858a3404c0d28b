"""Store inserts forwarded over Kafka to the one process that owns the embedded store (#14, item 5).

chdb opens a data directory in one process only. To score in several processes on one machine,
scorer processes (``m1 worker --role scorer``) get a :class:`ForwardingStore` instead of the
store: each insert becomes Arrow IPC messages (zstd, at most :data:`MAX_MESSAGE_BYTES` of rows
each; the table's name in the schema's metadata) on the internal topic :func:`inserts_topic`,
and ``insert`` returns once the broker acknowledged them, so the scorer commits its input only
after its rows are safely on their way. The store owner (``m1 worker --role store-owner``) reads
that topic in batches, inserts each table's rows with :class:`InsertApplier`, and commits only
after the inserts.

Replay-safe: every message is keyed by an idempotency key, the SHA-256 of its table and bytes.
The applier skips keys it applied already (the last :data:`REMEMBERED_KEYS`), so a message sent
twice is inserted once; after an owner crash the messages after its last commit are inserted
again, and the tables (all ``ReplacingMergeTree``) collapse the identical rows.

>>> import pyarrow as pa
>>> [(key, value)] = encode_insert("anomalies", {"series": ["a", "b"], "score": pa.array([1.0, 2.0])})
>>> table, rows = decode_insert(value)
>>> table, rows.num_rows, rows.column_names, len(key)
('anomalies', 2, ['series', 'score'], 32)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable

import pyarrow as pa
import pyarrow.ipc

log = logging.getLogger(__name__)

#: Bytes of rows per message (before compression), well under the broker's 1 MiB message limit.
MAX_MESSAGE_BYTES = 512 * 1024
#: Idempotency keys the applier remembers.
REMEMBERED_KEYS = 100_000
_TABLE = b"m1.table"
_IPC = pyarrow.ipc.IpcWriteOptions(compression="zstd")

#: Sends ``(topic, key, value)`` records and returns once the broker acknowledged them.
Send = Callable[[list[tuple[str, bytes | None, bytes]]], Awaitable[int]]


def inserts_topic(app_id: str) -> str:
    """The internal topic of the forwarded inserts of the workers of ``app_id``."""
    return f"{app_id}-store-inserts"


def encode_insert(table: str, columns: dict[str, pa.Array | list]) -> list[tuple[bytes, bytes]]:
    """``columns`` of ``table`` as ``(idempotency key, Arrow IPC stream)`` messages."""
    rows = pa.table(columns)
    rows = rows.replace_schema_metadata({_TABLE: table.encode()})
    per_message = max(1, rows.num_rows * MAX_MESSAGE_BYTES // max(1, rows.nbytes))
    messages = []
    for offset in range(0, rows.num_rows, per_message):
        sink = pa.BufferOutputStream()
        with pyarrow.ipc.new_stream(sink, rows.schema, options=_IPC) as writer:
            writer.write_table(rows.slice(offset, per_message))
        value = sink.getvalue().to_pybytes()
        messages.append((hashlib.sha256(table.encode() + b"\0" + value).digest(), value))
    return messages


def decode_insert(value: bytes) -> tuple[str, pa.Table]:
    """The table name and rows of one message (``pa.ArrowInvalid`` if it is not one)."""
    rows = pyarrow.ipc.open_stream(value).read_all()
    table = (rows.schema.metadata or {}).get(_TABLE)
    if not table:
        raise pa.ArrowInvalid("not a forwarded insert (no table name)")
    return table.decode(), rows.replace_schema_metadata(None)


class ForwardingStore:
    """The store as a scorer process sees it: ``insert`` only (see the module docstring).

    ``insert`` blocks its thread until the broker acknowledged the rows; it runs ``send`` on
    ``loop`` (the worker's event loop), so it must be called from another thread, as the
    pipelines' batches are (``streams.tracing.in_thread``)."""

    def __init__(self, topic: str, send: Send, loop: Callable[[], asyncio.AbstractEventLoop]):
        self.topic = topic
        self.send = send
        self.loop = loop

    def insert(self, table: str, columns: dict[str, pa.Array | list]) -> int:
        """Forward one batch given as named columns; returns the row count once it is on Kafka."""
        messages = encode_insert(table, columns)
        loop = self.loop()
        if _running_loop() is loop:
            raise RuntimeError("ForwardingStore.insert blocks: call it from a worker thread, not the event loop's")
        asyncio.run_coroutine_threadsafe(self.send([(self.topic, key, value) for key, value in messages]), loop).result()
        return len(pa.table(columns)) if messages else 0


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class InsertApplier:
    """The store owner's side: inserts forwarded messages, each idempotency key once."""

    def __init__(self, insert: Callable[[str, dict[str, pa.ChunkedArray]], int], remembered: int = REMEMBERED_KEYS):
        self.insert = insert
        self.remembered = remembered
        self._applied: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def apply(self, messages: Iterable[tuple[bytes | None, bytes]]) -> int:
        """Insert the rows of ``messages`` (``(key, value)``), one insert per table, skipping keys
        applied before; returns the rows inserted. Keys count as applied only once every insert
        succeeded (an exception leaves them to the retry)."""
        with self._lock:
            by_table: dict[str, list[pa.Table]] = defaultdict(list)
            keys: list[bytes] = []
            for key, value in messages:
                if key is not None and (key in self._applied or key in keys):
                    continue
                try:
                    table, rows = decode_insert(value)
                except pa.ArrowInvalid as exc:  # not written by encode_insert: nothing to insert
                    log.error("skipped a message of the inserts topic that is not a forwarded insert: %s", exc)
                    continue
                by_table[table].append(rows)
                if key is not None:
                    keys.append(key)
            inserted = 0
            for table, parts in by_table.items():
                rows = pa.concat_tables(parts, promote_options="permissive")
                inserted += self.insert(table, dict(zip(rows.column_names, rows.columns)))
            for key in keys:
                self._applied[key] = None
            while len(self._applied) > self.remembered:
                self._applied.popitem(last=False)
            return inserted
