"""A delivery run under faults, shared by tests/integrations/test_delivery_faults.py and
scripts/bench_delivery.py: notifications to an idempotent Standard Webhooks receiver that fails a
share of requests (500, 429 with Retry-After, hangs past the timeout, resets after processing),
delivered by ``m1 integrations deliver`` in a child process that is SIGKILLed mid-stream and
restarted, on the real broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from integrations.delivery import delivery_topics
from integrations.notification import Notification, Receiver, encode
from core.kafka.producer import make_producer, send_all
from core.settings import Settings
from core.kafka.topics import ensure_topics
from core.child_env import settings_env
from tests.integrations.conftest import SECRET
from tests.integrations.fake_vendors import FakeVendors


@dataclass
class Report:
    sent: int
    delivered: int            # distinct notifications the receiver acted on
    within_5min: int          # ... of them within 5 minutes of their creation
    repeats: int              # requests the receiver recognised as already done (dropped by idempotency)
    double_effects: int       # notifications acted on more than once (must be 0)
    kills: int
    seconds: float
    p50: float                # creation -> the receiver acted
    p99: float
    first_p50: float          # creation -> the receiver saw the first attempt
    first_p99: float
    faults: dict[str, int] = field(default_factory=dict)
    requests: int = 0

    @property
    def lost(self) -> int:
        return self.sent - self.delivered


def bench_notifications(url: str, n: int, run: str) -> list[Notification]:
    receiver = Receiver("webhook", "bench", f"{url}/hooks/bench", "env:M1_BENCH_WHSEC")
    now = time.time()
    return [Notification(id=f"{run}-{i}", tenant="acme", workflow="bench", kind="trigger", receiver=receiver,
                         incident={"id": f"inc-{i % 97}", "title": "bench", "severity": "warning", "service": f"s{i % 13}"},
                         created_ts=now, source_ts=now) for i in range(n)]


class Deliverer:
    """``m1 integrations deliver`` as a child process (the one the run SIGKILLs)."""

    def __init__(self, settings: Settings, log: Path):
        self.env = {**settings_env(settings), "M1_BENCH_WHSEC": SECRET}
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "m1.cli", "integrations", "deliver", "--loglevel", "info"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    async def assigned(self, timeout: float = 60.0) -> None:
        """Wait until the (re)started child has its partitions (its log says so)."""
        deadline, mark = time.time() + timeout, f"[{self.proc.pid}]".encode()
        while time.time() < deadline:
            if any(mark in line and b"newly assigned partitions" in line for line in self.log.read_bytes().splitlines()):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError("the deliverer did not get its partitions")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


async def run_under_faults(settings: Settings, n: int, fail_rate: float, kill_at: tuple[float, ...], log: Path,
                           deadline: float = 300.0, progress=None, per_minute: float = 0.0) -> Report:
    """Deliver ``n`` notifications through a receiver failing ``fail_rate`` of requests, SIGKILLing the
    deliverer when the receiver has acted on each ``kill_at`` share of them; returns the numbers.
    All notifications are in the outbox before the deliverer starts, or with ``per_minute`` they are
    published at that steady rate once it runs (each stamped when published)."""
    vendors = await FakeVendors(secret=SECRET, fail_rate=fail_rate, hang_seconds=settings.delivery_timeout_seconds + 1,
                                retry_after=1).start()
    deliverer = Deliverer(settings, log)
    producer = make_producer(settings)
    await producer.start()
    feeding: asyncio.Task | None = None
    try:
        notes = bench_notifications(vendors.url, n, settings.app_id)
        created = {x.id: x.created_ts for x in notes}
        await asyncio.to_thread(ensure_topics, settings, delivery_topics(settings))
        if not per_minute:
            await send_all(producer, settings.topic_notifications, [(x.id.encode(), encode(x)) for x in notes])
        started = time.time()
        deliverer.start()
        if per_minute:
            await deliverer.assigned()
            feeding = asyncio.create_task(feed(producer, settings.topic_notifications, notes, per_minute, created))
        kills, pending_kills = 0, sorted(kill_at)
        while len(vendors.effects) < n and time.time() - started < deadline:
            await asyncio.sleep(0.2)
            if pending_kills and len(vendors.effects) >= pending_kills[0] * n:
                pending_kills.pop(0)
                deliverer.kill()
                kills += 1
                deliverer.start()
            if progress:
                progress(len(vendors.effects))
        seconds = time.time() - started
        await asyncio.sleep(2.0)  # late repeats (replays after the last kill) still count
        done = sorted(vendors.first_seen[i] - created[i] for i in vendors.first_seen if i in created)
        first = sorted(vendors.first_request[i] - created[i] for i in vendors.first_request if i in created)
        return Report(
            sent=n, delivered=sum(1 for i in created if i in vendors.effects),
            within_5min=sum(1 for x in done if x <= 300.0), repeats=sum(vendors.repeats.values()),
            double_effects=sum(1 for c in vendors.effects.values() if c > 1), kills=kills, seconds=seconds,
            p50=quantile(done, 0.5), p99=quantile(done, 0.99), first_p50=quantile(first, 0.5),
            first_p99=quantile(first, 0.99), faults=dict(vendors.faults), requests=len(vendors.requests))
    finally:
        if feeding is not None:
            feeding.cancel()
        await producer.stop()
        deliverer.stop()
        await vendors.stop()


def quantile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] if sorted_values else float("nan")


async def feed(producer, topic: str, notes: list[Notification], per_minute: float, created: dict[str, float]) -> None:
    """Publish ``notes`` at ``per_minute``, in a batch every 0.1 s, each stamped when it is sent."""
    per_tick = per_minute / 600.0
    sent, ticks, t0 = 0, 0, time.time()
    while sent < len(notes):
        ticks += 1
        due = min(len(notes), round(ticks * per_tick))
        now = time.time()
        batch = [msgspec.structs.replace(x, created_ts=now, source_ts=now) for x in notes[sent:due]]
        for x in batch:
            created[x.id] = now
        await send_all(producer, topic, [(x.id.encode(), encode(x)) for x in batch])
        sent = due
        await asyncio.sleep(max(0.0, t0 + ticks * 0.1 - time.time()))
