"""Synthetic traces of a small shop, as OTLP requests, with a known bottleneck and N+1 pattern.

Call graph of one checkout (services in brackets, ``||`` runs in parallel)::

    [frontend] GET /checkout
      [checkout] POST /checkout
        [cart] GET /cart -> [cart] redis GET (db.system=redis)
        then  [payment] POST /charge -> [payment] POST /authorize (client; bank-api is external)
          ||  [inventory] POST /reserve -> [inventory] SELECT stock (db.system=postgresql), per item
        then  checkout's own work (writing the order)

Durations are log-normal around realistic medians. ``slow`` names the component whose
spans are stretched by ``slow_factor`` (``COMPONENTS`` lists them with the operation each
one controls); ``n_plus_one`` is how many per-item stock queries inventory issues, one
after another (0 gives a single batched query); ``auth_error_rate`` makes bank-api calls
fail and be retried once. Output goes through ``to_request``: the same OTLP protobuf the
Collector would put on Kafka, so it exercises the real decode path.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from traces.model import Span

# Component -> the (service, span name) whose own time it controls.
COMPONENTS: dict[str, tuple[str, str]] = {
    "frontend": ("frontend", "GET /checkout"),
    "checkout": ("checkout", "POST /checkout"),
    "cart": ("cart", "redis GET"),
    "bank-api": ("payment", "POST /authorize"),
    "postgres": ("inventory", "SELECT stock"),
}
STOCK_QUERY = "SELECT qty FROM stock WHERE sku = $1"
STOCK_BATCH_QUERY = "SELECT sku, qty FROM stock WHERE sku = ANY($1)"

_KINDS = {"Server": PbSpan.SPAN_KIND_SERVER, "Client": PbSpan.SPAN_KIND_CLIENT, "Internal": PbSpan.SPAN_KIND_INTERNAL}
_STATUS = {"Unset": Status.STATUS_CODE_UNSET, "Ok": Status.STATUS_CODE_OK, "Error": Status.STATUS_CODE_ERROR}
_MS = 1_000_000


@dataclass(frozen=True)
class ShopConfig:
    """Knobs of the synthetic shop."""

    slow: str | None = "bank-api"  # a key of COMPONENTS, or None
    slow_factor: float = 8.0
    n_plus_one: int = 10
    auth_error_rate: float = 0.0
    tenant: str = "acme"
    region: str = "eu-west-1"


class _Trace:
    """Collects one trace's spans; ids and durations come from one seeded random source."""

    def __init__(self, rng: random.Random, config: ShopConfig) -> None:
        self.rng, self.config = rng, config
        self.trace_id = f"{rng.getrandbits(128):032x}"
        self.spans: list[Span] = []

    def new_id(self) -> str:
        return f"{self.rng.getrandbits(64):016x}"

    def ms(self, median: float, component: str | None = None) -> int:
        """A log-normal duration in ns around ``median`` ms, stretched if ``component`` is the slow one."""
        factor = self.config.slow_factor if component is not None and component == self.config.slow else 1.0
        return int(median * factor * self.rng.lognormvariate(0.0, 0.25) * _MS)

    def add(self, span_id: str, parent_id: str, service: str, name: str, start: int, end: int,
            kind: str = "Server", status: str = "Unset", **attributes: str) -> None:
        self.spans.append(Span(self.trace_id, span_id, parent_id, service, name, start, end, status, kind, attributes))


def shop_trace(rng: random.Random, config: ShopConfig, start_ns: int) -> list[Span]:
    """The spans of one checkout request starting at ``start_ns``."""
    t = _Trace(rng, config)
    root = t.new_id()
    end = _checkout(t, root, start_ns + t.ms(1.0, "frontend")) + t.ms(1.0, "frontend")
    t.add(root, "", "frontend", "GET /checkout", start_ns, end, **{"http.method": "GET"})
    return t.spans


def _checkout(t: _Trace, parent: str, start: int) -> int:
    """Adds the checkout subtree under ``parent``; returns its end, as do the helpers below."""
    me = t.new_id()
    cart_end = _cart(t, me, start + t.ms(0.5, "checkout"))
    end = max(_payment(t, me, cart_end), _inventory(t, me, cart_end)) + t.ms(3.0, "checkout")
    t.add(me, parent, "checkout", "POST /checkout", start, end, **{"http.method": "POST"})
    return end


