"""Local stand-ins for the vendors' APIs, on 127.0.0.1, started by the tests: one aiohttp server
answering like the generic/Alertmanager webhook receivers, Slack, Teams, PagerDuty, Opsgenie and
Jira do (their status codes and bodies), and an SMTP server with STARTTLS (aiosmtpd).

Each checks what it gets against the payload's JSON Schema and answers 400 if it does not match,
as the vendors do. Faults are either scripted (``script(path_prefix, [503, 429, ...])``: the next
requests to that path get these statuses, 429 with ``Retry-After``) or random (``fail_rate``: a mix
of 500, 429 with Retry-After, a hang past the client's timeout, and a reset connection after the
request was processed, whose answer is lost).

The webhook receivers are idempotent (Standard Webhooks): they verify the signature, act on a
``webhook-id`` once and answer 200 to its repeats; ``effects`` counts what they acted on and
``repeats`` the requests they recognised as already done.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import random
import ssl
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import jsonschema
import msgspec
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope

from integrations.registry import schema
from core.kafka.local_broker import free_port
from core.kafka.local_tls import ensure_broker_tls

FAULTS = ("500", "429", "timeout", "reset")


@lru_cache(maxsize=None)
def validator(kind: str) -> jsonschema.protocols.Validator:
    """The checked, compiled validator of ``kind``'s schema."""
    cls = jsonschema.validators.validator_for(schema(kind))
    cls.check_schema(schema(kind))
    return cls(schema(kind), format_checker=cls.FORMAT_CHECKER)


def verify(secret: str, headers, body: bytes) -> bool:
    """A Standard Webhooks receiver's check: one of the signatures matches ``secret``."""
    msg_id, ts, sigs = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature", "")
    if not msg_id or not ts:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s.partition(",")[2]) for s in sigs.split() if s.startswith("v1,"))


