"""Training inputs: every (text, document, source) example with its id tokens, the held-out
validation queries, and each epoch's order and batches (functions of the seed and the epoch)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nci.manifest import ArtifactError
from nci.train.config import SOURCES, TrainConfig, parse_source_weights


@dataclass
class TrainingData:
    """Every training input as (text, document, source), plus the held-out validation queries."""

    texts: list[str]  # unique input texts; features are computed per text
    example_text: np.ndarray  # [n] index into texts
    example_doc: np.ndarray  # [n] index into the semantic ids' documents
    example_source: np.ndarray  # [n] index into sources
    sources: list[str]
    val: list[tuple[int, list[int]]]  # (text index, relevant document indices)
    train_probe: list[tuple[int, list[int]]]  # training queries, to watch memorisation
    targets: np.ndarray  # [n_docs, max_depth + 1] id tokens, END, PAD
    nodes: np.ndarray  # [n_docs, max_depth + 1] trie node of each position's prefix
    counts: dict[str, int] = field(default_factory=dict)


def target_nodes(trie: Any, ids: list[tuple[int, ...]], n_positions: int) -> np.ndarray:
    """Trie node of the prefix before each position (the leaf from the END position on)."""
    nodes = np.zeros((len(ids), n_positions), dtype=np.int64)
    for i, digits in enumerate(ids):
        node = 0
        for t in range(n_positions):
            nodes[i, t] = node
            if t < len(digits):
                node = int(trie.child[node, digits[t]])
    return nodes


class _Examples:
    """Examples as they are read: texts numbered once, sources in order of appearance."""

    def __init__(self) -> None:
        self.texts: dict[str, int] = {}
        self.text: list[int] = []
        self.doc: list[int] = []
        self.source: list[int] = []
        self.sources: list[str] = []

    def add(self, text: str, doc: int, source: str) -> None:
        if source not in self.sources:
            self.sources.append(source)
        self.text.append(self.texts.setdefault(text, len(self.texts)))
        self.doc.append(doc)
        self.source.append(self.sources.index(source))


def _relevant_documents(data: Path, doc_index: dict[str, int]) -> tuple[dict[str, str], dict[str, list[int]]]:
    """The training queries, and the documents each one with a positive grade names."""
    from nci.data import load_qrels, split_queries

    queries = split_queries(data, "train")
    qrels = load_qrels(data, "train")
    relevant: dict[str, list[int]] = {}
    qrels_path = Path(data) / "qrels" / "train.tsv"
    for qid in queries:
        docs = []
        for doc_id, grade in qrels.get(qid, {}).items():
            if grade <= 0:
                continue
            if doc_id not in doc_index:
                raise ArtifactError(
                    f"{qrels_path}: query '{qid}' names document '{doc_id}', which has no semantic id; "
                    "build the ids from this dataset's corpus"
                )
            docs.append(doc_index[doc_id])
        if docs:
            relevant[qid] = docs
    return queries, relevant


def _add_pseudo_queries(examples: _Examples, query_dirs: list[Path], doc_index: dict[str, int]) -> None:
    from nci.querygen import read_pseudo_queries

    for directory in query_dirs:
        path = Path(directory) / "pseudo_queries.jsonl"
        for lineno, row in enumerate(read_pseudo_queries(directory), 1):
            doc_id, text, source = row["doc_id"], row["text"], row["source"]
            if doc_id not in doc_index:
                raise ArtifactError(
                    f"{path}: row {lineno}: document '{doc_id}' has no semantic id; were the pseudo-queries "
                    "made for another corpus?"
                )
            examples.add(text, doc_index[doc_id], source)


def _validation_split(qids: list[str], cfg: TrainConfig) -> tuple[set[str], np.random.Generator]:
    """The seeded validation share of the training queries (and the generator, which goes on)."""
    n_val = min(cfg.val_max, int(round(cfg.val_fraction * len(qids))))
    rng = np.random.default_rng([cfg.seed, 1])
    val_qids = set(rng.choice(qids, size=n_val, replace=False).tolist()) if n_val else set()
    return val_qids, rng


def validation_query_ids(data: Path, doc_ids: list[str], cfg: TrainConfig) -> list[str]:
    """The training queries ``nci train`` held out for validation with ``cfg`` (the same seeded
    split), in query order: queries no model of that run was trained on."""
    _, relevant = _relevant_documents(data, {d: i for i, d in enumerate(doc_ids)})
    qids = list(relevant)
    val_qids, _ = _validation_split(qids, cfg)
    return [q for q in qids if q in val_qids]


def read_train_config(model_dir: Path) -> TrainConfig | None:
    """The config a model directory was trained with (``train_config.json``), or None without one."""
    path = Path(model_dir) / "train_config.json"
    if not path.is_file():
        return None
    fields = json.loads(path.read_text())
    return TrainConfig(**{k: v for k, v in fields.items() if k in TrainConfig.__dataclass_fields__})


def learned_queries(data: Path, doc_ids: list[str], cfg: TrainConfig | None) -> dict[str, dict[str, str]]:
    """Document id -> {query id: text} of the training queries judged relevant to it that a model
    trained with ``cfg`` learned from (its held-out validation share left out); every training
    query when ``cfg`` is None. Documents without one are left out."""
    queries, relevant = _relevant_documents(data, {d: i for i, d in enumerate(doc_ids)})
    held_out = set(_validation_split(list(relevant), cfg)[0]) if cfg is not None else set()
    out: dict[str, dict[str, str]] = {}
    for qid, docs in relevant.items():
        if qid not in held_out:
            for doc in docs:
                out.setdefault(doc_ids[doc], {})[qid] = queries[qid]
    return out


def load_training_data(data: Path, sem: Any, query_dirs: list[Path], cfg: TrainConfig) -> TrainingData:
    """The training queries of ``data`` (less a seeded validation share) and every pseudo-query
    of ``query_dirs``, each paired with its documents' semantic ids ``sem``."""
    from nci.semantic_ids import ids_to_tokens

    weights = parse_source_weights(cfg.source_weights)
    doc_index = {d: i for i, d in enumerate(sem.doc_ids)}
    examples = _Examples()
    queries, relevant = _relevant_documents(data, doc_index)
    qids = list(relevant)
    val_qids, rng = _validation_split(qids, cfg)
    for qid in qids:
        if qid not in val_qids:
            for doc in relevant[qid]:
                examples.add(queries[qid], doc, "query")
    n_query_examples = len(examples.text)
    _add_pseudo_queries(examples, query_dirs, doc_index)

    sources, ex_text = examples.sources, examples.text
    for source in sources:
        if source not in weights:
            weights[source] = 1.0
    unknown = set(weights) - set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"--source-weights names {sorted(unknown)}, but the inputs hold {sources}")
    if not ex_text:
        raise ValueError(
            f"no training inputs: {data} has no training queries and no --queries directory was given"
        )

    texts = examples.texts
    val = [(texts.setdefault(queries[q], len(texts)), relevant[q]) for q in qids if q in val_qids]
    probe_rows = rng.choice(
        n_query_examples or len(ex_text), size=min(500, n_query_examples or len(ex_text)), replace=False
    )
    train_probe = [(ex_text[i], [examples.doc[i]]) for i in sorted(probe_rows.tolist())]
    n_positions = sem.max_depth + 1
    counts = {f"examples_{s}": int(np.sum(np.asarray(examples.source) == j)) for j, s in enumerate(sources)}
    counts.update(
        training_queries=len(qids) - len(val_qids),
        validation_queries=len(val_qids),
        unique_texts=len(texts),
        documents=len(sem.doc_ids),
    )
    return TrainingData(
        texts=list(texts),
        example_text=np.asarray(ex_text, dtype=np.int64),
        example_doc=np.asarray(examples.doc, dtype=np.int64),
        example_source=np.asarray(examples.source, dtype=np.int64),
        sources=sources,
        val=val,
        train_probe=train_probe,
        targets=ids_to_tokens(sem.ids, sem.k, sem.max_depth),
        nodes=target_nodes(sem.trie, sem.ids, n_positions),
        counts=counts,
    )


