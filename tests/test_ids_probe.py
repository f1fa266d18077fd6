"""scripts/ids_probe.py: the untrained centroid-prior search over candidate id trees."""

from __future__ import annotations

import json

import numpy as np
from script_module import load_script

from nci.data import load_qrels, split_queries
from nci.evaluate import main as evaluate_main
from nci.train import TrainConfig


def test_probe_baseline_is_the_projects_dense_search(
    tiny_encoder, synthetic_data, synthetic_embeddings, plain_index, capsys
):
    script = load_script("ids_probe")
    embeddings = np.load(synthetic_embeddings / "embeddings.npy")
    doc_ids = (synthetic_embeddings / "doc_ids.txt").read_text().splitlines()
    row = {d: i for i, d in enumerate(doc_ids)}
    queries, qrels = split_queries(synthetic_data, "train"), load_qrels(synthetic_data, "train")
    qids = sorted(queries)
    relevant = [{row[d] for d, g in qrels[q].items() if g > 0} for q in qids]
    config = TrainConfig(encoder=str(tiny_encoder), n_heads=2)

    deep = script.probe(embeddings, doc_ids, [queries[q] for q in qids], relevant, 4, 10, config)
    flat = script.probe(embeddings, doc_ids, [queries[q] for q in qids], relevant, len(doc_ids), 10, config)

    # k=4 over 60 documents needs several levels; k >= documents puts every one under the root
    assert deep["max_depth"] >= 3 and flat["max_depth"] == 1 and flat["trie_nodes"] == len(doc_ids) + 1
    assert 0 <= deep["nci@1"] <= deep["nci@10"] <= 1
    # the flat baseline is exactly what `nci evaluate --method dense` measures on the same questions
    assert (
        evaluate_main(
            [
                "--data",
                str(synthetic_data),
                "--index",
                str(plain_index),
                "--method",
                "dense",
                "--split",
                "train",
                "--k",
                "10",
            ]
        )
        == 0
    )
    dense = json.loads(capsys.readouterr().out)
    assert dense["queries"] == len(qids)
    assert (
        round(deep["dense@1"], 4) == dense["success@1"] and round(deep["dense@10"], 4) == dense["success@10"]
    )
    assert flat["dense@1"] == deep["dense@1"]
