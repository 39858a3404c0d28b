"""Fixtures of the integration tests: the local vendor-like servers and sample notifications."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from integrations.notification import Notification, Receiver
from tests.integrations.fake_vendors import FakeVendors

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def notification(receiver: Receiver, kind: str = "trigger", nid: str = "n-1", incident: str = "inc-1") -> Notification:
    """A notification of a critical checkout incident, with its enrichment."""
    return Notification(
        id=nid, tenant="acme", workflow="checkout-latency", kind=kind, receiver=receiver,
        incident={"id": incident, "title": "checkout p99 latency", "severity": "critical", "status": "open",
                  "service": "checkout", "region": "eu-west-1", "started_at": 1_764_400_000.0,
                  "timeline": [{"ts": 1_764_400_000.0, "event": "opened"}], "labels": {"team": "payments"}},
        enrichment={"bottlenecks": [{"service": "db", "operation": "SELECT orders", "share": 0.62}],
                    "related": [{"service": "checkout", "metric": "error_rate", "score": 0.81}]},
        created_ts=1_764_400_010.0, source_ts=1_764_400_009.0)


@pytest.fixture
async def vendors(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeVendors]:
    monkeypatch.setenv("M1_TEST_WHSEC", SECRET)
    monkeypatch.setenv("M1_TEST_GENIE", "genie-key")
    monkeypatch.setenv("M1_TEST_JIRA", "jira-token")
    monkeypatch.setenv("M1_TEST_PD", "R0UTINGKEY")
    server = await FakeVendors(secret=SECRET).start()
    yield server
    await server.stop()
