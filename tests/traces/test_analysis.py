"""Bottlenecks and rules on generated shop traces, decoded through the real OTLP path."""

from __future__ import annotations

import pytest

from schemas.otlp import decode_traces, span_rows
from traces.analysis import analyze
from traces.critical_path import critical_path, find_root
from traces.generator import COMPONENTS, STOCK_QUERY, ShopConfig, generate_request, generate_spans
from traces.model import Span, group_traces, span_from_row
from traces.rules import Thresholds


def decoded(count: int, config: ShopConfig, seed: int = 1) -> list[Span]:
    """Generated traces as they come out of Kafka: protobuf bytes -> rows -> spans."""
    payload = generate_request(count, config, seed=seed).SerializeToString()
    return [span_from_row(row) for row in span_rows(decode_traces(payload))]


def rules_fired(report, rule: str) -> list:
    return [s for s in report.suggestions if s.rule == rule]


def test_decode_path_preserves_generated_spans() -> None:
    config = ShopConfig()
    direct = generate_spans(20, config, seed=7, start_ns=1_700_000_000_000_000_000)
    payload = generate_request(20, config, seed=7, start_ns=1_700_000_000_000_000_000).SerializeToString()
    through_otlp = [span_from_row(r) for r in span_rows(decode_traces(payload))]
    assert sorted(through_otlp, key=lambda s: s.span_id) == sorted(direct, key=lambda s: s.span_id)


@pytest.mark.parametrize("slow, rule", [("bank-api", "slow_external"), ("postgres", "slow_database")])
def test_slow_component_is_top_bottleneck(slow: str, rule: str) -> None:
    report = analyze(decoded(100, ShopConfig(slow=slow, slow_factor=8.0)))
    top = report.bottlenecks[0]
    assert (top.service, top.operation) == COMPONENTS[slow]
    assert top.share > 0.5 and top.traces == 100
    assert [(s.service, s.operation) for s in rules_fired(report, rule)] == [COMPONENTS[slow]]


def test_critical_path_covers_every_generated_trace_exactly() -> None:
    for spans in group_traces(decoded(30, ShopConfig())).values():
        assert sum(seg.duration_ns for seg in critical_path(spans)) == find_root(spans).duration_ns


def test_n_plus_one_flagged_only_when_present() -> None:
    flagged = rules_fired(analyze(decoded(50, ShopConfig(n_plus_one=12))), "n_plus_one")
    assert len(flagged) == 1
    assert (flagged[0].service, flagged[0].operation) == COMPONENTS["postgres"]
    assert flagged[0].evidence == {"traces": 50, "max_calls": 12, "mean_calls": 12.0}
    assert STOCK_QUERY in flagged[0].message
    assert rules_fired(analyze(decoded(50, ShopConfig(n_plus_one=0))), "n_plus_one") == []
    # Below the threshold is not N+1.
    assert rules_fired(analyze(decoded(50, ShopConfig(n_plus_one=4))), "n_plus_one") == []


def test_retries_and_error_bursts_count_failed_calls() -> None:
    spans = decoded(200, ShopConfig(auth_error_rate=0.3))
    failed = sum(1 for s in spans if s.is_error)
    authorize_calls = sum(1 for s in spans if s.operation == COMPONENTS["bank-api"])
    report = analyze(spans)
    (retries,) = rules_fired(report, "retries")
    assert failed > 0 and retries.evidence == {"retries": failed, "traces": failed}
    (burst,) = rules_fired(report, "error_burst")
    assert burst.evidence["error_rate"] == pytest.approx(failed / authorize_calls)
    strict = analyze(spans, thresholds=Thresholds(error_rate=0.9))
    assert rules_fired(strict, "error_burst") == []


def test_healthy_shop_raises_no_dependency_alarm() -> None:
    report = analyze(decoded(100, ShopConfig(slow=None, n_plus_one=0)), thresholds=Thresholds(dependency_share=0.5))
    assert report.traces == 100
    assert rules_fired(report, "slow_database") == [] and rules_fired(report, "retries") == []
