"""Optimisation suggestions from a window of traces, each from one clear rule.

* ``n_plus_one``: a span makes at least ``n_plus_one_min`` identical calls (same service,
  span name and statement) as direct children: batch them into one call.
* ``slow_database`` / ``slow_external``: a database call (``db.system`` set) or a call to
  an untraced peer (a client span with no child span: the callee does not report to us)
  owns at least ``dependency_share`` of the window's end-to-end latency.
* ``retries``: an identical call repeated under the same parent after an earlier copy
  failed; each repeat after a failure counts as a retry.
* ``error_burst``: an operation with at least ``error_min_spans`` spans in the window
  fails at least ``error_rate`` of the time.

Suggestions are plain records (``dataclasses.asdict`` gives a row for a table or topic).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from traces.bottlenecks import Bottleneck
from traces.critical_path import children_by_parent
from traces.model import Span

CallKey = tuple[str, str, str]  # service, span name, statement


@dataclass(frozen=True)
class Thresholds:
    """Rule parameters; defaults suit request/response services."""

    n_plus_one_min: int = 5  # identical child calls under one parent
    dependency_share: float = 0.3  # share of end-to-end latency that makes a dependency "dominant"
    error_rate: float = 0.05  # error share of an operation's spans
    error_min_spans: int = 20  # below this many spans an error rate is noise


@dataclass(frozen=True)
class Suggestion:
    """One finding: which rule fired, on which operation, what to do, and the numbers behind it."""

    rule: str
    service: str
    operation: str
    message: str
    evidence: dict[str, float] = field(default_factory=dict)


def call_key(span: Span) -> CallKey:
    """What makes two calls identical: service, span name and the statement, if any."""
    statement = span.attributes.get("db.statement") or span.attributes.get("db.query.text", "")
    return span.service, span.name, statement


def suggest(
    traces: Mapping[str, Sequence[Span]],
    bottlenecks: Sequence[Bottleneck],
    thresholds: Thresholds = Thresholds(),
) -> list[Suggestion]:
    """All suggestions for the window, rule by rule."""
    return [
        *n_plus_one(traces, thresholds),
        *slow_dependencies(traces, bottlenecks, thresholds),
        *retries(traces),
        *error_bursts(traces, thresholds),
    ]


def _repeated_calls(spans: Sequence[Span]) -> list[tuple[Span, list[Span]]]:
    """(parent, identical sibling calls in start order) for every call made more than once."""
    by_id = {s.span_id: s for s in spans}
    groups = []
    for parent_id, kids in children_by_parent(spans).items():
        same: dict[CallKey, list[Span]] = defaultdict(list)
        for kid in kids:
            same[call_key(kid)].append(kid)
        groups += [(by_id[parent_id], sorted(g, key=lambda s: s.start_ns))
                   for g in same.values() if len(g) > 1 and parent_id in by_id]
    return groups


def n_plus_one(traces: Mapping[str, Sequence[Span]], thresholds: Thresholds = Thresholds()) -> list[Suggestion]:
    """Parents making at least ``n_plus_one_min`` identical calls, per (parent, call)."""
    hits: dict[tuple[tuple[str, str], CallKey], list[int]] = defaultdict(list)
    for spans in traces.values():
        for parent, calls in _repeated_calls(spans):
            if len(calls) >= thresholds.n_plus_one_min:
                hits[(parent.operation, call_key(calls[0]))].append(len(calls))
    out = []
    for ((p_service, p_name), (service, name, statement)), counts in hits.items():
        what = f"{name} ({statement})" if statement else name
        out.append(Suggestion(
            rule="n_plus_one", service=service, operation=name,
            message=(f"{p_service} {p_name} calls {service} {what} up to {max(counts)} times per request "
                     f"in {len(counts)} traces: batch them into one call"),
            evidence={"traces": len(counts), "max_calls": max(counts), "mean_calls": sum(counts) / len(counts)},
        ))
    return sorted(out, key=lambda s: -s.evidence["traces"])


def slow_dependencies(
    traces: Mapping[str, Sequence[Span]],
    bottlenecks: Sequence[Bottleneck],
    thresholds: Thresholds = Thresholds(),
) -> list[Suggestion]:
    """Database or external calls whose critical-path share reaches ``dependency_share``."""
    kind = _dependency_kinds(traces)
    out = []
    for b in bottlenecks:
        dependency = kind.get((b.service, b.operation))
        if dependency is None or b.share < thresholds.dependency_share:
            continue
        advice = ("check its query plan and indexes, or cache the result" if dependency == "database"
                  else "add a timeout, cache, or call it asynchronously")
        out.append(Suggestion(
            rule=f"slow_{dependency}", service=b.service, operation=b.operation,
            message=f"{dependency} call {b.service} {b.operation} is {b.share:.0%} of end-to-end latency: {advice}",
            evidence={"share": b.share, "critical_ms": b.critical_ns / 1e6, "traces": b.traces},
        ))
    return out


def _dependency_kinds(traces: Mapping[str, Sequence[Span]]) -> dict[tuple[str, str], str]:
    """Operation -> "database" or "external" for operations that call out of our traced services."""
    kinds: dict[tuple[str, str], str] = {}
    for spans in traces.values():
        parents = {s.parent_span_id for s in spans}
        for span in spans:
            if "db.system" in span.attributes:
                kinds[span.operation] = "database"
            elif span.kind == "Client" and span.span_id not in parents:
                kinds.setdefault(span.operation, "external")
    return kinds


def retries(traces: Mapping[str, Sequence[Span]]) -> list[Suggestion]:
    """Identical sibling calls repeated after a failed copy, per call."""
    counts: dict[CallKey, list[int]] = defaultdict(list)
    for spans in traces.values():
        for _parent, calls in _repeated_calls(spans):
            repeats = sum(1 for earlier, later in zip(calls, calls[1:]) if earlier.is_error)
            if repeats:
                counts[call_key(calls[0])].append(repeats)
    return [
        Suggestion(
            rule="retries", service=service, operation=name,
            message=(f"{service} {name} was retried {sum(n)} times after failures in {len(n)} traces: "
                     "fix the failure cause and check timeouts and backoff"),
            evidence={"retries": sum(n), "traces": len(n)},
        )
        for (service, name, _statement), n in sorted(counts.items(), key=lambda kv: -sum(kv[1]))
    ]


def error_bursts(traces: Mapping[str, Sequence[Span]], thresholds: Thresholds = Thresholds()) -> list[Suggestion]:
    """Operations whose error rate over the window reaches ``error_rate``."""
    spans_per_op: dict[tuple[str, str], int] = defaultdict(int)
    errors_per_op: dict[tuple[str, str], int] = defaultdict(int)
    for spans in traces.values():
        for span in spans:
            spans_per_op[span.operation] += 1
            errors_per_op[span.operation] += span.is_error
    out = []
    for (service, name), total in spans_per_op.items():
        rate = errors_per_op[(service, name)] / total
        if total >= thresholds.error_min_spans and rate >= thresholds.error_rate:
            out.append(Suggestion(
                rule="error_burst", service=service, operation=name,
                message=f"{service} {name} failed in {rate:.1%} of {total} spans",
                evidence={"error_rate": rate, "spans": total, "errors": errors_per_op[(service, name)]},
            ))
    return sorted(out, key=lambda s: -s.evidence["error_rate"])