class FakeVendors:
    """The HTTP vendors on one port; ``url`` is its base."""

    def __init__(self, secret: str = "", fail_rate: float = 0.0, hang_seconds: float = 3.0, retry_after: int = 1,
                 genie_key: str = "genie-key", jira_token: str = "jira-token", seed: int = 1):
        self.secret, self.fail_rate, self.hang_seconds, self.retry_after = secret, fail_rate, hang_seconds, retry_after
        self.genie_key, self.jira_token = genie_key, jira_token
        self.random = random.Random(seed)
        self.scripts: dict[str, list[int]] = {}
        self.requests: list[tuple[str, dict, bytes]] = []   # (path, headers, body) of every request
        self.effects: Counter[str] = Counter()               # acted on, per key (webhook-id, dedup key, ...)
        self.first_seen: dict[str, float] = {}               # when each key was first acted on
        self.first_request: dict[str, float] = {}            # when a webhook-id was first received
        self.repeats: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.invalid: list[str] = []
        self.pagerduty: dict[str, list[str]] = defaultdict(list)   # dedup_key -> actions
        self.opsgenie: dict[str, list[str]] = defaultdict(list)    # alias -> actions
        self.jira_issues: dict[str, dict] = {}                     # key -> fields
        self.jira_comments: dict[str, list[dict]] = defaultdict(list)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    def script(self, prefix: str, statuses: list[int]) -> None:
        self.scripts[prefix] = list(statuses)

    async def start(self) -> FakeVendors:
        app = web.Application(middlewares=[self._faults])
        app.add_routes([
            web.post("/hooks/{name}", self.webhook), web.post("/alertmanager/{name}", self.alertmanager),
            web.post("/services/{token:.+}", self.slack), web.post("/teams/{token}", self.teams),
            web.post("/v2/enqueue", self.pagerduty_event),
            web.post("/v2/alerts", self.opsgenie_create), web.post("/v2/alerts/{alias}/{action}", self.opsgenie_action),
            web.post("/rest/api/3/search/jql", self.jira_search), web.post("/rest/api/3/issue", self.jira_create),
            web.get("/rest/api/3/issue/{key}/comment", self.jira_comments_list),
            web.post("/rest/api/3/issue/{key}/comment", self.jira_comment),
        ])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # -- faults --------------------------------------------------------------------------------
    @web.middleware
    async def _faults(self, request: web.Request, handler):
        body = await request.read()
        self.requests.append((request.path, dict(request.headers), body))
        if msg_id := request.headers.get("webhook-id"):
            self.first_request.setdefault(msg_id, time.time())
        for prefix, statuses in self.scripts.items():
            if request.path.startswith(prefix) and statuses:
                return self._status(statuses.pop(0))
        if self.fail_rate and self.random.random() < self.fail_rate:
            fault = self.random.choice(FAULTS)
            self.faults[fault] += 1
            if fault == "timeout":
                await asyncio.sleep(self.hang_seconds)
                return self._status(504)  # too late: the client gave up
            if fault == "reset":  # processed, but the answer never arrives
                await handler(request)
                request.transport.abort()
                return web.Response(status=200)
            return self._status(int(fault))
        return await handler(request)

    def _status(self, status: int) -> web.Response:
        headers = {"Retry-After": str(self.retry_after)} if status == 429 else {}
        return web.json_response({"message": "injected"}, status=status, headers=headers)

    def _invalid(self, kind: str, body: bytes) -> web.Response | None:
        try:
            error = jsonschema.exceptions.best_match(validator(kind).iter_errors(msgspec.json.decode(body)))
            if error is not None:
                raise error
        except (jsonschema.ValidationError, msgspec.DecodeError) as exc:
            self.invalid.append(f"{kind}: {exc}")
            return web.json_response({"message": str(exc)[:200]}, status=400)
        return None

    def _once(self, key: str) -> None:
        if key in self.effects:
            self.repeats[key] += 1
        else:
            self.effects[key] += 1
            self.first_seen[key] = time.time()

    # -- webhooks ------------------------------------------------------------------------------
    async def webhook(self, request: web.Request, kind: str = "webhook") -> web.Response:
        body = await request.read()
        if self.secret and not verify(self.secret, request.headers, body):
            return web.json_response({"error": "bad signature"}, status=401)
        if bad := self._invalid(kind, body):
            return bad
        self._once(request.headers["webhook-id"])
        return web.json_response({"ok": True, "action": "scale", "replicas": 3})

    async def alertmanager(self, request: web.Request) -> web.Response:
        return await self.webhook(request, "alertmanager")

    async def slack(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._invalid("slack", body):
            return web.Response(status=400, text="invalid_payload")
        self._once(hashlib.sha256(body).hexdigest())
        return web.Response(text="ok")

    async def teams(self, request: web.Request) -> web.Response:
        body = await request.read()
        if bad := self._invalid("teams", body):
            return bad
        self._once(hashlib.sha256(body).hexdigest())
        return web.Response(status=202)

    # -- PagerDuty -----------------------------------------------------------------------------
    async def pagerduty_event(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self._invalid("pagerduty", body):
            return web.json_response({"status": "invalid event", "message": "Event object is invalid",
                                      "errors": ["see schema"]}, status=400)
        event = msgspec.json.decode(body)
        key = event.get("dedup_key") or uuid.uuid4().hex
        self.pagerduty[key].append(event["event_action"])
        return web.json_response({"status": "success", "message": "Event processed", "dedup_key": key}, status=202)

    # -- Opsgenie ------------------------------------------------------------------------------
    def _genie(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"GenieKey {self.genie_key}":
            return web.json_response({"message": "Could not authenticate", "took": 0.0, "requestId": uuid.uuid4().hex},
                                     status=401)
        return None

    def _accepted(self) -> web.Response:
        return web.json_response({"result": "Request will be processed", "took": 0.01, "requestId": str(uuid.uuid4())},
                                 status=202)

    async def opsgenie_create(self, request: web.Request) -> web.Response:
        if (denied := self._genie(request)) or (denied := self._invalid("opsgenie", await request.read())):
            return denied
        alert = await request.json()
        self.opsgenie[alert.get("alias") or alert["message"]].append("create")
        return self._accepted()

    async def opsgenie_action(self, request: web.Request) -> web.Response:
        if (denied := self._genie(request)) or (denied := self._invalid("opsgenie", await request.read())):
            return denied
        if request.query.get("identifierType") != "alias" or request.match_info["action"] not in ("acknowledge", "close"):
            return web.json_response({"message": "unsupported"}, status=422)
        self.opsgenie[request.match_info["alias"]].append(request.match_info["action"])
        return self._accepted()

    # -- Jira ----------------------------------------------------------------------------------
    def _jira_auth(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        ok = auth == f"Bearer {self.jira_token}" or (auth.startswith("Basic ") and base64.b64decode(auth[6:]).decode()
                                                     .endswith(f":{self.jira_token}"))
        return None if ok else web.json_response({"errorMessages": ["Unauthorized"]}, status=401)

    async def jira_search(self, request: web.Request) -> web.Response:
        if denied := self._jira_auth(request):
            return denied
        query = await request.json()
        wanted = query["jql"].split('"')[1]
        issues = [{"id": str(i), "key": key} for i, (key, f) in enumerate(self.jira_issues.items())
                  if wanted in f.get("labels", [])][: query.get("maxResults", 50)]
        return web.json_response({"issues": issues, "isLast": True})

    async def jira_create(self, request: web.Request) -> web.Response:
        if (denied := self._jira_auth(request)) or (denied := self._invalid("jira", await request.read())):
            return denied
        fields = (await request.json())["fields"]
        key = f"{fields['project']['key']}-{len(self.jira_issues) + 1}"
        self.jira_issues[key] = fields
        return web.json_response({"id": str(len(self.jira_issues)), "key": key, "self": f"{self.url}/rest/api/3/issue/{key}"},
                                 status=201)

    async def jira_comments_list(self, request: web.Request) -> web.Response:
        if denied := self._jira_auth(request):
            return denied
        comments = self.jira_comments[request.match_info["key"]]
        return web.json_response({"comments": comments, "startAt": 0, "maxResults": 100, "total": len(comments)})

    async def jira_comment(self, request: web.Request) -> web.Response:
        if (denied := self._jira_auth(request)) or (denied := self._invalid("jira", await request.read())):
            return denied
        key = request.match_info["key"]
        if key not in self.jira_issues:
            return web.json_response({"errorMessages": ["Issue does not exist"]}, status=404)
        comment = {"id": str(len(self.jira_comments[key]) + 1), **(await request.json())}
        self.jira_comments[key].append(comment)
        return web.json_response(comment, status=201)


class _Mailbox:
    """aiosmtpd handler: keeps messages by Message-ID (a repeat is accepted, not kept twice); scripted
    replies (``replies``: e.g. ``["451 4.3.0 try again"]``) answer the next DATA commands."""

    def __init__(self) -> None:
        self.messages: dict[str, bytes] = {}
        self.repeats = 0
        self.replies: list[str] = []
        self.starttls_seen = False

    async def handle_DATA(self, server: SMTP, session, envelope: Envelope) -> str:
        if self.replies:
            return self.replies.pop(0)
        self.starttls_seen = self.starttls_seen or session.ssl is not None
        raw = envelope.original_content or envelope.content
        msg_id = next((line.split(b":", 1)[1].strip().decode() for line in raw.splitlines()
                       if line.lower().startswith(b"message-id:")), "")
        if msg_id in self.messages:
            self.repeats += 1
        self.messages.setdefault(msg_id, raw)
        return "250 OK queued"


class FakeSmtp:
    """An SMTP server on 127.0.0.1 that requires STARTTLS (its certificate from ``core.kafka.local_tls``)."""

    def __init__(self, directory: Path):
        self.tls = ensure_broker_tls(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.keystore)
        self.mailbox = _Mailbox()
        self.port = free_port()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port, tls_context=context,
                                     require_starttls=True)

    @property
    def ca_file(self) -> str:
        return str(self.tls.ca_file)

    def start(self) -> FakeSmtp:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


@contextmanager
def vendors_in_thread(**kwargs) -> Iterator[FakeVendors]:
    """:class:`FakeVendors` serving from an event loop of its own thread, for tests whose own code
    blocks (a CLI runner, a worker started and polled synchronously)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    vendors = asyncio.run_coroutine_threadsafe(FakeVendors(**kwargs).start(), loop).result(10)
    try:
        yield vendors
    finally:
        asyncio.run_coroutine_threadsafe(vendors.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