def training_data_digest(data: TrainingData) -> str:
    """A hash of every training pair and the validation split, to check a resumed run's inputs."""
    h = hashlib.sha256()
    for array in (data.example_text, data.example_doc, data.example_source, data.targets):
        h.update(np.ascontiguousarray(array).tobytes())
    h.update(json.dumps([data.texts, data.sources, data.val]).encode())
    return h.hexdigest()


def epoch_order(data: TrainingData, weights: dict[str, float], seed: int, epoch: int) -> np.ndarray:
    """The examples of one epoch, shuffled: each source repeated ``weight`` times (the
    fractional part as a random subset), so the order depends only on (seed, epoch)."""
    rng = np.random.default_rng([seed, 2, epoch])
    parts = []
    for j, source in enumerate(data.sources):
        idx = np.flatnonzero(data.example_source == j)
        w = weights.get(source, 1.0)
        parts += [idx] * int(w)
        frac = w - int(w)
        if frac > 0:
            parts.append(rng.choice(idx, size=int(round(frac * len(idx))), replace=False))
    order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return order[rng.permutation(len(order))]


def epoch_batches(
    order: np.ndarray, lengths: np.ndarray, batch_size: int, seed: int, epoch: int, buckets: bool
) -> list[np.ndarray]:
    """Cut one epoch's shuffled ``order`` into batches. With ``buckets``, each run of 50 batches'
    worth of examples is sorted by input length (``lengths[i]`` for example ``i``) before the cut,
    and the batches are shuffled again, so a batch pads to little more than its own inputs."""
    if not buckets:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng = np.random.default_rng([seed, 3, epoch])
    chunk = 50 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]
