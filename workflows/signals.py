"""What the engine reads: :class:`Signal` (from the source topics) and :class:`Control` (acks, silences, ticks).

Each source record becomes one signal (``from_source``); a record that is not one raises
:class:`ValueError` with the reason (the agent dead-letters it). Signals and controls travel on
``workflow_signals`` keyed by tenant, so one tenant's state lives on one partition.

>>> raw = b'{"ts": 10.0, "tenant": "acme", "region": "eu", "service": "api", "metric": "latency_ms",'
>>> raw += b' "series": "acme|eu|api|latency_ms|env=prod", "value": 900.0, "score": 0.8,'
>>> raw += b' "severity": "critical", "detector": "ensemble"}'
>>> s = from_source("anomalies", raw)
>>> (s.service, s.severity, s.labels, s.fingerprint)
('api', 'critical', {'env': 'prod', 'metric': 'latency_ms'}, 'acme|eu|api|latency_ms|env=prod')
>>> decode_input(encode_input(s)) == s
True
"""

from __future__ import annotations

from typing import Any

import msgspec

SOURCES = ("anomalies", "bottlenecks", "costs", "region_events")
SEVERITIES = ("info", "warning", "critical")


class Signal(msgspec.Struct, frozen=True, tag="signal"):
    """Something that may fire a workflow: an anomaly, a bottleneck report, a cost projection, a region event."""

    ts: float
    tenant: str
    source: str
    service: str
    region: str
    severity: str
    fingerprint: str  # what fires: the series, the entry service, the region...
    title: str
    value: float = 0.0
    labels: dict[str, str] = {}
    received: float = 0.0  # when the worker read its source record

    def attribute(self, name: str) -> str:
        """A field (tenant, service, region, severity, source) or a label, for grouping and ``equal``."""
        if name in ("tenant", "service", "region", "severity", "source"):
            return getattr(self, name)
        return self.labels.get(name, "")


class Control(msgspec.Struct, frozen=True, tag="control"):
    """An operator's, a webhook's or the clock's input: ``ack``/``resolve`` an incident, ``silence``
    (``data``: the silence) or ``expire`` one (``data.id``), ``answer`` of a webhook step (``data``:
    group, run, call, status, json), or ``tick`` (``ts``: the clock's time)."""

    action: str
    tenant: str = ""
    ts: float = 0.0
    incident: str = ""
    by: str = ""
    data: dict[str, Any] = {}


Input = Signal | Control
_input = msgspec.json.Decoder(Input)
_encoder = msgspec.json.Encoder()


def encode_input(item: Input) -> bytes:
    return _encoder.encode(item)


def decode_input(raw: bytes) -> Input:
    return _input.decode(raw)


def series_labels(series: str) -> dict[str, str]:
    """Labels of a series key ``tenant|region|service|metric|k=v,...`` (``\\`` escapes ``,`` and ``\\``).

    >>> series_labels(r"t|r|s|m|a=1,b=x\\,y")
    {'a': '1', 'b': 'x,y'}
    """
    parts = series.split("|", 4)
    if len(parts) < 5 or not parts[4]:
        return {}
    labels, item, escaped = {}, "", False
    for ch in parts[4] + ",":
        if escaped:
            item, escaped = item + ch, False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            key, _, value = item.partition("=")
            labels[key] = value
            item = ""
        else:
            item += ch
    return labels


def _anomaly(d: dict[str, Any]) -> Signal:
    labels = {**series_labels(d["series"]), "metric": d["metric"]}
    return Signal(ts=float(d["ts"]), tenant=d["tenant"], source="anomalies", service=d["service"], region=d["region"],
                  severity=d["severity"], fingerprint=d["series"], value=float(d["value"]), labels=labels,
                  title=f"{d['metric']} of {d['service']} in {d['region']} is anomalous (score {float(d['score']):.2f})")


def _bottleneck(d: dict[str, Any]) -> Signal:
    top = (d.get("bottlenecks") or [{}])[0]
    labels = {"operation": str(top.get("operation", "")), "bottleneck_service": str(top.get("service", ""))}
    return Signal(ts=float(d["analyzed_at"]), tenant=d["tenant"], source="bottlenecks", service=d["entry_service"],
                  region=d.get("region", ""), severity="info", fingerprint=f"bottleneck|{d['entry_service']}",
                  value=float(d.get("mean_ms", 0.0)), labels=labels,
                  title=f"{d['entry_service']}: {labels['bottleneck_service']} {labels['operation']} owns "
                        f"{float(top.get('share', 0.0)):.0%} of the latency")


def _cost(d: dict[str, Any]) -> Signal:
    if d.get("kind") != "cost":
        raise ValueError("not a cost projection")
    return Signal(ts=float(d["ts"]), tenant=d["tenant"], source="costs", service=d["service"], region=d["region"],
                  severity="info", fingerprint=f"{d['series']}|{d['period']}", value=float(d["total"]),
                  labels={"metric": d["metric"], "period": d["period"]},
                  title=f"{d['service']} in {d['region']}: projected {d['period']} cost {float(d['total']):.2f}")


def _region_event(d: dict[str, Any]) -> Signal:
    kind = str(d.get("event") or d.get("kind") or "event")
    severity = d.get("severity") or {"failover": "critical", "degraded": "warning"}.get(kind, "info")
    return Signal(ts=float(d["ts"]), tenant=d.get("tenant") or "platform", source="region_events",
                  service=d.get("service") or "region", region=d["region"], severity=severity,
                  fingerprint=f"region|{d['region']}|{kind}", labels={"event": kind},
                  title=f"region {d['region']}: {kind}" + (f" ({d['reason']})" if d.get("reason") else ""))


_PARSERS = {"anomalies": _anomaly, "bottlenecks": _bottleneck, "costs": _cost, "region_events": _region_event}


def from_source(source: str, raw: bytes, received: float = 0.0) -> Signal:
    """The signal of one record of ``source``; :class:`ValueError` says why a record is not one."""
    try:
        record = msgspec.json.decode(raw)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        signal = _PARSERS[source](record)
    except (KeyError, TypeError, msgspec.DecodeError) as exc:
        raise ValueError(f"workflows: not a record of {source}: {type(exc).__name__}: {exc}") from None
    if signal.severity not in SEVERITIES:
        raise ValueError(f"workflows: unknown severity {signal.severity!r}")
    return msgspec.structs.replace(signal, received=received)