def _cart(t: _Trace, parent: str, start: int) -> int:
    me = t.new_id()
    redis_start = start + t.ms(0.3)
    redis_end = redis_start + t.ms(1.0, "cart")
    t.add(t.new_id(), me, "cart", "redis GET", redis_start, redis_end, "Client", **{"db.system": "redis"})
    end = redis_end + t.ms(0.3)
    t.add(me, parent, "cart", "GET /cart", start, end)
    return end


def _payment(t: _Trace, parent: str, start: int) -> int:
    me = t.new_id()
    cursor = start + t.ms(0.5)
    failed = t.rng.random() < t.config.auth_error_rate
    for status in ("Error", "Unset") if failed else ("Unset",):
        end = cursor + t.ms(40.0, "bank-api")
        t.add(t.new_id(), me, "payment", "POST /authorize", cursor, end, "Client", status,
              **{"peer.service": "bank-api", "server.address": "api.bank.example", "http.method": "POST"})
        cursor = end
    end = cursor + t.ms(0.5)
    t.add(me, parent, "payment", "POST /charge", start, end)
    return end


def _inventory(t: _Trace, parent: str, start: int) -> int:
    me = t.new_id()
    cursor = start + t.ms(0.5)
    for statement in [STOCK_QUERY] * t.config.n_plus_one or [STOCK_BATCH_QUERY]:
        end = cursor + t.ms(2.0, "postgres")
        t.add(t.new_id(), me, "inventory", "SELECT stock", cursor, end, "Client",
              **{"db.system": "postgresql", "db.statement": statement})
        cursor = end + t.ms(0.1)
    t.add(me, parent, "inventory", "POST /reserve", start, cursor)
    return cursor


def generate_spans(count: int, config: ShopConfig = ShopConfig(), seed: int = 0,
                   start_ns: int | None = None, interval_ms: float = 100.0) -> list[Span]:
    """``count`` checkout traces, one every ``interval_ms`` from ``start_ns`` (default: now)."""
    rng = random.Random(seed)
    t0 = time.time_ns() if start_ns is None else start_ns
    return [span for i in range(count) for span in shop_trace(rng, config, t0 + int(i * interval_ms * _MS))]


def generate_request(count: int, config: ShopConfig = ShopConfig(), seed: int = 0,
                     start_ns: int | None = None) -> ExportTraceServiceRequest:
    """``generate_spans`` as one OTLP request with the config's tenant and region."""
    return to_request(generate_spans(count, config, seed, start_ns),
                      {"tenant": config.tenant, "cloud.region": config.region})


def to_request(spans: Sequence[Span], resource: dict[str, str] | None = None) -> ExportTraceServiceRequest:
    """Spans as an OTLP request: one resource per service, carrying ``service.name`` plus ``resource``."""
    by_service: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_service[span.service].append(span)
    request = ExportTraceServiceRequest()
    for service, service_spans in by_service.items():
        resource_spans = request.resource_spans.add()
        resource_spans.resource.attributes.extend(_kv({"service.name": service, **(resource or {})}))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = "m1.traces.generator"
        scope_spans.spans.extend(_pb_span(s) for s in service_spans)
    return request


def _pb_span(span: Span) -> PbSpan:
    return PbSpan(
        trace_id=bytes.fromhex(span.trace_id),
        span_id=bytes.fromhex(span.span_id),
        parent_span_id=bytes.fromhex(span.parent_span_id),
        name=span.name,
        kind=_KINDS[span.kind],
        start_time_unix_nano=span.start_ns,
        end_time_unix_nano=span.end_ns,
        attributes=_kv(span.attributes),
        status=Status(code=_STATUS[span.status]),
    )


def _kv(attributes: Mapping[str, str]) -> list[KeyValue]:
    return [KeyValue(key=k, value=AnyValue(string_value=v)) for k, v in attributes.items()]


_HEX_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def to_otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """A request in OTLP/JSON as the Collector's ``otlp_json`` encoding writes it: lowerCamelCase
    field names, ids as hex (not protobuf-JSON base64), int64 as strings."""
    import base64
    import json

    from google.protobuf import json_format

    def hexify(node: object) -> object:
        if isinstance(node, list):
            return [hexify(item) for item in node]
        if isinstance(node, dict):
            return {k: base64.b64decode(v).hex() if k in _HEX_ID_KEYS and isinstance(v, str) else hexify(v)
                    for k, v in node.items()}
        return node

    return json.dumps(hexify(json_format.MessageToDict(request)), separators=(",", ":")).encode()
