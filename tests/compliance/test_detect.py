"""The value detectors: each class found in the shapes it comes in, and ordinary telemetry left alone."""

from __future__ import annotations

import pytest

from compliance.detect import Detector, find, luhn_ok

FOUND = [
    ("email", "mail bob.smith+tag@mail.example.co.uk now", "bob.smith+tag@mail.example.co.uk"),
    ("ipv4", "from 192.168.10.254:8080", "192.168.10.254"),
    ("ipv6", "peer [2001:db8::ff00:42:8329]:443", "2001:db8::ff00:42:8329"),
    ("ipv6", "mapped ::ffff:192.0.2.128 here", "::ffff:192.0.2.128"),
    ("ipv6", "link fe80::1ff:fe23:4567:890a%eth0", "fe80::1ff:fe23:4567:890a%eth0"),
    ("phone", "call +44 20 7946 0958", "+44 20 7946 0958"),
    ("phone", "call (415) 555-2671 today", "(415) 555-2671"),
    ("phone", "or 415.555.2671", "415.555.2671"),
    ("card", "visa 4012-8888-8888-1881 ok", "4012-8888-8888-1881"),
    ("card", "amex 378282246310005", "378282246310005"),
    ("card", "mc 5105 1051 0510 5100", "5105 1051 0510 5100"),
    ("ssn", "ssn=078-05-1120;", "078-05-1120"),
    ("bearer", "Authorization: bearer 9f8e7d6c5b4a", "bearer 9f8e7d6c5b4a"),
    ("jwt", "t=eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.abc-_9", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.abc-_9"),
    ("cloud_key", "id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("cloud_key", "ASIAY34FZKBOKMUTVV7A,", "ASIAY34FZKBOKMUTVV7A"),
    ("cloud_key", "key=AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe", "AIzaSyDaGmWKa4JsXZ-HjGw7ISLn_3namBGewQe"),
    ("cloud_key", "DefaultEndpointsProtocol=https;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsu==;",
     "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsu=="),
    ("cloud_key", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
     "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("private_key", '"-----BEGIN PRIVATE KEY-----\\nMIIEv\\n-----END PRIVATE KEY-----"',
     "-----BEGIN PRIVATE KEY-----\\nMIIEv\\n-----END PRIVATE KEY-----"),
]


@pytest.mark.parametrize(("detector", "text", "hit"), FOUND)
def test_each_class_is_found(detector: str, text: str, hit: str) -> None:
    assert [(h.detector, h.text) for h in find(text)] == [(detector, hit)]


@pytest.mark.parametrize("text", [
    "1700000000.5", '{"timeUnixNano":"1700000000123456789"}',  # timestamps: no phone, no card
    "4111111111111112",  # fails Luhn
    "1234567812345670",  # passes Luhn, no card network starts with 1
    "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",  # a hash
    "123e4567-e89b-12d3-a456-426614174000",  # a UUID
    "2026-11-29T19:25:13Z", "12:30:45", "v1.2.3.4", "std::vector", "a:b:c", "::",
    "host-12 eu-west-1 GET /v1/tenants/acme/anomalies?limit=10", "span.duration.p90_ms",
    "000-12-3456", "666-12-3456",  # not issued as SSNs
    "bearer of bad news", "AKIA-not-a-key",
    "pii:0123456789abcdef", "redacted:email", "enc:v1:0123456789abcdef0123456789abcdef:AAAA",  # the pipeline's own
])
def test_ordinary_values_and_tokens_are_left_alone(text: str) -> None:
    assert find(text) == []


def test_only_the_enabled_detectors_run_and_unknown_ones_are_refused() -> None:
    assert [h.detector for h in Detector(["email"]).find("a@b.io 10.0.0.1")] == ["email"]
    with pytest.raises(ValueError, match="unknown detectors"):
        Detector(["passport"])


def test_replace_keeps_everything_between_the_hits() -> None:
    text = "to a@b.io, from 10.0.0.1 (ok)"
    assert Detector().replace(text, lambda hit: f"<{hit.detector}>") == "to <email>, from <ipv4> (ok)"


def test_luhn() -> None:
    assert luhn_ok("79927398713") and not luhn_ok("79927398710")
