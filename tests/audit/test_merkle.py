"""RFC 9162 trees, inclusion and consistency proofs: known vectors and properties."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings, strategies as st

from audit.merkle import (Frontier, consistency_proof, inclusion_proof, leaf_hash, tree_hash, verify_consistency,
                          verify_inclusion)


def H(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


#: The leaves and roots of the RFC 6962/9162 reference test data (Certificate Transparency's and
#: transparency-dev/merkle's test vectors).
LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                     "606162636465666768696a6b6c6d6e6f")]
ROOTS = ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
         "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
         "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
         "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
         "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
         "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
         "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
         "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]


def test_reference_roots() -> None:
    leaves = [leaf_hash(d) for d in LEAVES]
    assert [tree_hash(leaves[:n]).hex() for n in range(1, 9)] == ROOTS


def test_a_three_leaf_tree_built_by_hand() -> None:
    l0, l1, l2 = (H(b"\x00", d) for d in (b"a", b"b", b"c"))
    leaves = [l0, l1, l2]
    n01 = H(b"\x01", l0, l1)
    root = H(b"\x01", n01, l2)  # k = 2: the left subtree holds two leaves
    assert tree_hash(leaves) == root
    assert inclusion_proof(leaves, 0) == [l1, l2]
    assert inclusion_proof(leaves, 2) == [n01]
    assert consistency_proof(leaves, 2) == [l2]        # SUBPROOF(2, D[0:2], true) = [] + MTH(D[2:3])
    assert consistency_proof(leaves, 1) == [l1, l2]
    assert verify_consistency(2, 3, n01, root, [l2]) and verify_consistency(1, 3, l0, root, [l1, l2])
    assert not verify_consistency(2, 3, n01, root, [])  # §2.1.4.2 step 1: an empty path fails


def test_five_leaves_by_hand() -> None:
    ls = [H(b"\x00", bytes([i])) for i in range(5)]
    left = H(b"\x01", H(b"\x01", ls[0], ls[1]), H(b"\x01", ls[2], ls[3]))
    assert tree_hash(ls) == H(b"\x01", left, ls[4])
    assert inclusion_proof(ls, 4) == [left]
    assert inclusion_proof(ls, 2) == [ls[3], H(b"\x01", ls[0], ls[1]), ls[4]]
    assert consistency_proof(ls, 4) == [ls[4]]
    assert consistency_proof(ls, 3) == [ls[2], ls[3], H(b"\x01", ls[0], ls[1]), ls[4]]


def test_the_empty_tree_and_bad_sizes() -> None:
    assert tree_hash([]) == H()
    assert not verify_inclusion(1, 1, leaf_hash(b""), [], leaf_hash(b""))
    assert not verify_consistency(0, 3, H(), H(), [H()])


sizes = st.integers(min_value=1, max_value=70)


@settings(max_examples=150, deadline=None)
@given(sizes, st.data())
def test_every_inclusion_proof_verifies_and_no_other_leaf_does(n: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    root = tree_hash(leaves)
    frontier = Frontier()
    frontier.extend(leaves)
    assert frontier.root() == root
    for i in range(n):
        assert verify_inclusion(i, n, leaves[i], inclusion_proof(leaves, i), root)
    i = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(leaves, i)
    other = data.draw(st.integers(0, n - 1).filter(lambda j: j != i)) if n > 1 else None
    if other is not None:
        assert not verify_inclusion(i, n, leaves[other], proof, root)  # another leaf at i
        assert not verify_inclusion(other, n, leaves[i], proof, root)  # the leaf at another index
    assert not verify_inclusion(i, n, leaf_hash(b"changed"), proof, root)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        assert not verify_inclusion(i, n, leaves[i], proof[:k] + [H(b"x")] + proof[k + 1:], root)
        assert not verify_inclusion(i, n, leaves[i], proof[:-1], root)


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=40))
def test_consistency_between_every_pair_of_sizes(n: int) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    roots = [tree_hash(leaves[:m]) for m in range(n + 1)]
    for m in range(1, n + 1):
        proof = consistency_proof(leaves, m)
        assert verify_consistency(m, n, roots[m], roots[n], proof)
        assert not verify_consistency(m, n, H(b"changed old root"), roots[n], proof)
        assert not verify_consistency(m, n, roots[m], H(b"changed new root"), proof)
        if m < n:
            changed = leaves[:m - 1] + [leaf_hash(b"changed")] + leaves[m:]  # the old tree rewritten
            assert not verify_consistency(m, n, tree_hash(changed[:m]), roots[n], proof)
