"""The docid trie as flat arrays, so decoding can walk it with tensor indexing.

Node 0 is the root. ``child[n, d]`` is the node reached from ``n`` by digit ``d`` (or -1).
Every document id ends at a leaf (``doc[n] >= 0``); internal nodes hold no document, because
recursive k-means gives documents their digits only inside leaf clusters. A beam is therefore
finished exactly when it reaches a node with a document.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRIE_VERSION = 1
_ARRAYS = ("child", "depth", "parent", "digit", "doc")


@dataclass
class Trie:
    k: int
    child: np.ndarray  # int32 [n_nodes, k]
    depth: np.ndarray  # int16 [n_nodes]
    parent: np.ndarray  # int32 [n_nodes], -1 for the root
    digit: np.ndarray  # int16 [n_nodes], digit leading into the node, -1 for the root
    doc: np.ndarray  # int32 [n_nodes], document index at a leaf, -1 elsewhere

    @classmethod
    def build(cls, ids: Sequence[Sequence[int]], k: int) -> Trie:
        """Insert ``ids[i]`` for document ``i``. Node numbering follows the sorted ids, so it
        does not depend on document order."""
        child: list[list[int]] = [[-1] * k]
        depth, parent, digit, doc = [0], [-1], [-1], [-1]
        for i in sorted(range(len(ids)), key=lambda i: tuple(ids[i])):
            node = 0
            if len(ids[i]) == 0:
                raise ValueError(f"document {i} has an empty id")
            for d in ids[i]:
                if not 0 <= d < k:
                    raise ValueError(f"document {i}: digit {d} outside 0..{k - 1} in id {tuple(ids[i])}")
                if doc[node] >= 0:
                    raise ValueError(
                        f"document {i}: id {tuple(ids[i])} extends the id of document {doc[node]}"
                    )
                nxt = child[node][d]
                if nxt < 0:
                    nxt = len(child)
                    child[node][d] = nxt
                    child.append([-1] * k)
                    depth.append(depth[node] + 1)
                    parent.append(node)
                    digit.append(d)
                    doc.append(-1)
                node = nxt
            if doc[node] >= 0 or any(c >= 0 for c in child[node]):
                raise ValueError(f"document {i}: id {tuple(ids[i])} is not unique or is a prefix of another")
            doc[node] = i
        return cls(
            k=k,
            child=np.asarray(child, dtype=np.int32),
            depth=np.asarray(depth, dtype=np.int16),
            parent=np.asarray(parent, dtype=np.int32),
            digit=np.asarray(digit, dtype=np.int16),
            doc=np.asarray(doc, dtype=np.int32),
        )

    @property
    def n_nodes(self) -> int:
        return int(self.child.shape[0])

    @property
    def max_depth(self) -> int:
        return int(self.depth.max()) if self.n_nodes else 0

    @property
    def n_docs(self) -> int:
        return int((self.doc >= 0).sum())

    def node_of(self, prefix: Sequence[int]) -> int:
        """The node reached by ``prefix``, or -1 when no id starts with it."""
        node = 0
        for d in prefix:
            if not 0 <= d < self.k:
                return -1
            node = int(self.child[node, d])
            if node < 0:
                return -1
        return node

    def leaf_of(self) -> np.ndarray:
        """``leaf[doc_index] -> node``."""
        leaves = np.flatnonzero(self.doc >= 0)
        out = np.full(self.n_docs, -1, dtype=np.int64)
        out[self.doc[leaves]] = leaves
        return out

    def path(self, doc_index: int) -> tuple[int, ...]:
        """The id of a document, read from the trie."""
        nodes = np.flatnonzero(self.doc == doc_index)
        if nodes.size != 1:
            raise KeyError(f"document index {doc_index} is not in the trie")
        node, digits = int(nodes[0]), []
        while node > 0:
            digits.append(int(self.digit[node]))
            node = int(self.parent[node])
        return tuple(reversed(digits))

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        for name in _ARRAYS:
            np.save(directory / f"trie_{name}.npy", getattr(self, name))
        (directory / "trie.json").write_text(
            json.dumps({"version": TRIE_VERSION, "k": self.k, "n_nodes": self.n_nodes}) + "\n"
        )

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = False) -> Trie:
        directory = Path(directory)
        meta_path = directory / "trie.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: missing; not a semantic-ids or index directory")
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != TRIE_VERSION:
            raise ValueError(f"{meta_path}: trie version {meta.get('version')} is not {TRIE_VERSION}")
        arrays = {}
        for name in _ARRAYS:
            path = directory / f"trie_{name}.npy"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing trie array")
            arrays[name] = np.load(path, mmap_mode="r" if mmap else None)
        trie = cls(k=int(meta["k"]), **arrays)
        if trie.n_nodes != meta["n_nodes"] or any(len(a) != trie.n_nodes for a in arrays.values()):
            raise ValueError(f"{directory}: trie arrays disagree in length (corrupt index?)")
        return trie
