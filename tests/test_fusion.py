"""The fusion method: the combination maths, fitting on validation queries only, and the fitted
method served like any other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nci.retrieval import Hit, load_index
from nci.retrieval.fusion import RRF_K, FusionConfig, fuse, normalised, read_config


def test_reciprocal_rank_and_score_fusion():
    a = [Hit("x", 3.0, "nci"), Hit("y", 1.0, "nci")]
    b = [Hit("y", 10.0, "bm25"), Hit("z", 5.0, "bm25"), Hit("x", 0.0, "bm25")]
    rrf = fuse({"nci": a, "bm25": b}, FusionConfig("rrf", {"nci": 2.0, "bm25": 1.0}), k=3)
    expected = {
        "x": 2 / (RRF_K + 1) + 1 / (RRF_K + 3),
        "y": 2 / (RRF_K + 2) + 1 / (RRF_K + 1),
        "z": 1 / (RRF_K + 2),
    }
    assert [h.doc_id for h in rrf] == sorted(expected, key=lambda d: -expected[d])
    assert [h.score for h in rrf] == pytest.approx(sorted(expected.values(), reverse=True))
    score = fuse({"nci": a, "bm25": b}, FusionConfig("score", {"nci": 1.0, "bm25": 1.0}), k=2)
    # x: 1 (top of nci) + 0 (bottom of bm25); y: 0 + 1; z: 0.5 -> x and y tie at 1, x listed first
    assert [(h.doc_id, h.score) for h in score] == [("x", 1.0), ("y", 1.0)]
    assert fuse({"nci": a, "bm25": b}, FusionConfig("rrf", {"nci": 0.0, "bm25": 1.0}), k=3)[0].doc_id == "y"


def test_zscore_fusion_divides_by_each_lists_spread():
    # nci: one outlier on top; bm25: evenly spread. Min-max squashes nci's second hit to 0.1,
    # z-scores keep it at a third of a standard deviation... of a list dominated by the outlier.
    a = [Hit("x", 10.0, "nci"), Hit("y", 1.0, "nci"), Hit("w", 0.0, "nci")]
    b = [Hit("y", 2.0, "bm25"), Hit("z", 1.0, "bm25"), Hit("x", 0.0, "bm25")]
    sd_a = (sum((s - 11 / 3) ** 2 for s in (10.0, 1.0, 0.0)) / 3) ** 0.5
    sd_b = (2 / 3) ** 0.5
    assert normalised([10.0, 1.0, 0.0], "zscore") == pytest.approx([10 / sd_a, 1 / sd_a, 0.0])
    assert normalised([10.0, 1.0, 0.0], "score") == pytest.approx([1.0, 0.1, 0.0])
    assert normalised([3.0, 3.0], "zscore") == normalised([3.0, 3.0], "score") == [1.0, 1.0]
    z = fuse({"nci": a, "bm25": b}, FusionConfig("zscore", {"nci": 1.0, "bm25": 1.0}), k=4)
    expected = {"x": 10 / sd_a, "y": 1 / sd_a + 2 / sd_b, "z": 1 / sd_b, "w": 0.0}
    assert [h.doc_id for h in z] == sorted(expected, key=lambda d: -expected[d])
    assert [h.score for h in z] == pytest.approx(sorted(expected.values(), reverse=True))
    with pytest.raises(ValueError, match="combination must be one of"):
        FusionConfig("max", {"nci": 1.0})


def test_fusion_is_fitted_on_the_dev_split_and_served(tiny_index, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    index_dir = tiny_index  # built with --fusion on a copy of the data with a dev split (conftest)
    info = json.loads((index_dir / "fusion.json").read_text())
    assert info["fitted"] and info["on"] == "the dev split" and info["queries"] == 20
    assert info["value"] >= info["single"]["bm25"] - 1e-9  # BM25 alone is one of the grid's points
    # the index has the sentence methods: the fit scored them and gave each a weight; bm25-expanded
    # is left out, since the tiny model has no training config (so every training query expands
    # the documents) and the dev split repeats 20 of them
    assert set(info["single"]) == {"nci", "dense", "bm25", "dense-sentences", "bm25-sentences"}
    assert info["excluded"]["bm25-expanded"].startswith("20 of the 20 validation queries")
    assert set(info["weights"]) == set(info["single"])
    index = load_index(index_dir)
    assert index.methods()["fusion"] is None
    hits = index.retriever("fusion").search(["topic 1 mine"], 5)[0]
    assert len(hits) == 5 and all(h.source == "fusion" for h in hits)
    with TestClient(create_app(Settings(index=index_dir, updates_dir=tmp_path / "u"))) as client:
        r = client.post("/v1/search", json={"query": "topic 1 mine", "k": 5, "method": "fusion"})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == [h.doc_id for h in hits]


def test_without_validation_queries_fusion_is_the_fixed_rule_and_says_so(tiny_index, plain_index):
    from nci.fusion import UNFITTED, fit_fusion

    assert "needs nci" in load_index(plain_index).methods()["fusion"]
    # the synthetic data itself has no dev split, and the tiny model no training config
    manifest = json.loads((tiny_index / "manifest.json").read_text())
    copy = shutil.copytree(tiny_index, tiny_index.parent / "no-validation")
    entry = fit_fusion(copy, Path(manifest["inputs"]["data"]["path"]))
    assert entry["fitted"] is False and "no validation queries" in entry["why"]
    assert entry["weights"] == UNFITTED.weights and entry["combination"] == UNFITTED.combination
    # the method reads that rule back as it is written
    config = read_config(copy / "fusion.json")
    assert (config.combination, config.weights) == (UNFITTED.combination, UNFITTED.weights)
    # an index without the sentence methods (a corpus past sentence_max_docs) drops their weights
    for method in ("dense-sentences", "bm25-sentences"):
        manifest["methods"][method] = {"unavailable": "past sentence_max_docs"}
    manifest["files"]["fusion.json"]["bytes"] = (copy / "fusion.json").stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))  # as nci index build records them
    entry = fit_fusion(copy, Path(manifest["inputs"]["data"]["path"]))
    assert entry["weights"] == {p: UNFITTED.weights[p] for p in ("nci", "dense", "bm25")}
    manifest["files"]["fusion.json"]["bytes"] = (copy / "fusion.json").stat().st_size
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_index(copy).methods()["fusion"] is None
    assert load_index(copy).retriever("fusion").search(["topic 1 mine"], 3)[0]


def test_fusion_variants_script_scores_fixed_rules_on_held_out_judgements(tiny_index, tmp_path):
    from script_module import load_script

    from nci.data import load_qrels, split_queries
    from nci.evaluate import MEASURES, evaluate, ranked_run

    script = load_script("fusion_variants")
    data = tiny_index.parent / "dev-data"
    out = tmp_path / "variants.json"
    args = ["--index", str(tiny_index), "--data", str(data), "--qrels", str(data / "qrels" / "train.tsv")]
    assert script.main([*args, "--limit", "30", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    figures = report["figures"]
    assert report["queries"] == 30 and "train.tsv" in report["on"]
    assert {f"fixed: {name}" for name in {**script.FIXED, **script.WITH_SENTENCES}} <= set(figures)
    # the fixed rule without NCI is the index's own zscore fusion of dense and bm25, query by query
    index = load_index(tiny_index)
    queries, qrels = split_queries(data, "train"), load_qrels(data, "train")
    picked = sorted(script.judged_queries(data, data / "qrels" / "train.tsv", 30)[1])
    lists = {p: index.retriever(p).search([queries[q] for q in picked], 100) for p in ("dense", "bm25")}
    config = FusionConfig("zscore", {"dense": 1.0, "bm25": 1.0})
    fused = [fuse({p: lists[p][i] for p in lists}, config, 100) for i in range(len(picked))]
    expected = evaluate(
        ranked_run(picked, fused), {q: qrels[q] for q in picked}, {"ndcg@10": MEASURES["ndcg@10"]}
    )
    assert figures["fixed: zscore, dense 1, bm25 1"]["all"]["ndcg@10"] == pytest.approx(expected["ndcg@10"])
    # a grid holds BM25 alone (the other weights at 0): fitted on all, it is never below it
    grids = [f"{how}, weights on the grid" for how in ("rrf", "minmax", "zscore")]
    for name in [*grids, "the index's fit (every combination)"]:
        assert figures[name]["all"]["ndcg@10"] >= figures["bm25"]["all"]["ndcg@10"] - 1e-9
        assert figures[name]["cross_validated"] is not None
    # --fixed-only: the same parts and fixed rules, nothing fitted
    assert script.main([*args, "--limit", "30", "--fixed-only", "--json", str(out)]) == 0
    fixed = json.loads(out.read_text())["figures"]
    assert not any("grid" in name or "fit" in name or "logistic" in name for name in fixed)
    assert fixed["fixed: zscore, dense 1, bm25 1"] == figures["fixed: zscore, dense 1, bm25 1"]


def test_query_encoder_probe_scores_the_pooled_query_on_the_validation_queries(tiny_index, capsys):
    """The untrained model's pooled query is the encoder's mean-pooled sentence vector, the very
    vector the dense method searches with: the probe's figures are dense retrieval's."""
    from script_module import load_script

    from nci.data import load_qrels, split_queries

    script = load_script("query_encoder_probe")
    data = tiny_index.parent / "dev-data"
    assert script.main(["--index", str(tiny_index), "--data", str(data)]) == 0
    printed = capsys.readouterr().out.split()
    success1, success10 = float(printed[-3]), float(printed[-1])
    queries, qrels = split_queries(data, "dev"), load_qrels(data, "dev")
    hits = load_index(tiny_index).retriever("dense").search(list(queries.values()), 10)
    relevant = [qrels[q] for q in queries]
    assert success1 == pytest.approx(
        np.mean([h[0].doc_id in r for h, r in zip(hits, relevant, strict=True)]), abs=1e-3
    )
    assert success10 == pytest.approx(
        np.mean([any(x.doc_id in r for x in h) for h, r in zip(hits, relevant, strict=True)]), abs=1e-3
    )
    assert script.main(["--index", str(tiny_index), "--data", str(tiny_index.parent / "nowhere")]) == 2
