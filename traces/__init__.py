"""Distributed-tracing analysis: critical paths, bottlenecks and optimisation rules.

* ``traces.model``: the ``Span`` record the analysis works on, built from ``otel_traces`` rows;
* ``traces.critical_path``: per trace, the critical path and each span's self time;
* ``traces.bottlenecks``: over a window, the operations that own end-to-end latency;
* ``traces.rules``: optimisation suggestions (N+1, slow dependency, retries, error bursts);
* ``traces.generator``: synthetic OTLP traces with a known slow component and N+1 pattern;
* ``traces.cli``: ``bottlenecks`` command over ClickHouse.
"""
