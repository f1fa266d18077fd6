"""Export a live index's corpus and semantic ids, for a training run that absorbs the updates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nci.live.index import LiveIndex
from nci.manifest import ArtifactError


def export(live: LiveIndex, out: str | Path, overwrite: bool = False) -> Path:
    """Write the live corpus (``corpus.jsonl``) and its semantic ids (``ids/``, an ``ids``
    artifact with every live document's id) for a training run that absorbs the updates."""
    from nci.manifest import atomic_output_dir, load_config, write_manifest
    from nci.semantic_ids import IdsConfig, node_centroids, write_docids
    from nci.trie import Trie

    if live.trie is None:
        raise ArtifactError(f"{live.index.path}: the index has no semantic ids to export")
    with live.lock.read():
        sids = live.trie.live_ids()
        doc_ids = [d for d in live.store if d in sids]
        ids = [sids[d] for d in doc_ids]
        vectors = np.stack([live.corpus.vector(d) for d in doc_ids])
        corpus = [{"_id": d, **live.store[d]} for d in doc_ids]
    trie = Trie.build(ids, live.trie.k)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as f:
            for doc in corpus:
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
        (tmp / "ids").mkdir()
        write_docids(tmp / "ids" / "docids.tsv", doc_ids, ids)
        trie.save(tmp / "ids")
        np.save(tmp / "ids" / "centroids.npy", node_centroids(trie, vectors))
        config = load_config(live.index.path / "ids", IdsConfig)
        write_manifest(
            tmp / "ids",
            stage="ids",
            config=config,
            inputs={"index": live.index.path},
            counts={
                "documents": len(ids),
                "trie_nodes": trie.n_nodes,
                "max_depth": trie.max_depth,
                "added": len(live.added),
                "deleted": len(live.deleted_built),
            },
        )
    return Path(out)
