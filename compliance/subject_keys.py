"""Per-(tenant, data subject) data keys: fields that must stay recoverable for a GDPR export are
encrypted with their subject's own key, and erasing the subject destroys the key (crypto-shredding).

Keys are AES-256-GCM keys (``cryptography``), one per subject, made on the first encryption and
kept in the store's ``subject_keys`` table (schemas/ddl/110_subject_keys.sql; no API SQL may read
it), cached in memory. A token is ``enc:v1:<subject_ref>:<base64url(nonce + ciphertext)>``: the
subject reference is a keyed HMAC of (tenant, subject), never the subject, so a token names whose
key opens it without telling who that is; the tenant and reference are bound into the ciphertext
(GCM associated data), so a token moved to another tenant or subject does not decrypt.
Encryption is deterministic: the nonce is an HMAC of the plaintext under a key derived from the
subject's data key (as in SIV modes; a nonce repeats only with its plaintext), so a replayed
record gets the very token it got the first time (audit ingest dedupes replays by content).
That reveals only whether two tokens of one subject hold the same value, as a pseudonym would.

:meth:`SubjectKeys.erase` deletes the key row with a synchronous mutation, merges the table, and
waits until the engine has removed the outdated parts that held it, so the key is gone from every
file of the store; from then on :meth:`SubjectKeys.decrypt` raises :class:`KeyErased`. A lock
makes the first encryption of a subject in a process create exactly one key.

Several workers on one store (a shared ClickHouse server) each cache keys: an erasure also writes
a tombstone (``subject_key_erasures``), and before using a cached key every instance re-reads the
tombstones newer than its last look if that look is :data:`ERASURE_CHECK_SECONDS` old; the
erasure answers only after that long, so once it has answered no worker of the store encrypts or
decrypts with the key again. Nothing writes a cached key back: a subject seen after its erasure
gets a new key. Workers with stores of their own learn of an erasure from
:mod:`compliance.erasure_notices`.

>>> import tempfile
>>> from core.settings import Settings
>>> from sinks.clickhouse import Store, connect
>>> store = Store(connect(Settings(home=tempfile.mkdtemp())))
>>> _ = store.migrate()
>>> keys = SubjectKeys(store, ref_secret=bytes(32))
>>> token = keys.encrypt("acme", "alice@example.com", "Alice Liddell")
>>> token.startswith("enc:v1:" + keys.subject_ref("acme", "alice@example.com") + ":")
True
>>> keys.encrypt("acme", "alice@example.com", "Alice Liddell") == token  # deterministic
True
>>> keys.decrypt("acme", token)
'Alice Liddell'
>>> keys.erase("acme", "alice@example.com")
True
>>> keys.decrypt("acme", token)
Traceback (most recent call last):
...
compliance.subject_keys.KeyErased: no key for subject reference ... of tenant 'acme': erased (or never made)
>>> store.close()
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable
from typing import NamedTuple
import weakref
from weakref import WeakKeyDictionary

import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.settings import Settings
from sinks.clickhouse import TS_TYPE, Store
from sinks.model_state import load_state_key
from sinks.sql_guard import quote
from core.tenant_names import check_tenant

TABLE = "subject_keys"
PREFIX = "enc:v1:"
#: A token: the subject reference (32 hex digits) and base64url (no padding) of nonce + ciphertext.
TOKEN = re.compile(r"enc:v1:([0-9a-f]{32}):([A-Za-z0-9_-]+)")
NONCE_BYTES = 12
#: Longest wait for the engine to remove the parts that held an erased key (it checks every second).
ERASE_TIMEOUT_SECONDS = 30.0
ERASURES = "subject_key_erasures"
#: Longest time a cached key is used without looking for new erasure tombstones.
ERASURE_CHECK_SECONDS = 1.0
#: Tombstones are re-read from this long before the newest one seen (inserts seen late by a replica).
TOMBSTONE_OVERLAP_MS = 10_000


_SHARED: WeakKeyDictionary[Store, SubjectKeys] = WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


class KeyErased(LookupError):
    """The token's subject key does not exist: the subject was erased (or the token is foreign)."""


def derived_key(secret: bytes, purpose: str, tenant: str) -> bytes:
    """The 32-byte HMAC key of ``purpose`` (e.g. ``"subject-ref"``, ``"pseudonym"``) for ``tenant``,
    derived from the deployment's personal-data secret (``Settings.pii_key_file``).

    >>> derived_key(bytes(32), "subject-ref", "acme") != derived_key(bytes(32), "pseudonym", "acme")
    True
    """
    return hmac.new(secret, f"{purpose}\0{tenant}".encode(), hashlib.sha256).digest()


def pii_secret(settings: Settings) -> bytes:
    """The deployment's personal-data secret, created (32 random bytes, mode 0600) on first use."""
    return load_state_key(settings.pii_key_file)


