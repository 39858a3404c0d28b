"""The worker's Prometheus metrics (core/pipeline_metrics.py) without a worker: what each report
does to the text a scrape reads."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from core.pipeline_metrics import REASON_CLASSES, PipelineMetrics, reason_class


def samples(metrics: PipelineMetrics) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape, parsed as Prometheus would: (name, sorted labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.exposition().decode()) for s in family.samples}


def test_each_instance_has_its_own_registry() -> None:
    one, two = PipelineMetrics(), PipelineMetrics()
    one.batch_handled(0.1, stored=5, dead_letter_reasons=[])
    assert samples(one)[("m1_points_stored_total", ())] == 5
    assert samples(two)[("m1_points_stored_total", ())] == 0


def test_dead_letter_reasons_become_a_bounded_set_of_labels() -> None:
    metrics = PipelineMetrics()
    hostile = [f"Object contains unknown field `f{i}`" for i in range(100)] + ["quota: over", "store: down", "x" * 10_000]
    metrics.batch_handled(0.2, stored=0, dead_letter_reasons=hostile)
    reasons = {dict(labels)["reason"]: v for (name, labels), v in samples(metrics).items() if name == "m1_dead_letters_total"}
    assert reasons == {"invalid": 101, "quota": 1, "store": 1}
    assert {reason_class(r) for r in hostile} <= {name for _, name in REASON_CLASSES} | {"invalid"}


def lag_of(metrics: PipelineMetrics) -> dict[str, float]:
    return {dict(labels)["partition"]: v for (name, labels), v in samples(metrics).items() if name == "m1_consumer_lag_records"}


async def test_lag_is_asked_at_each_refresh_and_kept_when_the_answer_fails() -> None:
    metrics, answers = PipelineMetrics(), [{("m", 0): 5, ("m", 1): 2}, {("m", 0): 0}, RuntimeError("broker away")]

    async def lag() -> dict:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    metrics.watch_lag(lag)
    await metrics.refresh()
    assert lag_of(metrics) == {"0": 5, "1": 2}
    await metrics.refresh()  # a rebalance took partition 1
    assert lag_of(metrics) == {"0": 0}
    await metrics.refresh()
    assert lag_of(metrics) == {"0": 0}


def test_live_models_checkpoint_age_and_insert_latency_are_read_at_scrape_time() -> None:
    metrics, bank = PipelineMetrics(), ["a", "b"]
    metrics.watch_bank("detectors", bank.__len__)
    bank.append("c")
    metrics.store_insert("metric_points", 0.003)
    time.sleep(0.05)
    scraped = samples(metrics)
    assert scraped[("m1_live_models", (("bank", "detectors"),))] == 3
    assert scraped[("m1_store_insert_seconds_count", (("table", "metric_points"),))] == 1
    assert scraped[("m1_checkpoint_age_seconds", ())] >= 0.05
    metrics.checkpointed()
    assert samples(metrics)[("m1_checkpoint_age_seconds", ())] < 0.05


async def test_a_batch_the_store_kept_rejecting_counts_once_dead_lettered() -> None:
    metrics, sent = PipelineMetrics(), []

    async def dead_letter(records: list, reason: str) -> None:
        sent.append((len(records), reason))

    await metrics.counting_dead_letters(dead_letter)([1, 2, 3], "store: Code: 241. MEMORY_LIMIT_EXCEEDED")
    assert sent == [(3, "store: Code: 241. MEMORY_LIMIT_EXCEEDED")]
    assert samples(metrics)[("m1_dead_letters_total", (("reason", "store"),))] == 3
