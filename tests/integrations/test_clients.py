"""Each integration's client against its local vendor-like server: the payload matches the JSON
Schema written from the vendor's documentation, the request is what the API takes (auth, path,
idempotency), and its answers (2xx, 400, 401, 429 with Retry-After, 5xx) become the right outcome."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import jsonschema
import pytest

from integrations import registry, webhook
from integrations.context import Context
from integrations.notification import KINDS, Receiver
from core.settings import Settings
from tests.integrations.conftest import SECRET, notification
from tests.integrations.fake_vendors import FakeSmtp, FakeVendors, verify


def receivers(url: str) -> dict[str, Receiver]:
    return {
        "webhook": Receiver("webhook", "ops-hook", f"{url}/hooks/ops", "env:M1_TEST_WHSEC"),
        "alertmanager": Receiver("alertmanager", "am", f"{url}/alertmanager/am", "env:M1_TEST_WHSEC"),
        "slack": Receiver("slack", "slack", f"{url}/services/T000/B000/XXX"),
        "teams": Receiver("teams", "teams", f"{url}/teams/abc"),
        "pagerduty": Receiver("pagerduty", "pd", f"{url}/v2/enqueue", "env:M1_TEST_PD"),
        "opsgenie": Receiver("opsgenie", "og", url, "env:M1_TEST_GENIE", {"responders": "team:payments,user:a@b.io"}),
        "jira": Receiver("jira", "jira", url, "env:M1_TEST_JIRA", {"project": "OPS", "user": "bot@acme.io"}),
    }


async def send(vendors: FakeVendors, receiver: Receiver, kind: str = "trigger", nid: str = "n-1"):
    async with aiohttp.ClientSession() as session:
        ctx = Context(session, Settings(delivery_timeout_seconds=2.0))
        return await registry.deliver(ctx, notification(receiver, kind, nid))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rtype", sorted(set(registry.CLIENTS) - {"email", "kafka"}))
def test_every_payload_matches_the_vendor_schema(rtype: str, kind: str) -> None:
    receiver = receivers("http://127.0.0.1:9")[rtype]
    n = notification(receiver, kind)
    client = registry.CLIENTS[rtype]
    body = client.payload(n, "R0UTINGKEY") if rtype == "pagerduty" else client.payload(n)
    jsonschema.validate(body, registry.schema(rtype))


@pytest.mark.parametrize("rtype", ["email", "kafka"])
def test_email_and_kafka_payloads_match_their_schemas(rtype: str) -> None:
    n = notification(Receiver(rtype, "x", options={"to": "oncall@acme.io, sre@acme.io", "from": "m1@acme.io"}))
    jsonschema.validate(registry.CLIENTS[rtype].payload(n), registry.schema(rtype))


def test_schemas_refuse_what_the_vendors_refuse() -> None:
    """The schemas are not vacuous: the documented limits and required fields are checked."""
    n = notification(receivers("http://x")["pagerduty"])
    event = registry.CLIENTS["pagerduty"].payload(n, "k")
    del event["payload"]["severity"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(event, registry.schema("pagerduty"))
    alert = registry.CLIENTS["opsgenie"].payload(notification(receivers("http://x")["opsgenie"]))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**alert, "message": "x" * 131}, registry.schema("opsgenie"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": "3"}, registry.schema("alertmanager"))


@pytest.mark.parametrize("rtype", ["webhook", "alertmanager", "slack", "teams", "pagerduty", "opsgenie", "jira"])
async def test_each_client_is_accepted_by_its_vendor(vendors: FakeVendors, rtype: str) -> None:
    outcome = await send(vendors, receivers(vendors.url)[rtype])
    assert outcome.delivered, outcome
    assert not vendors.invalid


@pytest.mark.parametrize("rtype", ["webhook", "slack", "pagerduty", "opsgenie", "jira"])
async def test_429_with_retry_after_and_5xx_are_retryable_400_is_final(vendors: FakeVendors, rtype: str) -> None:
    receiver = receivers(vendors.url)[rtype]
    prefix = "/rest/api/3" if rtype == "jira" else "/"
    vendors.script(prefix, [429, 503, 400])
    limited, down, refused = [await send(vendors, receiver) for _ in range(3)]
    assert (limited.delivered, limited.retryable, limited.status, limited.retry_after) == (False, True, 429, 1.0)
    assert (down.retryable, down.status) == (True, 503)
    assert (refused.retryable, refused.status) == (False, 400)
    assert (await send(vendors, receiver)).delivered


async def test_a_dead_endpoint_and_a_timeout_are_retryable(vendors: FakeVendors) -> None:
    closed = Receiver("webhook", "gone", "http://127.0.0.1:9/hooks/x", "env:M1_TEST_WHSEC")
    outcome = await send(vendors, closed)
    assert outcome.retryable and outcome.reason.startswith("connection:")
    vendors.fail_rate, vendors.hang_seconds = 1.0, 3.0
    vendors.random.choice = lambda faults: "timeout"
    outcome = await send(vendors, receivers(vendors.url)["webhook"])
    assert outcome.retryable and outcome.reason == "timeout"


async def test_webhook_is_signed_per_standard_webhooks_with_two_secrets_in_rotation(
        vendors: FakeVendors, tmp_path: Path) -> None:
    old, new = "whsec_" + "QUFBQUFBQUFBQUFBQUFBQQ==", SECRET
    (tmp_path / "secrets").write_text(f"{old} {new}\n")
    receiver = Receiver("webhook", "ops", f"{vendors.url}/hooks/ops", f"file:{tmp_path / 'secrets'}")
    assert (await send(vendors, receiver, nid="n-rot")).delivered
    path, headers, body = vendors.requests[-1]
    assert headers["webhook-id"] == "n-rot" and headers["webhook-timestamp"].isdigit()
    assert len(headers["webhook-signature"].split()) == 2
    assert verify(old, headers, body) and verify(new, headers, body)
    assert not verify("whsec_" + "QkJCQkJCQkJCQkJCQkJCQg==", headers, body)


async def test_a_webhook_receiver_acts_once_per_notification(vendors: FakeVendors) -> None:
    receiver = receivers(vendors.url)["webhook"]
    for _ in range(3):
        assert (await send(vendors, receiver, nid="n-dup")).delivered
    assert vendors.effects["n-dup"] == 1 and vendors.repeats["n-dup"] == 2


async def test_call_returns_the_status_and_the_parsed_answer(vendors: FakeVendors) -> None:
    status, answer = await webhook.call(receivers(vendors.url)["webhook"], {
        "type": "incident.scale", "timestamp": "2026-11-29T00:00:00Z",
        "data": {"id": "c1", "tenant": "acme", "workflow": "w", "kind": "trigger", "incident": {"id": "i"}}})
    assert (status, answer["action"], answer["replicas"]) == (200, "scale", 3)
    assert (await webhook.call(Receiver("webhook", "x", "http://127.0.0.1:9/"), {}))[0] == 0


async def test_pagerduty_trigger_ack_resolve_act_on_one_alert(vendors: FakeVendors) -> None:
    receiver = receivers(vendors.url)["pagerduty"]
    for kind in KINDS:
        assert (await send(vendors, receiver, kind, nid=f"n-{kind}")).delivered
    assert vendors.pagerduty == {"acme/inc-1": ["trigger", "acknowledge", "resolve"]}


async def test_opsgenie_create_ack_close_by_alias_with_genie_key(vendors: FakeVendors, monkeypatch) -> None:
    receiver = receivers(vendors.url)["opsgenie"]
    for kind in KINDS:
        assert (await send(vendors, receiver, kind, nid=f"n-{kind}")).delivered
    [(alias, actions)] = vendors.opsgenie.items()
    assert alias.startswith("m1-acme-") and actions == ["create", "acknowledge", "close"]
    monkeypatch.setenv("M1_TEST_GENIE", "wrong")
    denied = await send(vendors, receiver)
    assert (denied.delivered, denied.retryable, denied.status) == (False, False, 401)


async def test_jira_creates_once_then_comments_once(vendors: FakeVendors) -> None:
    receiver = receivers(vendors.url)["jira"]
    for _ in range(2):  # a replayed trigger finds its issue by label
        assert (await send(vendors, receiver, "trigger", nid="n-t")).delivered
    for _ in range(2):
        assert (await send(vendors, receiver, "resolve", nid="n-r")).delivered
    [(key, fields)] = vendors.jira_issues.items()
    assert fields["project"] == {"key": "OPS"} and fields["description"]["type"] == "doc"
    assert len(vendors.jira_comments[key]) == 1


async def test_missing_secret_is_a_final_config_failure(vendors: FakeVendors) -> None:
    receiver = Receiver("pagerduty", "pd", f"{vendors.url}/v2/enqueue", "env:M1_TEST_UNSET_SECRET")
    outcome = await send(vendors, receiver)
    assert not outcome.retryable and outcome.reason.startswith("config: secret env:M1_TEST_UNSET_SECRET")
    clear = Receiver("pagerduty", "pd", f"{vendors.url}/v2/enqueue", "R0UTINGKEY")
    assert "not a value in clear" in (await send(vendors, clear)).reason


async def test_email_goes_over_starttls_once_per_message_id(tmp_path: Path) -> None:
    smtp = FakeSmtp(tmp_path).start()
    try:
        receiver = Receiver("email", "mail", f"smtp://127.0.0.1:{smtp.port}", "",
                            {"from": "m1@acme.io", "to": "oncall@acme.io", "ca_file": smtp.ca_file})
        smtp.mailbox.replies = ["451 4.3.0 mailbox busy, try again"]
        busy = await send(FakeVendors(), receiver)
        assert (busy.delivered, busy.retryable, busy.status) == (False, True, 451)
        for _ in range(2):
            assert (await send(FakeVendors(), receiver, nid="n-mail")).delivered
        assert list(smtp.mailbox.messages) == ["<n-mail@m1-analytics>"] and smtp.mailbox.repeats == 1
        assert smtp.mailbox.starttls_seen
        smtp.mailbox.replies = ["550 5.1.1 no such user"]
        refused = await send(FakeVendors(), receiver)
        assert (refused.retryable, refused.status) == (False, 550)
    finally:
        smtp.stop()


async def test_pagerduty_takes_the_routing_key_from_the_contract_option(vendors: FakeVendors) -> None:
    receiver = Receiver("pagerduty", "pd", f"{vendors.url}/v2/enqueue", options={"routing_key_ref": "env:M1_TEST_PD"})
    assert (await send(vendors, receiver)).delivered
    assert b'"routing_key":"R0UTINGKEY"' in vendors.requests[-1][2]