class SubjectKeys:
    """Per-(tenant, subject) data keys (AES-256-GCM via ``cryptography``), kept in the store's
    ``subject_keys`` table, cached in memory; erase destroys the key (crypto-shredding).
    ``ref_secret`` keys the subject references (:func:`pii_secret` for a deployment)."""

    def __init__(self, store: Store, ref_secret: bytes) -> None:
        self.store = store
        self._ref_secret = ref_secret
        self._cache: dict[tuple[str, str], _Cipher] = {}
        self._lock = threading.Lock()
        self._erase_listeners: list[Callable[[str, str], None]] = []
        self._checked = float("-inf")  # time.monotonic() when the tombstones were last read
        self._tombstones_from = 0  # epoch ms: tombstones before this were seen
        self._seen: set[tuple[str, str, int]] = set()  # tombstones of the overlap window already acted on
        self._check_lock = threading.Lock()

    def on_erase(self, listener: Callable[[str, str], None]) -> None:
        """Call ``listener(tenant, subject_ref)`` when a subject's key is erased, here or (seen by its
        tombstone) by another instance on the store: e.g. to drop tokens remembered for the subject."""
        self._erase_listeners.append(listener)

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> SubjectKeys:
        """The one instance of ``store`` in this process: whoever encrypts (redaction) and whoever
        erases (GDPR) share its cache, so an erased key is never used again from memory."""
        with _SHARED_LOCK:
            keys = _SHARED.get(store)
            if keys is None:  # through a proxy: a strong reference would keep the store (its
                # engine) alive as long as this weak-keyed entry, that is forever
                keys = _SHARED[store] = cls(weakref.proxy(store), pii_secret(settings))
            return keys

    def subject_ref(self, tenant: str, subject: str) -> str:
        """The subject's stable reference within ``tenant``: 32 hex digits of a keyed HMAC."""
        key = derived_key(self._ref_secret, "subject-ref", check_tenant(tenant))
        return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()[:32]

    def encrypt(self, tenant: str, subject: str, plaintext: str) -> str:
        """``plaintext`` encrypted with the subject's key (made on first use): ``enc:v1:<ref>:<b64>``."""
        ref = self.subject_ref(tenant, subject)
        cipher = self._key(tenant, ref, create=True)
        clear = plaintext.encode()
        nonce = hmac.new(cipher.nonce_key, clear, hashlib.sha256).digest()[:NONCE_BYTES]
        sealed = cipher.aead.encrypt(nonce, clear, _aad(tenant, ref))
        return f"{PREFIX}{ref}:{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def decrypt(self, tenant: str, token: str) -> str:
        """The clear value of ``token``; :class:`KeyErased` if its subject's key is gone,
        ``ValueError`` if it is no token or does not authenticate (altered, another tenant's)."""
        match = TOKEN.fullmatch(token)
        if match is None:
            raise ValueError("not an enc:v1 token")
        ref, body = match.groups()
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        try:
            clear = self._key(tenant, ref, create=False).aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(tenant, ref))
        except InvalidTag:
            raise ValueError("token does not authenticate under its subject's key (altered, or another tenant's)") from None
        return clear.decode()

    def has_key(self, tenant: str, subject: str) -> bool:
        """Whether the subject has a key (it had a field encrypted and was not erased since)."""
        ref = self.subject_ref(tenant, subject)
        self._fresh()
        return (tenant, ref) in self._cache or self._stored(tenant, ref) is not None

    def _fresh(self) -> None:
        """Look for new tombstones if the last look is :data:`ERASURE_CHECK_SECONDS` old."""
        if time.monotonic() - self._checked >= ERASURE_CHECK_SECONDS:
            self.check_erasures()

    def erase(self, tenant: str, subject: str) -> bool:
        """:meth:`erase_ref` of the subject."""
        return self.erase_ref(tenant, self.subject_ref(tenant, subject))

    def erase_ref(self, tenant: str, ref: str, made_before_ms: int | None = None) -> bool:
        """Destroy the key of the subject ``ref`` (only if made at or before ``made_before_ms``,
        epoch ms, when given: a notice of an old erasure leaves a key made since for new data):
        write its tombstone, delete its row (mutations_sync), merge the table (OPTIMIZE FINAL),
        wait until no outdated part that held it is left on disk, and until every instance on
        the store has looked at the tombstones since (:data:`ERASURE_CHECK_SECONDS`). True if
        there was such a key. ``TimeoutError`` if the engine kept an outdated part longer than
        :data:`ERASE_TIMEOUT_SECONDS` (the key is deleted; its old part's file is not yet)."""
        tenant = check_tenant(tenant)
        made = "" if made_before_ms is None else f" AND created_at <= fromUnixTimestamp64Milli({int(made_before_ms)})"
        with self._lock:
            self._cache.pop((tenant, ref), None)  # read again from the store, if it stays
            existed = self.store.query(f"SELECT count() FROM {TABLE} WHERE tenant = {{t:String}} AND subject_ref = "
                                       f"{{r:String}}{made}", {"t": tenant, "r": ref}).rows[0][0] > 0
            self.store.command(f"INSERT INTO {ERASURES} (tenant, subject_ref) VALUES ({quote(tenant)}, {quote(ref)})")
            told = time.monotonic()
            at = self.store.query(f"SELECT toUnixTimestamp64Milli(max(erased_at)) FROM {ERASURES} WHERE tenant = {{t:String}} "
                                  "AND subject_ref = {r:String}", {"t": tenant, "r": ref}).rows[0][0]
            self._seen.add((tenant, ref, int(at)))  # told below: not again when the tombstones are read
            self.store.command(f"ALTER TABLE {TABLE} DELETE WHERE tenant = {quote(tenant)} AND subject_ref = {quote(ref)}"
                               f"{made} SETTINGS mutations_sync = 2")
            self.store.command(f"OPTIMIZE TABLE {TABLE} FINAL")
        deadline = time.monotonic() + ERASE_TIMEOUT_SECONDS
        while self.outdated_parts():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the engine still keeps outdated parts of {TABLE} after {ERASE_TIMEOUT_SECONDS:.0f} s")
            time.sleep(0.2)
        for listener in self._erase_listeners:
            listener(tenant, ref)
        time.sleep(max(0.0, told + ERASURE_CHECK_SECONDS - time.monotonic()))
        return existed

    def check_erasures(self) -> list[tuple[str, str]]:
        """Read the tombstones written since the last look (by any instance on the store), drop
        their keys from the cache and tell the listeners; returns their ``(tenant, ref)``."""
        with self._check_lock:
            return self._check_erasures()

    def _check_erasures(self) -> list[tuple[str, str]]:
        started = time.monotonic()
        rows = self.store.query(f"SELECT tenant, subject_ref, toUnixTimestamp64Milli(erased_at) FROM {ERASURES} "
                                "WHERE erased_at >= fromUnixTimestamp64Milli({since:Int64}) ORDER BY erased_at",
                                {"since": self._tombstones_from - TOMBSTONE_OVERLAP_MS}).rows
        new = [(t, r, int(ms)) for t, r, ms in rows if (t, r, int(ms)) not in self._seen]
        with self._lock:
            for tenant, ref, _ in new:
                self._cache.pop((tenant, ref), None)
        if rows:
            self._tombstones_from = max(self._tombstones_from, int(rows[-1][2]))
        self._seen = {row for row in self._seen | set(new) if row[2] >= self._tombstones_from - TOMBSTONE_OVERLAP_MS}
        for tenant, ref, _ in new:
            for listener in self._erase_listeners:
                listener(tenant, ref)
        self._checked = started
        return [(tenant, ref) for tenant, ref, _ in new]

    def outdated_parts(self) -> int:
        """Parts of the key table the engine replaced but has not removed from disk yet."""
        return self.store.query(
            "SELECT count() FROM system.parts WHERE database = currentDatabase() AND table = {t:String} AND NOT active",
            {"t": TABLE}).rows[0][0]

    def _key(self, tenant: str, ref: str, create: bool) -> _Cipher:
        tenant = check_tenant(tenant)
        self._fresh()
        if (cipher := self._cache.get((tenant, ref))) is not None:
            return cipher
        with self._lock:
            if (cipher := self._cache.get((tenant, ref))) is None:
                key = self._stored(tenant, ref)
                if key is None:
                    if not create:
                        raise KeyErased(f"no key for subject reference {ref} of tenant {tenant!r}: erased (or never made)")
                    key = AESGCM.generate_key(bit_length=256)
                    self.store.insert(TABLE, {"tenant": [tenant], "subject_ref": [ref], "key": [key.hex()],
                                              "created_at": pa.array([int(time.time() * 1000)], TS_TYPE)})
                    if not self.store.embedded:  # workers sharing a server: the first key stored wins for all
                        key = self._stored(tenant, ref) or key
                cipher = self._cache[(tenant, ref)] = _Cipher(AESGCM(key), hmac.new(key, b"nonce", hashlib.sha256).digest())
            return cipher

    def _stored(self, tenant: str, ref: str) -> bytes | None:
        rows = self.store.query(f"SELECT key FROM {TABLE} WHERE tenant = {{t:String}} AND subject_ref = {{r:String}} "
                                "ORDER BY created_at, key LIMIT 1", {"t": tenant, "r": ref}).rows
        return bytes.fromhex(rows[0][0]) if rows else None


class _Cipher(NamedTuple):
    """A subject's AEAD and the key its nonces are derived with (both from its data key)."""

    aead: AESGCM
    nonce_key: bytes


def _aad(tenant: str, ref: str) -> bytes:
    return f"{tenant}\0{ref}".encode()
