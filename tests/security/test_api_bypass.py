"""Bypass search: generated API requests that try to reach another tenant's rows or the host.

acme's callers (and callers without valid credentials) send what hypothesis makes of encoded
and mangled path tenants, SQL fragments in query parameters, SQL through the tenant query
route, forged headers, tampered credentials, oversized and malformed bodies. Every attempt must
be refused (4xx, never 5xx), or answered with acme's rows only: no string of globex's rows
(every one names globex, see tests/api_world.py) and nothing of the host's files.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import RSAAlgorithm

from compliance.pseudonym import Pseudonymiser
from tests.api_world import TRACE_IDS, Reply, World, make_world

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
#: What an answer must never hold: the other tenant's rows, or lines of a host file.
FORBIDDEN = ("globex", "root:x:0:0", "/bin/bash", "/sbin/nologin")
RESOURCES = ("anomalies", "series", "forecasts", "recommendations", "costs", "bottlenecks", "traces",
             f"traces/{TRACE_IDS['globex']}", f"points?series={urllib.parse.quote('globex|eu|globex-api|rps|host=globex-h')}",
             "keys", "")
ROLES = ("viewer", "analyst", "tenant-admin")


ISSUER, AUDIENCE = "https://issuer.example", "m1-api"
SIGNING_KEY, STRANGER_KEY = (rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The API world, with OIDC on: the issuer's JWKS (one RSA key, kid "k1") in a file."""
    home = tmp_path_factory.mktemp("bypass")
    jwk = {**RSAAlgorithm.to_jwk(SIGNING_KEY.public_key(), as_dict=True), "kid": "k1", "alg": "RS256", "use": "sig"}
    (home / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    world = make_world(home, oidc_issuer=ISSUER, oidc_audience=AUDIENCE, oidc_jwks_path=home / "jwks.json")
    yield world
    world.close()


def token(key: Any = SIGNING_KEY, alg: str = "RS256", kid: str = "k1", **claims: Any) -> str:
    """A JWT of the issuer for acme's viewer ``alice`` (``claims`` change it)."""
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": int(time.time()) + 600, "m1_tenant": "acme",
            "m1_roles": ["viewer"], **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def assert_safe(reply: Reply, what: object) -> None:
    """Refused, or an answer without another tenant's data or the host's files."""
    assert reply.status < 500, (what, reply.status, reply.text[:300])
    if 200 <= reply.status < 300:
        for forbidden in FORBIDDEN:
            assert forbidden not in reply.text, (what, forbidden, reply.text[:300])


def encode_some(text: str, draw: st.DrawFn) -> str:
    """``text`` with some characters percent-encoded (upper or lower hex); characters HTTP does
    not allow raw in a request line are always encoded."""
    out = []
    for ch in text:
        raw_ok = ch.isascii() and (ch.isalnum() or ch in "-._~/%;,?&=:#*+!$'()@")
        if raw_ok and not draw(st.booleans()):
            out.append(ch)
            continue
        encoded = "".join(f"%{b:02X}" for b in ch.encode())
        out.append(encoded.lower() if draw(st.booleans()) else encoded)
    return "".join(out)


TENANT_SPELLINGS = st.sampled_from([
    "globex", "GLOBEX", "Globex", "globex/", "globex//", "globex%2F", "globex%2f", "acme/../globex", "acme/%2e%2e/globex",
    "acme%2F..%2Fglobex", "acme/./../globex", "%2e%2e/globex", "..%2fglobex", "globex%00", "acme%00globex", "globex;acme",
    "acme,globex", "globex%20", " globex", "ɡlobex", "ｇｌｏｂｅｘ", "globe\u0078", "glob\u0435x", "acme/../../v1/tenants/globex",
    "globex?x=acme", "globex#acme", "acme%23globex", "*", "%2a", "platform", "../platform", "acme%2Fglobex", "acme/globex",
])


@st.composite
def tenant_paths(draw: st.DrawFn) -> str:
    tenant = draw(st.one_of(TENANT_SPELLINGS, st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)))
    prefix = draw(st.sampled_from(["/v1/tenants/", "//v1/tenants/", "/v1//tenants/", "/v1/tenants//", "/V1/tenants/",
                                   "/v1/./tenants/", "/v1/tenants/acme/../"]))
    resource = draw(st.sampled_from(RESOURCES))
    suffix = draw(st.sampled_from(["", "/", "//", "%2F", "/."]))
    return prefix + encode_some(tenant, draw) + ("/" + resource if resource else "") + suffix


