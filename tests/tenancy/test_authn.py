"""The Authenticator: bearer parsing, API keys verified once then remembered, refusals with reasons."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tenancy.authn import AuthenticationBusy, AuthenticationError, Authenticator


class CountingRegistry:
    """The real registry, counting the scrypt verifications it is asked for."""

    def __init__(self, registry) -> None:
        self._registry, self.verified = registry, 0

    def verify_key(self, raw):
        self.verified += 1
        return self._registry.verify_key(raw)

    def __getattr__(self, name):
        return getattr(self._registry, name)


@pytest.fixture
def acme_key(registry) -> str:
    registry.create_tenant("acme")
    return registry.create_key("acme", ["viewer", "analyst"], "grafana")[1]


@pytest.mark.parametrize("header, reason", [
    (None, "missing Authorization header"),
    ("", "missing Authorization header"),
    ("Basic dXNlcjpwdw==", "must be 'Bearer"),
    ("Bearer ", "must be 'Bearer"),
    ("Bearer m1_0123456789ab_short", "malformed API key"),
    ("Bearer not-a-jwt", "OIDC tokens are not accepted here"),
])
def test_malformed_headers_are_refused_with_a_reason(settings, registry, header, reason):
    with pytest.raises(AuthenticationError, match=reason):
        Authenticator(settings, registry).authenticate(header)


def test_a_wrong_secret_or_unknown_id_is_refused_and_named_for_the_log(settings, registry, acme_key):
    authenticator = Authenticator(settings, registry)
    key_id = acme_key.split("_")[1]
    wrong = acme_key[:-1] + ("B" if acme_key.endswith("A") else "A")
    with pytest.raises(AuthenticationError, match="invalid API key") as refused:
        authenticator.authenticate(f"Bearer {wrong}")
    assert refused.value.subject == f"key:{key_id}"
    with pytest.raises(AuthenticationError, match="invalid API key"):
        authenticator.authenticate(f"Bearer {acme_key.replace(key_id, 'ffffffffffff')}")
    principal = authenticator.authenticate(f"bearer  {acme_key} ")
    assert principal.subject == f"key:{key_id}" and principal.can("sql:tenant", "acme")
    assert not principal.can("sql:tenant", "globex")


def test_a_verified_key_is_remembered_until_the_registry_changes(settings, registry, acme_key):
    counting = CountingRegistry(registry)
    authenticator = Authenticator(settings, counting)
    for _ in range(50):
        authenticator.authenticate(f"Bearer {acme_key}")
    assert counting.verified == 1
    start = time.perf_counter()
    for _ in range(1000):
        authenticator.authenticate(f"Bearer {acme_key}")
    assert (time.perf_counter() - start) / 1000 < 0.002  # scrypt alone takes ~30 ms
    registry.create_tenant("globex")  # not an access change: still remembered
    authenticator.authenticate(f"Bearer {acme_key}")
    assert counting.verified == 1
    registry.disable_tenant("globex")  # an access change: verified again
    authenticator.authenticate(f"Bearer {acme_key}")
    assert counting.verified == 2


def test_the_memory_lasts_api_key_cache_seconds(settings, registry, acme_key):
    counting = CountingRegistry(registry)
    authenticator = Authenticator(settings.model_copy(update={"api_key_cache_seconds": 0.3}), counting)
    authenticator.authenticate(f"Bearer {acme_key}")
    authenticator.authenticate(f"Bearer {acme_key}")
    time.sleep(0.35)
    authenticator.authenticate(f"Bearer {acme_key}")
    assert counting.verified == 2


def test_a_remembered_key_is_not_a_remembered_wrong_key(settings, registry, acme_key):
    authenticator = Authenticator(settings, registry)
    authenticator.authenticate(f"Bearer {acme_key}")
    with pytest.raises(AuthenticationError, match="invalid API key"):
        authenticator.authenticate(f"Bearer {acme_key[:-1] + ('B' if acme_key.endswith('A') else 'A')}")


def test_threads_share_one_authenticator(settings, registry, acme_key):
    registry.create_tenant("globex")
    globex_key = registry.create_key("globex", ["auditor"])[1]
    authenticator = Authenticator(settings, registry)
    barrier = threading.Barrier(8)

    def call(i: int) -> str:
        barrier.wait()
        return authenticator.authenticate(f"Bearer {(acme_key, globex_key)[i % 2]}").tenant

    with ThreadPoolExecutor(8) as pool:
        tenants = list(pool.map(call, range(8)))
    assert tenants == ["acme", "globex"] * 4


async def test_async_authentication_keeps_the_event_loop_free(settings, registry, acme_key):
    authenticator = Authenticator(settings, registry)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    principal = await authenticator.authenticate_async(f"Bearer {acme_key}")  # scrypt, in the pool
    assert ticks >= 3, "the loop stood still while the key was verified"
    task.cancel()
    assert principal.tenant == "acme"
    assert await authenticator.authenticate_async(f"Bearer {acme_key}") == principal
    registry.revoke_key(acme_key.split("_")[1])
    with pytest.raises(AuthenticationError, match="revoked"):
        await authenticator.authenticate_async(f"Bearer {acme_key}")
    with pytest.raises(AuthenticationError, match="missing"):
        await authenticator.authenticate_async(None)
    authenticator.close()


async def test_concurrent_requests_with_one_new_key_share_one_scrypt_check(settings, registry, acme_key):
    counting = CountingRegistry(registry)
    authenticator = Authenticator(settings, counting)
    wrong = acme_key[:-1] + ("B" if acme_key.endswith("A") else "A")
    results = await asyncio.gather(*(authenticator.authenticate_async(f"Bearer {key}")
                                     for key in [acme_key] * 20 + [wrong] * 20), return_exceptions=True)
    assert {p.tenant for p in results[:20]} == {"acme"}
    assert all(isinstance(e, AuthenticationError) and e.reason == "invalid API key" for e in results[20:])
    assert counting.verified == 2
    with pytest.raises(AuthenticationError):  # a settled refusal is not kept: the next try checks again
        await authenticator.authenticate_async(f"Bearer {wrong}")
    assert counting.verified == 3


async def test_a_flood_of_new_credentials_is_bounded_and_remembered_keys_still_pass(settings, registry, acme_key):
    counting = CountingRegistry(registry)
    authenticator = Authenticator(settings, counting, max_pending=3)
    await authenticator.authenticate_async(f"Bearer {acme_key}")
    ids = [registry.create_key("acme", ["viewer"])[0].id for _ in range(6)]
    flood = [f"Bearer m1_{key_id}_{letter * 43}" for key_id in ids for letter in "ABCDE"]  # each costs a scrypt
    results = await asyncio.gather(*(authenticator.authenticate_async(h) for h in flood), return_exceptions=True)
    reasons = [r.reason for r in results]
    busy = reasons.count("too many credentials are being checked at once; retry shortly")
    assert busy == sum(isinstance(r, AuthenticationBusy) for r in results)
    assert busy >= 20 and reasons.count("invalid API key") == 30 - busy == counting.verified - 1
    assert (await authenticator.authenticate_async(f"Bearer {acme_key}")).tenant == "acme"
    with pytest.raises(AuthenticationError, match="malformed API key"):
        await authenticator.authenticate_async("Bearer m1_nothex_x")
