"""The semantic id space of a live index: the docid trie as documents come and go.

Semantic id of an added document (``x`` its vector, centroids as stored in ``ids/centroids.npy``
and kept current as documents come and go):

1. From the root, while the node's children are internal nodes, move to the child whose centroid
   is nearest to ``x`` (squared L2). This ends at a node whose children are leaves: a leaf group.
2. If the leaf group has a free digit, the document takes the smallest one. Digits of deleted
   documents are not reused while the process runs, so an id the model learned is never handed to
   another document.
3. If the group is full (``k`` digits used), look for room ever higher up: among the nodes below
   the group's parent, then below its grandparent, and so on, take the node nearest to ``x`` that
   is either a leaf group with a free digit (id: its path + the digit) or a node of internal
   children with a free digit (id: its path + the digit + 0, a new group of one). Ids never grow
   beyond the longest id the trie had when it was built, so the model can learn them.
4. If the whole trie is full, the addition is refused (rebuild the ids with a larger ``k``).

Beam search walks :attr:`IdSpace.decode_child`: the built trie's nodes only (documents the model was
trained on), deleted documents pruned; ``version`` counts the changes to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nci.retrieval.errors import IdSpaceFull


class IdSpace:
    """The docid trie with room to grow, its node centroids and document counts.

    It gives added documents their semantic ids (:meth:`assign`, the rule in the module doc).

    Node numbering continues the built trie's; nodes are never reused. A deleted document's leaf
    stays allocated (dead) so its digit is not handed out again. ``decode_child`` is the trie that
    beam search walks: built nodes only, documents the model was trained on, deletions pruned.
    """

    def __init__(self, sem: Any, depth_limit: int | None = None):
        trie = sem.trie
        self.k = int(trie.k)
        n = trie.n_nodes
        self.n_built = n
        self.n = n
        cap = max(16, n * 2)
        self.child = np.full((cap, self.k), -1, dtype=np.int64)
        self.child[:n] = trie.child
        self.parent = np.full(cap, -1, dtype=np.int64)
        self.parent[:n] = trie.parent
        self.digit = np.full(cap, -1, dtype=np.int64)
        self.digit[:n] = trie.digit
        self.depth = np.zeros(cap, dtype=np.int64)
        self.depth[:n] = trie.depth
        self.is_leaf = np.zeros(cap, dtype=bool)
        self.is_leaf[:n] = np.asarray(trie.doc) >= 0
        centroids = np.asarray(sem.centroids, dtype=np.float32)
        self.centroids = np.zeros((cap, centroids.shape[1]), dtype=np.float32)
        self.centroids[:n] = centroids
        self.count = np.zeros(cap, dtype=np.int64)
        self.leaf_doc: dict[int, str] = {}
        self.doc_leaf: dict[str, int] = {}
        for node in np.flatnonzero(np.asarray(trie.doc) >= 0).tolist():
            doc_id = sem.doc_ids[int(trie.doc[node])]
            self.leaf_doc[node] = doc_id
            self.doc_leaf[doc_id] = node
            while node >= 0:
                self.count[node] += 1
                node = int(self.parent[node])
        self.depth_limit = max(int(trie.max_depth), int(depth_limit or 0))
        self.decode_doc = np.asarray(trie.doc, dtype=np.int64).copy()
        self.decode_child = np.asarray(trie.child, dtype=np.int64).copy()
        self.decode_depth = int(np.asarray(trie.depth).max())
        self.built_trie = trie  # the trie as built (the decoder's node heads are made from it)
        self.sem_doc_ids = list(sem.doc_ids)  # decode_doc's document index -> doc id
        self.version = 0  # changes to the decoding trie (deletions of trained documents)

    def _grow(self) -> None:
        cap = len(self.parent) * 2
        for name in ("child", "parent", "digit", "depth", "is_leaf", "centroids", "count"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), dtype=old.dtype)
            if name in ("child", "parent", "digit"):
                new[:] = -1
            new[: len(old)] = old
            setattr(self, name, new)

    def _new_node(self, parent: int, digit: int, leaf: bool) -> int:
        if self.n == len(self.parent):
            self._grow()
        node = self.n
        self.n += 1
        self.child[parent, digit] = node
        self.parent[node] = parent
        self.digit[node] = digit
        self.depth[node] = self.depth[parent] + 1
        self.is_leaf[node] = leaf
        return node

    def path(self, doc_id: str) -> tuple[int, ...] | None:
        node = self.doc_leaf.get(doc_id)
        if node is None:
            return None
        digits = []
        while node > 0:
            digits.append(int(self.digit[node]))
            node = int(self.parent[node])
        return tuple(reversed(digits))

    def _is_group(self, nodes: np.ndarray) -> np.ndarray:
        """Nodes whose children are leaves (or that have no children yet, besides the root)."""
        kids = self.child[nodes]
        has_internal = ((kids >= 0) & ~self.is_leaf[np.maximum(kids, 0)]).any(1)
        return ~has_internal & ~self.is_leaf[nodes]

    def assign(self, x: np.ndarray) -> tuple[int, ...]:
        """A free semantic id for vector ``x`` (the rule in the module docstring)."""
        node = 0
        while True:
            kids = self.child[node]
            kids = kids[kids >= 0]
            internal = kids[~self.is_leaf[kids]]
            if internal.size == 0:
                break
            node = int(internal[np.argmin(((self.centroids[internal] - x) ** 2).sum(1))])
        free = np.flatnonzero(self.child[node] < 0)
        if free.size and self.depth[node] + 1 <= self.depth_limit:
            return (*self._digits(node), int(free[0]))
        # Full: look for room below ever higher ancestors.
        nodes = np.arange(self.n)
        open_ = (self.child[: self.n] < 0).any(1) & ~self.is_leaf[: self.n]
        group = self._is_group(nodes)
        fits = np.where(group, self.depth[: self.n] + 1, self.depth[: self.n] + 2) <= self.depth_limit
        cand = nodes[open_ & fits]
        if cand.size == 0:
            raise IdSpaceFull(
                f"no free digit left in the docid trie (k={self.k}, longest id {self.depth_limit}); "
                "rebuild the semantic ids with a larger k (nci ids build --k) and retrain"
            )
        dist = ((self.centroids[cand] - x) ** 2).sum(1)
        anc = int(self.parent[node]) if node > 0 else 0
        while True:
            # ancestors of every candidate at the depth of ``anc``
            up = cand.copy()
            target = self.depth[anc]
            for _ in range(int(self.depth[: self.n].max()) + 1):
                deeper = self.depth[up] > target
                if not deeper.any():
                    break
                up[deeper] = self.parent[up[deeper]]
            inside = up == anc
            if inside.any():
                best = int(cand[inside][np.argmin(dist[inside])])
                digit = int(np.flatnonzero(self.child[best] < 0)[0])
                if self._is_group(np.array([best]))[0]:
                    return (*self._digits(best), digit)
                return (*self._digits(best), digit, 0)
            anc = int(self.parent[anc])

    def _digits(self, node: int) -> tuple[int, ...]:
        digits = []
        while node > 0:
            digits.append(int(self.digit[node]))
            node = int(self.parent[node])
        return tuple(reversed(digits))

    def insert(self, doc_id: str, digits: Sequence[int], x: np.ndarray) -> None:
        """Insert ``doc_id`` at ``digits``, creating nodes as needed; update centroids and counts."""
        if not digits or any(not 0 <= d < self.k for d in digits):
            raise ValueError(f"bad semantic id {tuple(digits)} for k={self.k}")
        node, path = 0, [0]
        for i, d in enumerate(digits):
            last = i == len(digits) - 1
            nxt = int(self.child[node, d])
            if nxt < 0:
                nxt = self._new_node(node, d, leaf=last)
            elif self.is_leaf[nxt] or last:
                raise ValueError(f"semantic id {tuple(digits)} is taken or extends another id")
            node = nxt
            path.append(node)
        self.leaf_doc[node] = doc_id
        self.doc_leaf[doc_id] = node
        for p in path:  # running mean; a new node's centroid becomes x
            self.count[p] += 1
            self.centroids[p] += (x - self.centroids[p]) / self.count[p]

    def remove(self, doc_id: str, x: np.ndarray | None) -> bool:
        """Retire ``doc_id``'s leaf and prune it from the decoding trie; True if the latter changed."""
        node = self.doc_leaf.pop(doc_id, None)
        if node is None:
            return False
        del self.leaf_doc[node]
        p = node
        while p >= 0:
            n = self.count[p]
            if x is not None and n > 1:
                self.centroids[p] = (self.centroids[p] * n - x) / (n - 1)
            self.count[p] = max(n - 1, 0)
            p = int(self.parent[p])
        if node >= self.n_built or self.decode_doc[node] < 0:
            return False
        # prune the leaf, then every ancestor left without children (never the root)
        self.decode_doc[node] = -1
        p = node
        while p > 0:
            parent = int(self.parent[p])
            self.decode_child[parent, int(self.digit[p])] = -1
            if parent == 0 or (self.decode_child[parent] >= 0).any():
                break
            p = parent
        self.version += 1
        return True

    def live_ids(self) -> dict[str, tuple[int, ...]]:
        return {doc_id: self._digits(node) for doc_id, node in self.doc_leaf.items()}
