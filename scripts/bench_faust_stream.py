"""How fast Faust alone hands a preloaded topic to an agent that does nothing.

This isolates Faust's per-event stream machinery from decoding, scoring and the sink:
the agent only counts ``take_events`` batches. Compare with the bare aiokafka loop of
``scripts/bench_metrics.py``.

Run:  .venv/bin/python scripts/bench_faust_stream.py --points 100000
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faust
import typer

from core.kafka.local_broker import LocalKafka
from core.settings import Settings
from core.kafka.topics import ensure_topics


def main(
    points: int = typer.Option(100_000, help="Points to preload and consume."),
    batch_size: int = typer.Option(5_000, help="take_events batch size."),
) -> None:
    """Preload the topic, then time a do-nothing Faust agent over it (in a child process)."""
    from bench_metrics import load_topic

    home = Path(tempfile.mkdtemp(prefix="m1-faust-"))
    broker = LocalKafka(Settings(home=home / "broker"))
    bootstrap = broker.start().bootstrap
    try:
        settings = Settings(home=home, kafka_bootstrap=bootstrap, topic_partitions=2)
        ensure_topics(settings)
        load_topic(settings, points, 1000)
        env = {**os.environ, "BENCH_BOOTSTRAP": bootstrap, "BENCH_POINTS": str(points), "BENCH_BATCH": str(batch_size)}
        subprocess.run([sys.executable, __file__, "worker", "-l", "warn"], env=env, timeout=600)
    finally:
        broker.stop()


def consume() -> None:
    """The child: a Faust app whose agent counts batches until it has seen every point."""
    points, batch = int(os.environ["BENCH_POINTS"]), int(os.environ["BENCH_BATCH"])
    app = faust.App(f"faust-bench-{os.getpid()}", broker=f"kafka://{os.environ['BENCH_BOOTSTRAP']}",
                    store="memory://", web_enabled=False, datadir=tempfile.mkdtemp(),
                    consumer_auto_offset_reset="earliest", stream_buffer_maxsize=4 * batch,
                    broker_max_poll_records=2 * batch, broker_session_timeout=10, broker_heartbeat_interval=1)
    topic = app.topic("metrics", key_serializer="raw", value_serializer="raw")

    @app.agent(topic)
    async def count(stream):  # noqa: ANN001 - Faust agent signature
        seen, start = 0, None
        async for events in stream.take_events(batch, within=0.5):
            start = start or time.perf_counter()
            seen += len(events)
            if seen >= points:
                print(f"Faust take_events, do-nothing agent: {points / (time.perf_counter() - start):,.0f} points/s",
                      flush=True)
                os._exit(0)

    app.main()


if __name__ == "__main__":
    if "BENCH_BOOTSTRAP" in os.environ:
        consume()
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        typer.run(main)