@given(path=tenant_paths(), role=st.sampled_from(ROLES))
@EXAMPLES
def test_path_tenant_spellings_never_reach_another_tenant(world: World, path: str, role: str) -> None:
    assert_safe(world.call("GET", path, world.key(role)), path)


SQL_FRAGMENTS = st.sampled_from([
    "' OR tenant = 'globex", "acme' OR 1=1 --", "x') UNION ALL SELECT * FROM anomalies --", "{tenant:String}",
    "globex", "globex|eu|globex-api|rps|host=globex-h", "1767225600 OR 1=1", "now() - 1", "\\' OR 1 --", "%27 OR %271",
    "critical' OR severity != '", "1; DROP TABLE anomalies", "' UNION SELECT file('/etc/passwd') --", "0x41", "1e3",
    "2026-01-01T00:00:00Z' OR '1", "-1", "10001", "1 OR 1", "999999999999999999999", "", " ", "\x00",
])
PARAMS = st.sampled_from(["series", "severity", "since", "until", "service", "metric", "limit", "period", "kind",
                          "tenant", "entry_service", "decision", "subject"])


@given(resource=st.sampled_from(["anomalies", "series", "points", "forecasts", "recommendations", "costs",
                                 "bottlenecks", "traces"]),
       params=st.lists(st.tuples(PARAMS, st.one_of(SQL_FRAGMENTS, st.text(max_size=40))), min_size=1, max_size=3),
       role=st.sampled_from(ROLES))
@EXAMPLES
def test_sql_fragments_in_parameters_never_reach_another_tenant(world: World, resource: str, params: list, role: str) -> None:
    path = f"/v1/tenants/acme/{resource}?" + urllib.parse.urlencode(params)
    assert_safe(world.call("GET", path, world.key(role)), path)


TABLES = st.sampled_from(["anomalies", "metric_points", "forecasts", "cost_projections", "recommendations", "bottlenecks",
                          "otel_traces", "access_log", "dead_letters", "model_state", "m1.anomalies", "`anomalies`",
                          "system.tables", "system.users", "information_schema.tables", "default.anomalies"])
SOURCES = st.one_of(TABLES, st.sampled_from([
    "file('/etc/passwd')", "FILE('/etc/passwd', 'LineAsString')", "`file`('/etc/passwd')", "fIlE ( '/etc/passwd' )",
    "url('http://127.0.0.1:9/')", "remote('127.0.0.1', m1.anomalies)", "merge('m1', '.*')", "numbers(3)",
    "executable('id', 'TSV', 'x String')", "(SELECT * FROM anomalies)", "s3('http://127.0.0.1:9/x')",
    "clusterAllReplicas('default', m1.anomalies)", "view(SELECT * FROM anomalies)", "input('x String')",
]))
SELECTS = st.sampled_from(["*", "tenant", "count()", "file('/etc/passwd')", "currentUser()", "getSetting('readonly')",
                           "groupArray(tenant)", "(SELECT groupArray(tenant) FROM anomalies)"])
SUFFIXES = st.sampled_from(["", " WHERE tenant = 'globex'", " WHERE 1 OR tenant = 'globex'",
                            " SETTINGS additional_table_filters = {}", " SETTINGS readonly = 0",
                            " UNION ALL SELECT * FROM anomalies", " FORMAT JSON", " INTO OUTFILE '/tmp/x'",
                            "; SELECT * FROM anomalies", " -- ", " /* */", " FINAL"])


@given(select=SELECTS, source=SOURCES, suffix=SUFFIXES, upper=st.booleans(),
       path=st.sampled_from(["/v1/tenants/acme/query", "/v1/tenants/globex/query", "/v1/query"]))
@EXAMPLES
def test_tenant_sql_never_reaches_another_tenant_or_the_host(world: World, select: str, source: str, suffix: str,
                                                             upper: bool, path: str) -> None:
    sql = f"SELECT {select} FROM {source}{suffix}"
    sql = sql.upper() if upper else sql
    reply = world.call("POST", path, world.key("analyst"), {"sql": sql})
    assert_safe(reply, sql)
    if path != "/v1/tenants/acme/query":
        assert reply.status == 403, (path, reply.text)


