"""Semantic document identifiers by recursive k-means, as in NCI (Wang et al., 2022, Sec. 3.1).

Documents are clustered into ``k`` groups by their BERT embeddings; every group larger than the
leaf size ``c`` is clustered again; inside a group of at most ``c`` documents each document takes
its position as the last digit (so ``c <= k``). Ids are variable-length digit tuples and, as
decoder tokens, position-specific: digit ``d`` at position ``t`` is token ``t*k + d + 2``, with
0 = pad and 1 = end. That numbering lives here and nowhere else.

Ids are a pure function of (embeddings, config): each cluster's k-means is seeded from the seed
and the cluster's own path, so the result does not depend on processing order.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nci.manifest import ArtifactError, Timer, atomic_output_dir, load_config, read_manifest, write_manifest
from nci.trie import Trie

log = logging.getLogger(__name__)

# --- token numbering -------------------------------------------------------------------------
# The decoder's token numbering, defined here only; nci.model and nci.decoding import it.

PAD = 0  # after END; also the decoder's start input
END = 1
DIGIT_OFFSET = 2  # digit tokens come after PAD and END


def digit_to_token(position: Any, digit: Any, k: int) -> Any:
    """Token of ``digit`` at ``position``: ``position * k + digit + 2``. Element-wise on numpy
    arrays and torch tensors too."""
    return position * k + digit + DIGIT_OFFSET


def token_to_digit(token: int, k: int) -> tuple[int, int]:
    """``(position, digit)`` of a digit token."""
    if token < DIGIT_OFFSET:
        raise ValueError(f"token {token} is PAD or END, not a digit")
    return divmod(token - DIGIT_OFFSET, k)


def vocab_size(k: int, max_depth: int) -> int:
    """Rows of the decoder's token tables: PAD, END and a block of ``k`` digit tokens for each of
    the ``max_depth + 1`` decoder positions.

    The last position (``max_depth``) only ever writes END, so its digit block is never a target
    and never allowed; it is there so that every position's ``k + 1`` choices
    (:func:`choice_tokens`) are rows of one table, and saved models have these rows."""
    return (max_depth + 1) * k + DIGIT_OFFSET


def choice_tokens(k: int, n_positions: int) -> np.ndarray:
    """int64 ``[n_positions, k + 1]``: the tokens that can be written at each position, its ``k``
    digit tokens and then END (the order of the decoder's compact logits)."""
    digits = digit_to_token(np.arange(n_positions)[:, None], np.arange(k)[None, :], k)
    return np.concatenate([digits, np.full((n_positions, 1), END)], 1).astype(np.int64)


def ids_to_tokens(ids: Sequence[Sequence[int]], k: int, max_depth: int) -> np.ndarray:
    """Each id's tokens, then END, right-padded with PAD: int64 ``[n, max_depth + 1]``."""
    out = np.full((len(ids), max_depth + 1), PAD, dtype=np.int64)
    for i, digits in enumerate(ids):
        if len(digits) > max_depth:
            raise ValueError(f"id {tuple(digits)} is longer than max_depth {max_depth}")
        for t, d in enumerate(digits):
            out[i, t] = digit_to_token(t, d, k)
        out[i, len(digits)] = END
    return out


# --- recursive k-means -----------------------------------------------------------------------


@dataclass(frozen=True)
class IdsConfig:
    # The NCI reference's shipped setting (the paper describes k=10): a shallower tree, so the
    # decoder makes fewer choices that can go wrong (see the README's ablation table).
    k: int = 30
    leaf_size: int = 30
    seed: int = 0
    # Clusters above this size use mini-batch k-means (as the reference does for large ones).
    minibatch_above: int = 20_000
    # A split whose largest cluster keeps more than this share of its parent is replaced by an
    # even split, so depth stays within 1 + log(n / leaf_size) / log(1 / max_share).
    max_share: float = 0.9
    kmeans_iterations: int = 25

    def __post_init__(self) -> None:
        if self.k < 2:
            raise ValueError(f"k must be at least 2, got {self.k}")
        if not 1 <= self.leaf_size <= self.k:
            raise ValueError(f"leaf size must be within 1..k ({self.k}), got {self.leaf_size}")
        if not 0.5 <= self.max_share < 1:
            raise ValueError(f"max_share must be within [0.5, 1), got {self.max_share}")


def depth_bound(n: int, config: IdsConfig) -> int:
    """The longest id :func:`build_semantic_ids` can produce for ``n`` documents."""
    if n <= config.leaf_size:
        return 1
    return 1 + math.ceil(math.log(n / config.leaf_size) / math.log(1 / config.max_share))


def _lloyd(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    """Plain k-means (k-means++ seeding, Lloyd steps) for small clusters.

    scikit-learn's KMeans costs ~10-20 ms per call in validation and thread setup, which
    dominates when a 100k corpus needs ~10k small clusterings; this is the same algorithm
    without that overhead.
    """
    n = x.shape[0]
    sq = np.einsum("ij,ij->i", x, x)
    centres = np.empty((k, x.shape[1]), dtype=x.dtype)
    centres[0] = x[rng.integers(n)]
    closest = sq - 2 * x @ centres[0] + centres[0] @ centres[0]
    for j in range(1, k):
        p = np.clip(closest, 0, None)
        total = p.sum()
        idx = rng.choice(n, p=p / total) if total > 0 else rng.integers(n)
        centres[j] = x[idx]
        closest = np.minimum(closest, sq - 2 * x @ centres[j] + centres[j] @ centres[j])
    labels = np.zeros(n, dtype=np.int64)
    for it in range(iterations):
        dist = -2 * x @ centres.T + np.einsum("ij,ij->i", centres, centres)[None, :]
        new = dist.argmin(1)
        if it > 0 and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = labels == j
            if members.any():
                centres[j] = x[members].mean(0)
    return labels


def _cluster(x: np.ndarray, config: IdsConfig, path: tuple[int, ...]) -> np.ndarray:
    seed = np.random.SeedSequence([config.seed, len(path), *path]).generate_state(1)[0]
    if x.shape[0] > config.minibatch_above:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(
            n_clusters=config.k, random_state=int(seed), n_init=3, batch_size=4096, max_iter=50
        )
        labels = km.fit_predict(x)
    else:
        labels = _lloyd(x, config.k, np.random.default_rng(seed), config.kmeans_iterations)
    if np.bincount(labels, minlength=config.k).max() > config.max_share * x.shape[0]:
        # k-means failed to split (duplicates, or one dominant mode): split evenly by order.
        labels = np.arange(x.shape[0]) * config.k // x.shape[0]
    return labels


def build_semantic_ids(
    embeddings: np.ndarray, config: IdsConfig, progress: bool = False
) -> list[tuple[int, ...]]:
    """One digit tuple per row of ``embeddings``: unique, none a prefix of another."""
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        raise ValueError("no embeddings to cluster")
    ids: list[tuple[int, ...] | None] = [None] * n
    stack: list[tuple[np.ndarray, tuple[int, ...]]] = [(np.arange(n), ())]
    bar = tqdm(total=n, desc="semantic ids", unit="doc", disable=not progress)
    while stack:
        members, path = stack.pop()
        if members.size <= config.leaf_size:
            for pos, i in enumerate(members):
                ids[i] = (*path, pos)
            bar.update(members.size)
            continue
        labels = _cluster(x[members], config, path)
        for digit in range(config.k - 1, -1, -1):
            sub = members[labels == digit]
            if sub.size:
                stack.append((sub, (*path, digit)))
    bar.close()
    return ids  # type: ignore[return-value]


def node_centroids(trie: Trie, embeddings: np.ndarray) -> np.ndarray:
    """Mean embedding of the documents under each trie node: float32 ``[n_nodes, dim]``."""
    leaf = trie.leaf_of()
    sums = np.zeros((trie.n_nodes, embeddings.shape[1]), dtype=np.float64)
    counts = np.zeros(trie.n_nodes, dtype=np.int64)
    node = leaf.copy()
    while True:
        live = node >= 0
        if not live.any():
            break
        np.add.at(sums, node[live], embeddings[live])
        np.add.at(counts, node[live], 1)
        node[live] = trie.parent[node[live]]
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


# --- artifacts -------------------------------------------------------------------------------


@dataclass
class SemanticIds:
    doc_ids: list[str]
    ids: list[tuple[int, ...]]
    k: int
    max_depth: int
    trie: Trie
    centroids: np.ndarray
    config: IdsConfig


def format_id(digits: Sequence[int]) -> str:
    return "-".join(map(str, digits))


def parse_id(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in text.split("-"))


def write_docids(path: Path, doc_ids: Sequence[str], ids: Sequence[Sequence[int]]) -> None:
    with open(path, "w") as f:
        for doc_id, digits in zip(doc_ids, ids, strict=True):
            f.write(f"{doc_id}\t{format_id(digits)}\n")


def read_docids(path: Path) -> tuple[list[str], list[tuple[int, ...]]]:
    doc_ids, ids = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2:
                raise ArtifactError(f"{path}:{lineno}: expected 'doc_id<TAB>digits', got {line!r}")
            try:
                ids.append(parse_id(parts[1]))
            except ValueError as e:
                raise ArtifactError(f"{path}:{lineno}: bad id {parts[1]!r}") from e
            doc_ids.append(parts[0])
    return doc_ids, ids


def load_semantic_ids(directory: str | Path) -> SemanticIds:
    directory = Path(directory)
    read_manifest(directory, stage="ids")
    config = load_config(directory, IdsConfig)
    doc_ids, ids = read_docids(directory / "docids.tsv")
    trie = Trie.load(directory)
    # memory-mapped: read when a live index copies them or a model's prior is set from them
    centroids = np.load(directory / "centroids.npy", mmap_mode="r")
    return SemanticIds(
        doc_ids=doc_ids,
        ids=ids,
        k=config.k,
        max_depth=trie.max_depth,
        trie=trie,
        centroids=centroids,
        config=config,
    )


def depth_histogram(ids: Sequence[Sequence[int]]) -> dict[int, int]:
    lengths = np.bincount([len(i) for i in ids])
    return {d: int(c) for d, c in enumerate(lengths) if c}


def build(embeddings_dir: Path, out: Path, config: IdsConfig, overwrite: bool = False) -> SemanticIds:
    """``nci ids build``: read an embed artifact, write docids.tsv, the trie and centroids."""
    read_manifest(embeddings_dir, stage="embed")
    embeddings = np.load(embeddings_dir / "embeddings.npy")
    doc_ids = (embeddings_dir / "doc_ids.txt").read_text().splitlines()
    if len(doc_ids) != embeddings.shape[0]:
        raise ArtifactError(f"{embeddings_dir}: {len(doc_ids)} doc ids but {embeddings.shape[0]} embeddings")
    with Timer() as timer:
        ids = build_semantic_ids(embeddings, config, progress=True)
        trie = Trie.build(ids, config.k)
        centroids = node_centroids(trie, embeddings)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_docids(tmp / "docids.tsv", doc_ids, ids)
        trie.save(tmp)
        np.save(tmp / "centroids.npy", centroids)
        hist = depth_histogram(ids)
        write_manifest(
            tmp,
            stage="ids",
            config=config,
            inputs={"embeddings": embeddings_dir},
            counts={
                "documents": len(ids),
                "trie_nodes": trie.n_nodes,
                "max_depth": trie.max_depth,
                "depth_histogram": {str(d): c for d, c in hist.items()},
            },
            wall_seconds=timer.seconds,
        )
    log.info(
        "%d ids (depths %s), %d trie nodes in %.1f s -> %s",
        len(ids),
        hist,
        trie.n_nodes,
        timer.seconds,
        out,
    )
    return load_semantic_ids(out)


# --- CLI -------------------------------------------------------------------------------------


def _add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--k", type=int, default=IdsConfig.k, help="clusters per level (default 30)")
    p.add_argument(
        "--leaf-size", type=int, default=IdsConfig.leaf_size, help="largest leaf cluster, <= k (default 30)"
    )
    p.add_argument("--seed", type=int, default=IdsConfig.seed)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Semantic ids and the docid trie.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build ids from an embed artifact")
    p.add_argument("--embeddings", type=Path, required=True, help="directory written by `nci embed`")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    _add_config_arguments(p)
    args = parser.parse_args(argv)
    try:
        config = IdsConfig(k=args.k, leaf_size=args.leaf_size, seed=args.seed)
        build(args.embeddings, args.out, config, overwrite=args.overwrite)
    except (ValueError, ArtifactError, FileExistsError, FileNotFoundError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return 0


def bench_main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``nci bench ids``: time id building on seeded synthetic vectors."""
    from nci.synthetic import make_vectors

    parser = argparse.ArgumentParser(prog=prog, description="Benchmark semantic id building.")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=200, help="Gaussian modes in the synthetic data")
    _add_config_arguments(parser)
    args = parser.parse_args(argv)
    config = IdsConfig(k=args.k, leaf_size=args.leaf_size, seed=args.seed)
    x = make_vectors(args.n, args.dim, n_clusters=args.clusters, seed=args.seed)
    start = time.perf_counter()
    ids = build_semantic_ids(x, config, progress=True)
    seconds_ids = time.perf_counter() - start
    trie = Trie.build(ids, config.k)
    seconds_total = time.perf_counter() - start
    assert len(set(ids)) == len(ids)
    hist = depth_histogram(ids)
    print(f"n={args.n} dim={args.dim} k={config.k} leaf_size={config.leaf_size}")
    print(f"ids: {seconds_ids:.1f} s; ids + trie: {seconds_total:.1f} s; trie nodes: {trie.n_nodes}")
    print("depth histogram: " + ", ".join(f"{d}: {c}" for d, c in hist.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
