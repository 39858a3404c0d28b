"""OIDC bearer tokens against a real JWKS served over HTTP on 127.0.0.1, with real RSA and EC keys."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tenancy.authn import AuthenticationError, Authenticator

ISSUER, AUDIENCE = "https://idp.example.test/realms/m1", "m1-api"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks() -> dict:
    return {"keys": [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key())), "kid": "rsa-1", "use": "sig"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key())), "kid": "ec-1", "use": "sig"},
    ]}


class JwksServer:
    """An aiohttp server on 127.0.0.1, in its own thread, serving :func:`jwks` and counting fetches."""

    def __init__(self) -> None:
        self.fetches = 0
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._started.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        async def serve(_: web.Request) -> web.Response:
            self.fetches += 1
            return web.json_response(jwks())

        app = web.Application()
        app.router.add_get("/jwks.json", serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/jwks.json"

    def __enter__(self) -> JwksServer:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
def oidc(settings, registry, jwks_server) -> Authenticator:
    registry.create_tenant("acme")
    registry.create_tenant("paused")
    registry.disable_tenant("paused")
    configured = settings.model_copy(update={"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE,
                                             "oidc_jwks_url": jwks_server.url})
    return Authenticator(configured, registry)


def claims(**changes: object) -> dict:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice@acme", "iat": now, "exp": now + 300,
            "m1_tenant": "acme", "m1_roles": ["analyst"]}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def token(key=RSA_KEY, alg: str = "RS256", kid: str = "rsa-1", **changes: object) -> str:
    return jwt.encode(claims(**changes), key, algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, payload: dict, sign) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{sign(signing_input.encode())}"


def bearer(credential: str) -> str:
    return f"Bearer {credential}"


def test_valid_rs256_and_es256_tokens_are_accepted(oidc):
    principal = oidc.authenticate(bearer(token()))
    assert (principal.subject, principal.tenant, principal.roles, principal.via) == (
        "alice@acme", "acme", {"analyst"}, "oidc")
    es = oidc.authenticate(bearer(token(EC_KEY, "ES256", "ec-1", m1_roles=["viewer", "auditor"])))
    assert es.roles == {"viewer", "auditor"} and es.can("audit:read", "acme") and not es.can("audit:read", "globex")
    platform = oidc.authenticate(bearer(token(m1_tenant="platform", m1_roles=["platform-admin"])))
    assert platform.can("series:read", "acme")


def public_pem() -> bytes:
    return RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


REFUSALS = {
    "wrong issuer": (lambda: token(iss="https://evil.test/"), "Invalid issuer"),
    "wrong audience": (lambda: token(aud="another-api"), "Audience doesn't match"),
    "expired": (lambda: token(exp=int(time.time()) - 120), "Signature has expired"),
    "no exp": (lambda: token(exp=None), 'missing the "exp" claim'),
    "no sub": (lambda: token(sub=None), 'missing the "sub" claim'),
    "no aud": (lambda: token(aud=None), 'missing the "aud" claim'),
    "unknown kid": (lambda: token(OTHER_RSA_KEY, kid="rsa-2"), "unknown key id 'rsa-2'"),
    "no kid": (lambda: jwt.encode(claims(), RSA_KEY, algorithm="RS256"), "no key id"),
    "signed by another key under a known kid": (lambda: token(OTHER_RSA_KEY), "Signature verification failed"),
    "alg none": (lambda: forged({"alg": "none", "kid": "rsa-1"}, claims(), lambda _: ""), "'none' is not accepted"),
    "HS256 signed with the public key": (
        lambda: forged({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}, claims(),
                       lambda data: b64(hmac.new(public_pem(), data, hashlib.sha256).digest())),
        "'HS256' is not accepted"),
    "RS384": (lambda: token(alg="RS384"), "'RS384' is not accepted"),
    "the attacker's key embedded in the header (jwk, jku)": (
        lambda: jwt.encode(claims(), OTHER_RSA_KEY, algorithm="RS256", headers={
            "kid": "rsa-1", "jku": "http://127.0.0.1:9/jwks.json",
            "jwk": json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(OTHER_RSA_KEY.public_key()))}),
        "Signature verification failed"),
    "ES256 header on the RSA key": (lambda: token(EC_KEY, "ES256", "rsa-1"), "does not match its key"),
    "tampered payload": (
        lambda: ".".join([(t := token().split("."))[0], b64(json.dumps(claims(m1_tenant="globex")).encode()), t[2]]),
        "Signature verification failed"),
    "missing tenant claim": (lambda: token(m1_tenant=None), "no 'm1_tenant' claim"),
    "unknown tenant": (lambda: token(m1_tenant="globex"), "no tenant 'globex'"),
    "invalid tenant name": (lambda: token(m1_tenant="Acme'; --"), "invalid tenant name"),
    "disabled tenant": (lambda: token(m1_tenant="paused"), "tenant 'paused' is disabled"),
    "platform-admin claimed by a tenant": (lambda: token(m1_roles=["viewer", "platform-admin"]),
                                           "platform-admin is granted only to the 'platform' tenant"),
    "unknown role": (lambda: token(m1_roles=["root"]), "unknown role 'root'"),
    "roles not a list": (lambda: token(m1_roles="analyst"), "must be a non-empty list"),
    "no roles": (lambda: token(m1_roles=[]), "must be a non-empty list"),
    "not a JWT": (lambda: "abc.def", "malformed token"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_bad_tokens_are_refused_with_the_reason(oidc, case):
    make, reason = REFUSALS[case]
    with pytest.raises(AuthenticationError, match=reason):
        oidc.authenticate(bearer(make()))


def test_the_jwks_is_fetched_once_and_an_unknown_kid_cannot_make_it_refetch_each_time(settings, registry, jwks_server):
    registry.create_tenant("acme")
    configured = settings.model_copy(update={"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE,
                                             "oidc_jwks_url": jwks_server.url})
    oidc = Authenticator(configured, registry)
    before = jwks_server.fetches
    for _ in range(5):
        oidc.authenticate(bearer(token()))
    for _ in range(5):
        with pytest.raises(AuthenticationError, match="unknown key id"):
            oidc.authenticate(bearer(token(OTHER_RSA_KEY, kid="rsa-9")))
    assert jwks_server.fetches - before == 1


def test_a_jwks_file_works_too_and_is_reread_when_it_changes(settings, registry, tmp_path):
    registry.create_tenant("acme")
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwks()["keys"][1]]}))  # the EC key only
    configured = settings.model_copy(update={"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE, "oidc_jwks_path": path})
    oidc = Authenticator(configured, registry)
    assert oidc.authenticate(bearer(token(EC_KEY, "ES256", "ec-1"))).tenant == "acme"
    with pytest.raises(AuthenticationError, match="unknown key id 'rsa-1'"):
        oidc.authenticate(bearer(token()))
    path.write_text(json.dumps(jwks()))
    import os
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert oidc.authenticate(bearer(token())).tenant == "acme"


def test_tokens_are_refused_while_oidc_is_off_and_oidc_needs_its_settings(settings, registry):
    registry.create_tenant("acme")
    with pytest.raises(AuthenticationError, match="no M1_OIDC_ISSUER configured"):
        Authenticator(settings, registry).authenticate(bearer(token()))
    with pytest.raises(ValueError, match="M1_OIDC_AUDIENCE is required"):
        Authenticator(settings.model_copy(update={"oidc_issuer": ISSUER}), registry)
    with pytest.raises(ValueError, match="M1_OIDC_JWKS_URL or M1_OIDC_JWKS_PATH is required"):
        Authenticator(settings.model_copy(update={"oidc_issuer": ISSUER, "oidc_audience": AUDIENCE}), registry)


async def test_async_path_fetches_the_keys_off_the_event_loop(oidc):
    assert (await oidc.authenticate_async(bearer(token(EC_KEY, "ES256", "ec-1")))).via == "oidc"
