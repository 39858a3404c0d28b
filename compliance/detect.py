"""Personal data and secrets recognised by value, wherever they appear in a string.

One compiled pattern holds every detector (:data:`DETECTORS`); a hit some detectors must
confirm is checked after the match (card numbers: issuer prefix, length and Luhn checksum;
IPv6: :mod:`ipaddress`). Tokens the pipeline wrote itself (pseudonyms ``pii:<hex16>``,
encrypted values ``enc:v1:...``, markers ``redacted:<name>``) are never hits, so scanning a
value twice changes nothing.

Some shapes are left out on purpose because ordinary telemetry has them: a phone number
needs a leading ``+`` or North American separators (``202-555-0147``, ``(202) 555-0147``),
never a bare run of digits (timestamps are); an SSN needs its dashes; an AWS secret key is
recognised only after a name saying so (``aws_secret_access_key=...``).

>>> [(h.detector, h.text) for h in find("mail alice@example.com from 203.0.113.9 or 2001:db8::7")]
[('email', 'alice@example.com'), ('ipv4', '203.0.113.9'), ('ipv6', '2001:db8::7')]
>>> [h.detector for h in find("card 4111 1111 1111 1111, not 4111 1111 1111 1112; ssn 123-45-6789")]
['card', 'ssn']
>>> find("host-12 eu-west-1 GET /v1/x 1700000000.5 std::vector pii:0123456789abcdef")
[]
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: Detector name -> regular expression (no capturing groups of its own). Order matters where
#: two could start at one place: the first listed wins.
PATTERNS: dict[str, str] = {
    "jwt": r"(?<![\w-])eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
    "bearer": r"(?i:\bbearer\s+)(?=[A-Za-z0-9\-._~+/]*\d)[A-Za-z0-9\-._~+/]{8,}=*",
    "private_key": r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"
                   r"(?:.*?-----END (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----|.*)",
    "cloud_key": r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b"  # AWS key ids
                 r"|(?i:aws_?secret_?access_?key)[\"'\s:=]+[A-Za-z0-9/+]{40}"  # AWS secret, when named
                 r"|\bAIza[0-9A-Za-z_-]{35}(?![\w-])"  # Google API key
                 r"|(?i:AccountKey|SharedAccessKey)=[A-Za-z0-9+/]{20,}={0,2}",  # Azure storage / service bus
    "email": r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])",
    "card": r"(?<![\w.])\d(?:[ -]?\d){12,18}(?![\w.])",
    "ssn": r"(?<![\w.-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])",
    "ipv6": r"(?<![\w:.])(?=[0-9A-Fa-f.]*:[0-9A-Fa-f.]*:)[0-9A-Fa-f:]{2,39}(?:\d{1,3}(?:\.\d{1,3}){3})?(?:%[\w.]+)?(?![\w:]|\.\d)",
    "ipv4": r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\w]|\.\d)",
    "phone": r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}(?![\w])"
             r"|(?<![\w(])(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w-])",
}

#: Every detector, in match order.
DETECTORS: tuple[str, ...] = tuple(PATTERNS)

#: What the pipeline writes in place of a value; a scan skips these.
TOKEN = r"pii:[0-9a-f]{16}|enc:v1:[A-Za-z0-9_\-:+/=.]+|redacted:[a-z_]+"

# IIN prefixes of the card networks (Visa, Mastercard, Amex, Discover, Diners, JCB, UnionPay, Maestro).
_CARD_PREFIX = re.compile(r"4|5[1-5]|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|6(?:011|5|4[4-9]|2)|3(?:0[0-5]|[68])|35|5[06-9]|6\d")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a string of digits.

    >>> luhn_ok("4111111111111111"), luhn_ok("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and _CARD_PREFIX.match(digits) is not None and luhn_ok(digits)


def _ipv6(text: str) -> bool:
    address = text.split("%", 1)[0]
    if address == "::" or not any(c in "0123456789abcdefABCDEF" for c in address):
        return False
    try:
        ipaddress.IPv6Address(address)
    except ValueError:
        return False
    return True


def _phone(text: str) -> bool:
    return 7 <= sum(c.isdigit() for c in text) <= 15


_CONFIRM: dict[str, Callable[[str], bool]] = {"card": _card, "ipv6": _ipv6, "phone": _phone}


@dataclass(frozen=True)
class Hit:
    """One recognised value: which detector, where (``start``, ``end``) and its text."""

    detector: str
    start: int
    end: int
    text: str


class Detector:
    """The detectors named in ``enabled`` (default: all), compiled into one pattern."""

    def __init__(self, enabled: tuple[str, ...] | list[str] = DETECTORS) -> None:
        unknown = set(enabled) - set(PATTERNS)
        if unknown:
            raise ValueError(f"unknown detectors {sorted(unknown)}; known: {', '.join(DETECTORS)}")
        self.enabled = tuple(name for name in DETECTORS if name in enabled)
        alternatives = [f"(?P<token>{TOKEN})"] + [f"(?P<{name}>{PATTERNS[name]})" for name in self.enabled]
        self._pattern = re.compile("|".join(alternatives), re.ASCII | re.DOTALL)

    def find(self, text: str) -> Iterator[Hit]:
        """The hits in ``text``, left to right, not overlapping."""
        pos, search = 0, self._pattern.search
        while (match := search(text, pos)) is not None:
            name, start, end = match.lastgroup, match.start(), match.end()
            if name == "token":
                pos = end
                continue
            value = match.group()
            if (confirm := _CONFIRM.get(name)) is not None and not confirm(value):  # type: ignore[arg-type]
                pos = start + 1
                continue
            yield Hit(name, start, end, value)  # type: ignore[arg-type]
            pos = end

    def replace(self, text: str, substitute: Callable[[Hit], str]) -> str:
        """``text`` with every hit replaced by ``substitute(hit)``."""
        parts, last = [], 0
        for hit in self.find(text):
            parts += (text[last:hit.start], substitute(hit))
            last = hit.end
        return "".join(parts) + text[last:] if parts else text


_ALL = Detector()


def find(text: str) -> list[Hit]:
    """The hits of every detector in ``text``."""
    return list(_ALL.find(text))
