"""The registry file: keys kept only as scrypt hashes, shown once, shared safely between processes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tenancy import keys
from tenancy.authn import AuthenticationError, Authenticator
from tenancy.registry import NotFound, Registry, RegistryError


def run_registry(path: Path, code: str) -> str:
    """Run ``code`` with ``registry`` open on ``path`` in another Python process; its stdout."""
    script = f"from tenancy.registry import Registry\nregistry = Registry({str(path)!r})\n{code}"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_key_made_by_another_process_authenticates_here_and_its_revocation_there_refuses_it_here(settings):
    path = settings.registry_file
    raw = run_registry(path, "registry.create_tenant('acme')\n"
                             "print(registry.create_key('acme', ['analyst'], 'grafana', 'ops')[1])")
    authenticator = Authenticator(settings, Registry(path))
    principal = authenticator.authenticate(f"Bearer {raw}")
    assert (principal.tenant, principal.roles, principal.via) == ("acme", {"analyst"}, "api_key")
    assert authenticator.cached(raw) == principal  # the next request needs no scrypt

    run_registry(path, f"registry.revoke_key({keys.parse_key(raw)!r})")
    assert authenticator.cached(raw) is None
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticator.authenticate(f"Bearer {raw}")


def test_disabling_a_tenant_in_another_process_refuses_its_remembered_keys_at_once(settings, registry):
    registry.create_tenant("acme")
    raw = registry.create_key("acme", ["viewer"])[1]
    authenticator = Authenticator(settings, registry)
    authenticator.authenticate(f"Bearer {raw}")
    run_registry(settings.registry_file, "registry.disable_tenant('acme')")
    with pytest.raises(AuthenticationError, match="tenant 'acme' is disabled"):
        authenticator.authenticate(f"Bearer {raw}")
    run_registry(settings.registry_file, "registry.enable_tenant('acme')")
    assert authenticator.authenticate(f"Bearer {raw}").tenant == "acme"


def test_processes_writing_at_once_lose_nothing(settings, registry):
    registry.create_tenant("acme")
    code = ("import sys\nfor i in range(15):\n"
            "    registry.create_key('acme', ['viewer'], f'{sys.argv[1]}-{i}')\n"
            "    registry.revoke_key(registry.create_key('acme', ['viewer'])[0].id)\n")
    writers = [subprocess.Popen([sys.executable, "-c",
                                 f"from tenancy.registry import Registry\nregistry = Registry({str(settings.registry_file)!r})\n{code}",
                                 str(n)], stderr=subprocess.PIPE, text=True) for n in range(3)]
    for n in range(15):  # and this process reads meanwhile
        registry.keys("acme"), registry.version()
    for writer in writers:
        assert writer.wait(timeout=120) == 0, writer.stderr.read()
    assert len(registry.keys("acme")) == 3 * 30
    assert registry.version() == 3 * 15


def test_only_a_scrypt_hash_of_the_key_is_stored(registry):
    registry.create_tenant("acme")
    info, raw = registry.create_key("acme", ["viewer"], "grafana")
    secret = raw.split("_", 2)[2]
    registry.close()
    stored = b"".join(p.read_bytes() for p in registry.path.parent.glob(registry.path.name + "*"))
    assert info.id.encode() in stored  # the file holds the key's row ...
    for leak in (raw, secret, hashlib.sha256(raw.encode()).hexdigest(), hashlib.sha256(secret.encode()).hexdigest()):
        assert leak.encode() not in stored  # ... but neither the key nor a fast hash of it
    for leak in (hashlib.sha256(raw.encode()).digest(), hashlib.sha256(secret.encode()).digest()):
        assert leak not in stored
    import sqlite3
    salt, digest, n, r, p = sqlite3.connect(registry.path).execute(
        "SELECT salt, hash, scrypt_n, scrypt_r, scrypt_p FROM api_keys").fetchone()
    assert (n, r, p) == (2**14, 8, 1) and len(salt) == 16
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
    assert Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(raw.encode()) == digest


def test_a_key_is_shown_once_listings_never_hold_it(registry):
    registry.create_tenant("acme")
    info, raw = registry.create_key("acme", ["viewer"], "grafana", "ops")
    listed = registry.keys("acme")
    assert listed == [info] == [registry.key(info.id)]
    assert raw not in json.dumps([k.as_dict() for k in listed] + [registry.tenant("acme").as_dict()])
    assert raw.split("_", 2)[2] not in repr(listed)
    assert registry.verify_key(raw) == info
    assert registry.verify_key(raw[:-1] + ("B" if raw.endswith("A") else "A")) is None
    other_id = keys.new_key()[0]
    assert registry.verify_key(raw.replace(info.id, other_id)) is None


def test_roles_are_validated(registry):
    registry.create_tenant("acme")
    with pytest.raises(ValueError, match="unknown role 'superuser'"):
        registry.create_key("acme", ["viewer", "superuser"])
    with pytest.raises(RegistryError, match="at least one role"):
        registry.create_key("acme", [])
    with pytest.raises(RegistryError, match="platform-admin keys belong to the 'platform' tenant"):
        registry.create_key("acme", ["platform-admin"])
    assert registry.create_key("platform", ["platform-admin"])[0].roles == {"platform-admin"}
    with pytest.raises(RegistryError, match="monitoring keys belong to the 'platform' tenant"):
        registry.create_key("acme", ["viewer", "monitoring"])  # a scrape key reads every tenant's topics' lag
    assert registry.create_key("platform", ["monitoring"])[0].roles == {"monitoring"}
    info = registry.create_key("acme", ["viewer"])[0]
    with pytest.raises(RegistryError, match="platform-admin"):
        registry.set_key_roles(info.id, ["viewer", "platform-admin"])
    version = registry.version()
    assert registry.set_key_roles(info.id, ["auditor"]).roles == {"auditor"}
    assert registry.version() == version + 1


def test_tenants_names_quotas_and_the_reserved_platform(registry):
    assert [t.name for t in registry.tenants()] == ["platform"]
    with pytest.raises(ValueError, match="invalid tenant name"):
        registry.create_tenant("Acme")
    with pytest.raises(ValueError, match="invalid tenant name"):
        registry.create_tenant("a" * 33)
    with pytest.raises(RegistryError, match="exists"):
        registry.create_tenant("platform")
    with pytest.raises(RegistryError, match="unknown quota"):
        registry.create_tenant("acme", {"cpu": 1})
    for bad in (0, -1, float("nan"), float("inf"), True, "10"):
        with pytest.raises(RegistryError, match="positive finite number"):
            registry.create_tenant("acme", {"max_series": bad})
    acme = registry.create_tenant("acme", {"max_series": 100, "requests_per_second": 2.5})
    assert registry.tenant("acme") == acme and acme.quotas == {"max_series": 100, "requests_per_second": 2.5}
    with pytest.raises(NotFound):
        registry.tenant("globex")
    with pytest.raises(NotFound):
        registry.create_key("globex", ["viewer"])
    with pytest.raises(RegistryError, match="cannot be disabled"):
        registry.disable_tenant("platform")
    assert registry.disable_tenant("acme").disabled and not registry.enable_tenant("acme").disabled


def test_every_access_change_bumps_the_version_and_nothing_else_does(registry):
    version = registry.version()
    registry.create_tenant("acme")
    info = registry.create_key("acme", ["viewer"])[0]
    assert registry.version() == version
    for change in (lambda: registry.revoke_key(info.id), lambda: registry.disable_tenant("acme"),
                   lambda: registry.enable_tenant("acme"), lambda: registry.set_key_roles(info.id, ["analyst"])):
        change()
        version, before = registry.version(), version
        assert version == before + 1


def test_the_file_is_readable_by_its_owner_only(registry):
    assert registry.path.stat().st_mode & 0o077 == 0


def test_a_second_registry_in_this_process_does_not_leave_the_first_on_a_stale_file(settings):
    path = settings.registry_file
    first = Registry(path)
    Registry(path).close()  # e.g. the API and the quotas of one worker each open it
    for n in range(3):  # this process and others take turns; the others close (the CLI does)
        first.create_tenant(f"mine{n}")
        raw = run_registry(path, f"registry.create_tenant('t{n}')\nprint(registry.create_key('t{n}', ['viewer'])[1])\n"
                                 "registry.close()  # believing itself the last connection, it would delete the WAL")
        assert first.verify_key(raw) is not None
    names = {t.name for t in first.tenants()}
    assert names == {"platform", "mine0", "mine1", "mine2", "t0", "t1", "t2"}
    assert run_registry(path, "print(sorted(t.name for t in registry.tenants()))") == str(sorted(names))
