"""A real OTLP/HTTP trace receiver on 127.0.0.1 for tests: decodes, counts, stops and restarts.

    receiver = OtlpReceiver().start()       # picks a free port, kept across restarts
    ... export to receiver.endpoint ...     # base URL; exporters append /v1/traces
    receiver.stop(); receiver.start()       # same port: the collector went away and came back
"""

from __future__ import annotations

import gzip
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class OtlpReceiver:
    """Accepts ``POST /v1/traces`` (protobuf, optionally gzip) and keeps the decoded requests."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.requests: list[ExportTraceServiceRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spans(self) -> list:
        """All received spans (``opentelemetry.proto`` ``Span`` messages), in arrival order."""
        with self._lock:
            return [s for r in self.requests for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]

    @property
    def span_names(self) -> list[str]:
        """Names of all received spans, in arrival order."""
        return [s.name for s in self.spans]

    def stage_seconds(self, agent: str) -> dict[str, float]:
        """Seconds spent in each child span (stage) of ``agent``'s batch spans (attribute
        ``m1.agent``; its ``prepare`` spans too), summed over batches; ``"batch"`` is the ``process``
        spans' own total (a batch prepared ahead was prepared while the one before it was processed)."""
        spans = self.spans
        batches = {s.span_id: s for s in spans
                   if any(a.key == "m1.agent" and a.value.string_value == agent for a in s.attributes)}
        totals = {"batch": sum(s.end_time_unix_nano - s.start_time_unix_nano for s in batches.values()
                               if s.name.startswith("process ")) / 1e9}
        for s in spans:
            if s.parent_span_id in batches:
                totals[s.name] = totals.get(s.name, 0.0) + (s.end_time_unix_nano - s.start_time_unix_nano) / 1e9
        return totals

    @property
    def span_count(self) -> int:
        return len(self.span_names)

    def start(self) -> OtlpReceiver:
        """Listen (again) on 127.0.0.1, on the same port as before if there was one."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and close the socket; received requests are kept."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    return self._reply(404, b"")
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                with receiver._lock:
                    receiver.requests.append(request)
                self._reply(200, ExportTraceServiceResponse().SerializeToString())

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