FORGED = st.dictionaries(
    st.sampled_from(["X-Tenant", "X-M1-Tenant", "X-Forwarded-For", "X-Real-IP", "Forwarded", "X-Original-URL",
                     "X-Rewrite-URL", "X-Forwarded-Host", "X-Forwarded-Prefix", "X-Roles", "X-User", "X-HTTP-Method-Override"]),
    st.sampled_from(["globex", "platform", "127.0.0.1", "10.0.0.1", "for=10.0.0.1", "/v1/tenants/globex/anomalies",
                     "platform-admin", "DELETE", "acme"]),
    min_size=1, max_size=4)


@given(headers=FORGED, with_key=st.booleans(), resource=st.sampled_from(RESOURCES[:6]))
@EXAMPLES
def test_forged_headers_change_nothing(world: World, headers: dict[str, str], with_key: bool, resource: str) -> None:
    key = world.key("viewer") if with_key else None
    reply = world.call("GET", f"/v1/tenants/acme/{resource}", key, headers=headers)
    assert_safe(reply, headers)
    assert reply.status == (200 if with_key else 401), (headers, reply.text[:200])
    if with_key:
        assert world.call("GET", "/v1/whoami", key, headers=headers).json["tenant"] == "acme"


def test_the_access_log_records_the_peer_not_a_forwarded_address(world: World) -> None:
    world.call("GET", "/v1/tenants/acme/anomalies?limit=11", world.key("viewer"), headers={"X-Forwarded-For": "10.9.9.9"})
    world.flush_access_log()
    rows = world.call("GET", "/v1/tenants/acme/audit?limit=1000", world.key("auditor")).json["items"]
    peer = Pseudonymiser.from_settings(world.settings)("acme", "127.0.0.1")  # stored as its pseudonym (compliance)
    assert {r["remote"] for r in rows if r["path"].endswith("limit=11")} == {peer}


#: Header characters HTTP allows (others are refused by the HTTP parser before the gate: 400).
PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


def mutations(world: World) -> st.SearchStrategy[str]:
    """Authorization values made from real keys: truncated, a character changed, inserted or
    dropped, one key's id with another's secret, other schemes, trailing junk."""
    acme, globex = world.key("tenant-admin"), world.key("tenant-admin", "globex")
    platform = world.key("platform-admin")

    @st.composite
    def build(draw: st.DrawFn) -> str:
        key = draw(st.sampled_from([acme, globex, platform]))
        kind = draw(st.sampled_from(["truncate", "replace", "insert", "drop", "swap", "scheme", "junk"]))
        at = draw(st.integers(0, len(key) - 1))
        if kind == "truncate":
            return "Bearer " + key[:at]
        if kind == "replace":
            ch = draw(PRINTABLE.filter(lambda c: c != key[at]))
            return "Bearer " + key[:at] + ch + key[at + 1:]
        if kind == "insert":  # spaces before the credential are separators (RFC 7235: 1*SP), not tampering
            return "Bearer " + key[:at] + draw(PRINTABLE if at else PRINTABLE.filter(lambda c: c != " ")) + key[at:]
        if kind == "drop":
            return "Bearer " + key[:at] + key[at + 1:]
        if kind == "swap":  # one key's id with another key's secret
            first, second = draw(st.permutations([acme, globex, platform]))[:2]
            return "Bearer " + first[:16] + second[16:]
        if kind == "scheme":
            return draw(st.sampled_from(["Basic ", "Token ", "Bearer", "Bearer\t", "", "Bearer Bearer "])) + key[:-1]
        return "Bearer " + key + draw(st.text(PRINTABLE, min_size=1, max_size=8).filter(str.strip))  # trailing spaces: HTTP's OWS

    return build()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def tampered_tokens(draw: st.DrawFn) -> str:
    """JWTs made from a valid one of acme: claims changed after signing, other algorithms (none,
    HS256 keyed with the issuer's public key), a stranger's key under the issuer's kid, expired,
    another issuer or audience, a platform-admin claim, a damaged signature."""
    valid = token()
    header, payload, signature = valid.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    public_pem = SIGNING_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo)
    kind = draw(st.sampled_from(["claims", "none", "hs256", "stranger", "expired", "issuer", "audience", "platform",
                                 "signature", "kid"]))
    if kind == "claims":
        changed = {**claims, draw(st.sampled_from(["m1_tenant", "m1_roles", "sub"])):
                   draw(st.sampled_from(["globex", ["platform-admin"], "platform", ["tenant-admin"]]))}
        return f"{header}.{b64(json.dumps(changed).encode())}.{signature}"
    if kind == "none":
        return f"{b64(json.dumps({'alg': 'none', 'kid': 'k1'}).encode())}.{payload}."
    if kind == "hs256":  # key confusion: the public key as an HMAC secret
        head = b64(json.dumps({"alg": "HS256", "kid": "k1", "typ": "JWT"}).encode())
        mac = hmac.new(public_pem, f"{head}.{payload}".encode(), hashlib.sha256).digest()
        return f"{head}.{payload}.{b64(mac)}"
    if kind == "stranger":
        return token(STRANGER_KEY, m1_tenant=draw(st.sampled_from(["acme", "globex"])))
    if kind == "expired":
        return token(exp=int(time.time()) - 3600)
    if kind == "issuer":
        return token(iss="https://evil.example")
    if kind == "audience":
        return token(aud="other")
    if kind == "platform":  # signed by the issuer, but platform-admin only exists in the platform tenant
        return token(m1_roles=["platform-admin"])
    if kind == "kid":
        return token(kid=draw(st.sampled_from(["k2", "", "../k1", "k1 "])))
    at = draw(st.integers(0, len(signature) - 1))
    flipped = "A" if signature[at] != "A" else "B"
    return f"{header}.{payload}.{draw(st.sampled_from([signature[:at], signature[:at] + flipped + signature[at + 1:]]))}"


