"""Choose the health thresholds on some simulation seeds, report the bars on other seeds.

The multi-region simulation (regions/simulation.py) is run for every candidate policy on the
*training* seeds; the candidate with the best pooled routing accuracy among those with no more
than 0.1 % false failovers per decision on every training seed is chosen; then the chosen
policy, alone, is run on the *held-out* seeds, and only those numbers are the result (for
docs/benchmarks.md, "Multi-region simulation"). Candidates: heartbeats missed before down
(``down_missed``; degraded after 2, or at once when that is 2) x beats in a row to leave down (``recover_beats``)
x the latency smoothing of the router (``smoothing``) x the standard errors of evidence the
router needs to reorder two regions against the configured proximity (``evidence``).

Run (the session-6 router: smoothing chosen on seeds 1-10, judged once on fresh seeds 301-310):
      .venv/bin/python scripts/bench_region_simulation.py --hours 3 --train 1,2,3,4,5,6,7,8,9,10 \
          --test 301,302,303,304,305,306,307,308,309,310 --down-missed 2 --recover-beats 2 \
          --smoothing 0.005 --evidence 2

Seeds 11-15, 201-210 and 301-310 have been looked at: a new candidate is judged on seeds from 401.
"""

from __future__ import annotations

import itertools
import json
import statistics

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from regions.health import HealthPolicy
from regions.simulation import SimConfig, SimReport, simulate

console = Console()
BAR_ACCURACY, BAR_FALSE = 0.999, 0.001


def _seeds(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _floats(text: str) -> list[float]:
    return [float(s) for s in text.split(",") if s.strip()]


def _pooled(reports: list[SimReport]) -> dict[str, object]:
    requests = sum(r.requests for r in reports)
    decisions = sum(r.decisions for r in reports)
    detection = sorted(d for r in reports for d in r.detection_s)
    q = statistics.quantiles(detection, n=100, method="inclusive") if len(detection) > 1 else [float("nan")] * 99
    return {
        "accuracy": sum(r.accurate for r in reports) / requests,
        "accuracy_within_1pct": sum(r.accurate + r.near_ties for r in reports) / requests,
        "worst_seed_accuracy": min(r.accuracy for r in reports),
        "misses": {k: sum(r.misses[k] for r in reports) for k in reports[0].misses},
        "false_failovers": sum(r.false_failovers for r in reports),
        "false_per_decision": sum(r.false_failovers for r in reports) / decisions,
        "failovers": sum(r.failovers for r in reports),
        "decisions": decisions,
        "incidents": sum(r.incidents for r in reports),
        "undetected": sum(r.undetected for r in reports),
        "detections": len(detection),
        "detection_s": {"p50": q[49], "p90": q[89], "p99": q[98], "max": detection[-1] if detection else float("nan")},
    }


def main(hours: float = typer.Option(6.0, help="Simulated hours per seed."),
         regions: int = typer.Option(5, help="Regions (5..10)."),
         geos: int = typer.Option(50, help="Client geographies."),
         train: str = typer.Option("1,2,3", help="Seeds the thresholds are chosen on."),
         test: str = typer.Option("11,12,13,14,15", help="Held-out seeds the result is reported on."),
         down_missed: str = typer.Option("2,3,4", help="Candidates: heartbeats missed before down."),
         recover_beats: str = typer.Option("1,2,3", help="Candidates: beats in a row to leave down."),
         smoothing: str = typer.Option("0.005,0.02", help="Candidates: the router's latency smoothing."),
         evidence: str = typer.Option("2,3,4", help="Candidates: standard errors the router needs to reorder."),
         shipped: bool = typer.Option(False, help="Also run the shipped defaults (HealthPolicy.for_set(regions), the router's "
                                                  "smoothing and evidence) on the held-out seeds, for comparison.")) -> None:
    """Grid on the training seeds, the chosen policy on the held-out seeds; prints JSON at the end."""
    candidates = [(HealthPolicy(degraded_missed=min(2, d), down_missed=d, recover_beats=b), a, k)
                  for d, b, a, k in itertools.product(_seeds(down_missed), _seeds(recover_beats),
                                                      _floats(smoothing), _floats(evidence))]
    train_seeds, test_seeds = _seeds(train), _seeds(test)
    if set(train_seeds) & set(test_seeds):
        raise typer.BadParameter("training and held-out seeds must differ")
    runs = len(candidates) * len(train_seeds) + len(test_seeds) * (2 if shipped else 1)
    scores = []
    with Progress(console=console) as progress:
        task = progress.add_task("simulating", total=runs * hours * 3600)

        def run(candidate: tuple[HealthPolicy, float, float], seed: int) -> SimReport:
            done = progress.tasks[task].completed
            policy, alpha, k = candidate
            report = simulate(SimConfig(regions=regions, geos=geos, hours=hours, seed=seed, policy=policy,
                                        smoothing=alpha, evidence=k),
                              progress=lambda s: progress.update(task, completed=done + s))
            progress.update(task, completed=done + hours * 3600)
            return report

        for candidate in candidates:
            reports = [run(candidate, seed) for seed in train_seeds]
            pooled = _pooled(reports)
            ok = all(r.false_failover_rate <= BAR_FALSE for r in reports)
            scores.append((ok, pooled["accuracy"], candidate, pooled))
        table = Table("down_missed", "recover_beats", "smoothing", "evidence", "accuracy (train)",
                      "false failovers", "detection p50/p99 s", "eligible")
        for ok, accuracy, (policy, alpha, k), pooled in scores:
            det = pooled["detection_s"]
            table.add_row(str(policy.down_missed), str(policy.recover_beats), str(alpha), str(k), f"{accuracy:.5%}",
                          str(pooled["false_failovers"]), f"{det['p50']:.2f} / {det['p99']:.2f}", "yes" if ok else "no")
        console.print(table)
        eligible = [s for s in scores if s[0]]
        if not eligible:
            raise typer.Exit(1)
        _, _, chosen, _ = max(eligible, key=lambda s: s[1])
        held_out = [run(chosen, seed) for seed in test_seeds]
        shipped_candidate = (HealthPolicy.for_set(regions), SimConfig().smoothing, SimConfig().evidence)
        defaults = [run(shipped_candidate, seed) for seed in test_seeds] if shipped else []
    result = _pooled(held_out)
    if defaults:
        result["shipped_defaults"] = _pooled(defaults)
    result.update(chosen={"down_missed": chosen[0].down_missed, "degraded_missed": chosen[0].degraded_missed,
                          "recover_beats": chosen[0].recover_beats, "smoothing": chosen[1], "evidence": chosen[2]},
                  train=[{"down_missed": p.down_missed, "recover_beats": p.recover_beats, "smoothing": a,
                          "evidence": k, "eligible": ok, **pooled} for ok, _, (p, a, k), pooled in scores],
                  train_seeds=train_seeds, test_seeds=test_seeds, hours=hours, regions=regions, geos=geos,
                  per_seed=[r.summary() for r in held_out],
                  bars={"accuracy > 99.9 %": result["accuracy"] > BAR_ACCURACY,
                        "false failovers < 0.1 % of decisions": result["false_per_decision"] < BAR_FALSE})
    console.print_json(json.dumps(result))


if __name__ == "__main__":
    typer.run(main)
