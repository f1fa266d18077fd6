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

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
        self._undo: list[tuple[Any, ...]] | None = None  # inside trial(): how to undo each insert

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
        # Full: look for room below ever higher ancestors. Only the ancestor's subtree is read,
        # so a full group costs what its neighbourhood holds, not the whole trie.
        anc = int(self.parent[node]) if node > 0 else 0
        while True:
            below = self._subtree(anc)  # ascending node ids: ties go to the lowest, as ever
            cand = below[self._has_room(below)]
            if cand.size:
                best = int(cand[np.argmin(((self.centroids[cand] - x) ** 2).sum(1))])
                digit = int(np.flatnonzero(self.child[best] < 0)[0])
                if self._is_group(np.array([best]))[0]:
                    return (*self._digits(best), digit)
                return (*self._digits(best), digit, 0)
            if anc == 0:
                raise IdSpaceFull(
                    f"no free digit left in the docid trie (k={self.k}, longest id {self.depth_limit}); "
                    "rebuild the semantic ids with a larger k (nci ids build --k) and retrain"
                )
            anc = int(self.parent[anc])

    def _subtree(self, node: int) -> np.ndarray:
        """``node`` and every internal node below it, in ascending order."""
        parts, frontier = [np.array([node])], np.array([node])
        while frontier.size:
            kids = self.child[frontier].ravel()
            kids = kids[kids >= 0]
            frontier = kids[~self.is_leaf[kids]]
            parts.append(frontier)
        return np.sort(np.concatenate(parts))

    def _has_room(self, nodes: np.ndarray) -> np.ndarray:
        """Internal nodes with a free digit whose new id (a leaf below a leaf group, else a new
        group of one) stays within the depth limit."""
        open_ = (self.child[nodes] < 0).any(1) & ~self.is_leaf[nodes]
        depth = np.where(self._is_group(nodes), self.depth[nodes] + 1, self.depth[nodes] + 2)
        return open_ & (depth <= self.depth_limit)

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
        n_before = self.n
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
        if self._undo is not None:
            self._undo.append((n_before, path, self.centroids[path].copy(), self.count[path].copy(), doc_id))
        for p in path:  # running mean; a new node's centroid becomes x
            self.count[p] += 1
            self.centroids[p] += (x - self.centroids[p]) / self.count[p]

    @contextmanager
    def trial(self) -> Iterator[IdSpace]:
        """Inserts made inside are undone on leaving, exactly (nodes, centroids, counts): a batch
        of additions plans its ids one after another without copying the id space."""
        if self._undo is not None:
            raise RuntimeError("trials do not nest")
        self._undo = []
        try:
            yield self
        finally:
            undo, self._undo = self._undo, None
            for n_before, path, centroids, counts, doc_id in reversed(undo):
                self.centroids[path], self.count[path] = centroids, counts
                del self.leaf_doc[self.doc_leaf.pop(doc_id)]
                for node in range(self.n - 1, n_before - 1, -1):
                    self.child[self.parent[node], self.digit[node]] = -1
                    self.child[node], self.parent[node], self.digit[node] = -1, -1, -1
                    self.depth[node], self.is_leaf[node], self.count[node] = 0, False, 0
                    self.centroids[node] = 0.0
                self.n = n_before

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