def test_a_valid_token_reaches_its_own_tenant_only(world: World) -> None:
    assert world.call("GET", "/v1/whoami", headers={"Authorization": f"Bearer {token()}"}).json["via"] == "oidc"
    own = world.call("GET", "/v1/tenants/acme/anomalies", headers={"Authorization": f"Bearer {token()}"})
    assert own.status == 200 and own.json["items"] and "globex" not in own.text
    assert world.call("GET", "/v1/tenants/globex/anomalies", headers={"Authorization": f"Bearer {token()}"}).status == 403


def test_tampered_credentials_are_refused(world: World) -> None:
    @given(authorization=mutations(world), resource=st.sampled_from(RESOURCES[:4]))
    @settings(max_examples=150, deadline=None)
    def attempt(authorization: str, resource: str) -> None:
        reply = world.call("GET", f"/v1/tenants/acme/{resource}", headers={"Authorization": authorization})
        assert reply.status == 401, (authorization, reply.status, reply.text[:200])
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")

    attempt()


@pytest.mark.parametrize("size", [1, 4, 16])
def test_oversized_bodies_are_413(world: World, size: int) -> None:
    big = b'{"sql": "' + b"x" * (size * world.settings.api_max_body_bytes) + b'"}'
    assert world.call("POST", "/v1/tenants/acme/query", world.key("analyst"), raw_body=big).status == 413


@given(junk=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)),
       path=st.sampled_from(["/v1/tenants/acme/query", "/v1/tenants/acme/keys", "/v1/tenants/acme/bottlenecks"]))
@EXAMPLES
def test_malformed_bodies_are_400(world: World, junk: bytes, path: str) -> None:
    reply = world.call("POST", path, world.key("tenant-admin"), raw_body=junk)
    assert_safe(reply, junk)
    try:  # an empty body stands for {} (all of the bottleneck run's fields are optional)
        valid = junk == b"" or isinstance(json.loads(junk), dict)
    except ValueError:
        valid = False
    if not valid:
        assert reply.status == 400, (junk, reply.text)


@given(credential=tampered_tokens(), resource=st.sampled_from(RESOURCES[:4]))
@EXAMPLES
def test_tampered_tokens_are_refused(world: World, credential: str, resource: str) -> None:
    reply = world.call("GET", f"/v1/tenants/acme/{resource}", headers={"Authorization": f"Bearer {credential}"})
    assert reply.status == 401, (credential, reply.status, reply.text[:200])
