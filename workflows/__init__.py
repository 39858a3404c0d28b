"""Alert workflows (issue #12): per-tenant YAML workflows run by the worker as Faust agents.

Layout: ``spec`` (the YAML model and its JSON Schema), ``match`` (triggers, inhibition,
silences), ``conditions``, ``grouping``, ``steps`` (the step state machine), ``incidents``,
``engine`` (the pure core tying them together with an injected clock), ``agents`` (the Faust
loop and tables), ``cli``. See docs/workflows.md.
"""
