"""Delivery under faults: notifications through receivers that fail 30% of requests, the delivering
process SIGKILLed mid-stream, on the real broker.

    .venv/bin/python scripts/bench_delivery.py [--notifications 5000] [--fail-rate 0.3] [--kills 0.25,0.6]
                                               [--timeout 2] [--deadline 300] [--per-minute 1000]

The receiver (tests/integrations/fake_vendors.py, on 127.0.0.1) is an idempotent Standard Webhooks
endpoint: it verifies each signature and acts on a webhook-id once. A ``--fail-rate`` share of its
requests fail, evenly mixed: 500, 429 with ``Retry-After: 1``, a hang past the client's timeout,
and a connection reset after the request was processed (the answer is lost, so delivery must retry
a request that did reach the receiver). ``m1 integrations deliver`` runs in a child process and is
SIGKILLed when the receiver has acted on each ``--kills`` share of the notifications, then
restarted. Reported: delivered (distinct notifications acted on), within 5 minutes of their
creation, lost, notifications acted on twice (must be 0), requests the receiver recognised as
repeats, p50/p99 from creation to the receiver's action and to its first sight of the notification
(the first attempt). By default every notification is in the outbox before the deliverer starts (a
burst: those latencies are mostly queueing); ``--per-minute`` publishes at a steady rate instead. Uses the local broker (``m1 kafka start``)
unless ``M1_KAFKA_BOOTSTRAP`` is set; topics of its own per run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from core.settings import Settings
from tests.integrations.fault_run import run_under_faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notifications", type=int, default=5000)
    parser.add_argument("--fail-rate", type=float, default=0.3)
    parser.add_argument("--kills", default="0.25,0.6", help="Shares delivered at which the deliverer is SIGKILLed.")
    parser.add_argument("--timeout", type=float, default=2.0, help="Time limit of one attempt (the hang lasts 1 s more).")
    parser.add_argument("--deadline", type=float, default=300.0)
    parser.add_argument("--per-minute", type=float, default=0.0,
                        help="Publish at this steady rate once the deliverer runs (default: all at once, a burst).")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    home = Path(tempfile.mkdtemp(prefix="bench-delivery-"))
    base = Settings()
    settings = Settings(
        home=home, kafka_bootstrap=base.bootstrap, app_id=f"bench-delivery-{run}", topic_partitions=4,
        topic_notifications=f"notifications-{run}", topic_notification_retries=f"retries-{run}",
        topic_deliveries=f"deliveries-{run}", topic_dead_letter=f"dead-letter-{run}",
        delivery_timeout_seconds=args.timeout, delivery_base_seconds=0.5, delivery_max_backoff_seconds=10.0)
    kills = tuple(float(k) for k in args.kills.split(",") if k)
    console = Console()
    with Progress(console=console) as progress:
        task = progress.add_task("delivered", total=args.notifications)
        report = asyncio.run(run_under_faults(settings, args.notifications, args.fail_rate, kills, home / "deliver.log",
                                              args.deadline, lambda done: progress.update(task, completed=done),
                                              args.per_minute))
    share = report.within_5min / report.sent
    console.print(f"notifications {report.sent}, fail rate {args.fail_rate:.0%}, SIGKILLs {report.kills}, "
                  f"{report.requests} requests, injected faults {report.faults}")
    console.print(f"delivered {report.delivered} ({share:.3%} within 5 min), lost {report.lost}, "
                  f"acted on twice {report.double_effects}, repeats dropped by the receiver {report.repeats}")
    console.print(f"all delivered in {report.seconds:.1f} s; creation -> receiver acted p50 {report.p50:.2f} s, "
                  f"p99 {report.p99:.2f} s; creation -> first attempt p50 {report.first_p50:.3f} s, "
                  f"p99 {report.first_p99:.3f} s   (log: {home / 'deliver.log'})")
    ok = share >= 0.999 and report.lost == 0 and report.double_effects == 0
    console.print("[green]bar met[/]" if ok else "[red]bar NOT met[/]")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
