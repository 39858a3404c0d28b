"""Issue #11 item 3: 1,000+ random tamperings of a stored log on the real engine, every one detected.

A log of two tenants (``victim``: 300 events, a signed head every 40 or so and one at the end;
``bystander``: 30) is chained into the engine once. Each example rewrites the audit tables with a
tampered copy (a changed field; a deleted, inserted or reordered event, each with and without the
chain recomputed after it; a truncated tail; a checkpoint altered, replaced, or re-signed with a
foreign key; a rollback to an older state that is consistent in itself) and verifies it the way
``m1 audit verify`` does, with the newest head a previous run saw as witness.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from audit import keys, log
from audit.chain import GENESIS, Chain, Row, link
from audit.merkle import leaf_hash
from audit.sth import TreeHead, sign
from audit.verify import verify_tenant
from sinks.clickhouse import Store
from tests.audit.support import ingest, payload

VICTIM, BYSTANDER, EVENTS, OLD = "victim", "bystander", 300, 150


@dataclasses.dataclass
class Log:
    rows: list[Row]
    heads: list[TreeHead]


@pytest.fixture(scope="module")
def world(store: Store, tmp_path_factory: pytest.TempPathFactory) -> dict:
    key = tmp_path_factory.mktemp("tamper") / "k.pem"
    now = [1_700_000_000.0]
    chainer = ingest(store, key, checkpoint_events=40, clock=lambda: now[0])
    for start in range(0, OLD, 25):
        chainer.process([payload(VICTIM, i) for i in range(start, start + 25)])
        now[0] += 1
    chainer.process([payload(VICTIM, OLD + 100_000)])  # the older state ends with a head of its own
    now[0] += 100_000
    chainer.due_heads()
    old = snapshot(store, VICTIM)
    for start in range(OLD + 1, EVENTS, 25):
        chainer.process([payload(VICTIM, i) for i in range(start, min(start + 25, EVENTS))] + [payload(BYSTANDER, start)])
        now[0] += 1
    now[0] += 100_000
    chainer.due_heads()  # every event is under a signed head
    return {"key": key, "trusted": keys.trusted_keys(key), "pristine": snapshot(store, VICTIM), "old": old,
            "bystander": snapshot(store, BYSTANDER)}


def snapshot(store: Store, tenant: str) -> Log:
    c = log.columns(store, tenant)
    rows = [Row(tenant, s, i.hex(), e.decode(), p.hex(), h.hex())
            for s, i, e, p, h in zip(c["seq"], c["id"], c["event"], c["prev_hash"], c["hash"])]
    return Log(rows, log.heads(store, tenant))


@dataclasses.dataclass
class Writer:
    """Rewrites the store's audit tables to hold exactly ``logs`` (as an attacker with the files
    would). The heads are rewritten only when they differ from those it wrote last: most tamperings
    keep them, and a rewrite costs as much as the verification."""

    store: Store
    heads: list[TreeHead] | None = None

    def __call__(self, *logs: Log) -> None:
        self.store.command("TRUNCATE TABLE audit_log")
        log.append(self.store, [row for entry in logs for row in entry.rows])
        heads = [sth for entry in logs for sth in entry.heads]
        if heads != self.heads:
            self.store.command("TRUNCATE TABLE audit_checkpoints")
            log.insert_heads(self.store, heads)
            self.heads = heads


@pytest.fixture(scope="module")
def write(store: Store) -> Writer:
    return Writer(store)


def rechain(rows: list[Row], start: int) -> list[Row]:
    """What an attacker who recomputes the chain writes: seq, ids and hashes consistent from ``start``."""
    chain = Chain(VICTIM, bytes.fromhex(rows[start - 1].hash) if start else GENESIS)
    out = rows[:start]
    for i, row in enumerate(rows[start:], start):
        data = row.event.encode()
        digest = link(chain.head, data)
        out.append(Row(row.tenant, i, leaf_hash(data).hex(), row.event, chain.head.hex(), digest.hex()))
        chain.head = digest
    return out


def flip(hex_text: str, at: int) -> str:
    at %= len(hex_text)
    return hex_text[:at] + ("0" if hex_text[at] != "0" else "1") + hex_text[at + 1:]


def forged_event(i: int) -> str:
    return payload(VICTIM, 10_000_000 + i, actor="key:forged").decode()


Tamper = Callable[[Log, Log], Log]  # (pristine, older state) -> tampered


def tamperings() -> st.SearchStrategy[tuple[str, Tamper]]:
    i = st.integers(0, EVENTS - 1)
    j = st.integers(0, EVENTS - 1)
    re = st.booleans()

    def field(i: int, column: str, at: int) -> tuple[str, Tamper]:
        def apply(p: Log, _: Log) -> Log:
            row = p.rows[i]
            changed = {"event": lambda: row.event.replace("key:abc", "key:abd", 1) if at % 2 else row.event[:-1] + " }",
                       "id": lambda: flip(row.id, at), "prev_hash": lambda: flip(row.prev_hash, at),
                       "hash": lambda: flip(row.hash, at), "seq": lambda: (row.seq + 1 + at % 500) % 1000,
                       "tenant": lambda: BYSTANDER}[column]()
            rows = list(p.rows)
            rows[i] = dataclasses.replace(row, **{column: changed})
            return Log(rows, p.heads)
        return f"field:{column}", apply

    def modify(i: int, again: bool) -> tuple[str, Tamper]:
        def apply(p: Log, _: Log) -> Log:
            rows = list(p.rows)
            rows[i] = dataclasses.replace(rows[i], event=rows[i].event.replace('"outcome":"success"', '"outcome":"denied"'))
            return Log(rechain(rows, i) if again else rows, p.heads)
        return f"modify{'+rechain' if again else ''}", apply

    def delete(i: int, again: bool) -> tuple[str, Tamper]:
        def apply(p: Log, _: Log) -> Log:
            rows = p.rows[:i] + p.rows[i + 1:]
            return Log(rechain(rows, i) if again and i < len(rows) else rows, p.heads)
        return f"delete{'+rechain' if again else ''}", apply

    def insert(i: int, again: bool) -> tuple[str, Tamper]:
        def apply(p: Log, _: Log) -> Log:
            data = forged_event(i)
            prev = p.rows[i - 1].hash if i else GENESIS.hex()
            forged = Row(VICTIM, i, leaf_hash(data.encode()).hex(), data, prev, link(bytes.fromhex(prev), data.encode()).hex())
            rows = p.rows[:i] + [forged] + [dataclasses.replace(r, seq=r.seq + 1) for r in p.rows[i:]]
            return Log(rechain(rows, i) if again else rows, p.heads)
        return f"insert{'+rechain' if again else ''}", apply

    def reorder(i: int, j: int, again: bool) -> tuple[str, Tamper]:
        a, b = min(i, j), max(i, j) if i != j else min(i + 1, EVENTS - 1) if i < EVENTS - 1 else i - 1
        a, b = min(a, b), max(a, b)

        def apply(p: Log, _: Log) -> Log:
            rows = list(p.rows)
            rows[a], rows[b] = dataclasses.replace(rows[b], seq=a), dataclasses.replace(rows[a], seq=b)
            return Log(rechain(rows, a) if again else rows, p.heads)
        return f"reorder{'+rechain' if again else ''}", apply

    def truncate(k: int, drop_heads: bool) -> tuple[str, Tamper]:
        def apply(p: Log, _: Log) -> Log:
            return Log(p.rows[:k], [h for h in p.heads if h.tree_size <= k] if drop_heads else p.heads)
        return f"truncate{'+drop-heads' if drop_heads else ''}", apply

    def head(h: int, how: str, at: int) -> tuple[str, Tamper]:
        def apply(p: Log, _: Log) -> Log:
            heads = list(p.heads)
            sth = heads[h % len(heads)]
            if how == "root":
                new = msgspec.structs.replace(sth, root=flip(sth.root, at))
            elif how == "size":
                new = msgspec.structs.replace(sth, tree_size=max(1, sth.tree_size - 1 - at % sth.tree_size))
            elif how == "time":
                new = msgspec.structs.replace(sth, timestamp_ms=sth.timestamp_ms + 1 + at)
            elif how == "signature":
                new = msgspec.structs.replace(sth, signature=flip(sth.signature, at))
            elif how == "foreign-key":  # a head re-signed by a key the history does not know
                new = sign(keys.new_private_key(), VICTIM, sth.tree_size, bytes.fromhex(sth.root), sth.timestamp_ms)
            else:  # "foreign-root": events rewritten, and a head over them signed with a foreign key
                rows = p.rows[:at % sth.tree_size] + [dataclasses.replace(p.rows[at % sth.tree_size], event=forged_event(at))]
                rows = rechain(rows + p.rows[len(rows):], at % sth.tree_size)
                from audit.merkle import tree_hash
                root = tree_hash([bytes.fromhex(r.id) for r in rows[:sth.tree_size]])
                new = sign(keys.new_private_key(), VICTIM, sth.tree_size, root, sth.timestamp_ms)
                heads[h % len(heads)] = new
                return Log(rows, heads)
            heads[h % len(heads)] = new
            return Log(p.rows, heads)
        return f"head:{how}", apply

    def rollback() -> tuple[str, Tamper]:
        return "rollback", lambda _, old: old

    return st.one_of(
        st.builds(field, i, st.sampled_from(["event", "id", "prev_hash", "hash", "seq", "tenant"]), st.integers(0, 10_000)),
        st.builds(modify, i, re), st.builds(delete, i, re), st.builds(insert, i, re), st.builds(reorder, i, j, re),
        st.builds(truncate, st.integers(0, EVENTS - 1), st.booleans()),
        st.builds(head, st.integers(0, 50), st.sampled_from(["root", "size", "time", "signature", "foreign-key",
                                                              "foreign-root"]), st.integers(0, 10_000)),
        st.just(rollback()),
    )


def test_the_untampered_log_verifies(store: Store, world: dict, write: Writer) -> None:
    write(world["pristine"], world["bystander"])
    newest = world["pristine"].heads[-1]
    assert newest.tree_size == EVENTS
    for tenant in (VICTIM, BYSTANDER):
        assert verify_tenant(store, tenant, world["trusted"], newest if tenant == VICTIM else None).problem is None
    write(world["old"], world["bystander"])  # a rollback is consistent in itself ...
    assert verify_tenant(store, VICTIM, world["trusted"]).problem is None
    assert verify_tenant(store, VICTIM, world["trusted"], newest).problem.seq == OLD + 1  # ... but not with what was seen


def test_every_tampering_is_detected(store: Store, world: dict, write: Writer) -> None:
    pristine, old, witness = world["pristine"], world["old"], world["pristine"].heads[-1]
    kinds: list[str] = []

    @settings(max_examples=1000, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(tamperings())
    def tampered_is_detected(tamper: tuple[str, Tamper]) -> None:
        kind, apply = tamper
        write(apply(pristine, old), world["bystander"])
        report = verify_tenant(store, VICTIM, world["trusted"], witness)
        assert report.problem is not None, f"{kind} went unnoticed"
        kinds.append(kind)

    tampered_is_detected()
    assert len(kinds) >= 1000
    assert {k.split(":")[0].split("+")[0] for k in kinds} >= {"field", "modify", "delete", "insert", "reorder",
                                                             "truncate", "head", "rollback"}
    write(pristine, world["bystander"])
    assert verify_tenant(store, VICTIM, world["trusted"], witness).problem is None


def test_the_first_bad_sequence_number_is_named(store: Store, world: dict, write: Writer) -> None:
    pristine = world["pristine"]
    rows = list(pristine.rows)
    rows[123] = dataclasses.replace(rows[123], event=rows[123].event.replace("key:abc", "key:xyz"))
    write(Log(rows, pristine.heads))
    assert verify_tenant(store, VICTIM, world["trusted"]).problem.seq == 123
    write(Log(pristine.rows[:200] + pristine.rows[201:], pristine.heads))
    assert verify_tenant(store, VICTIM, world["trusted"]).problem.seq == 200
