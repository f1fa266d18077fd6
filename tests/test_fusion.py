"""The fusion method: the combination maths, fitting on validation queries only, and the fitted
method served like any other."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nci.retrieval import Hit, load_index
from nci.retrieval.fusion import RRF_K, FusionConfig, fuse


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


def test_fusion_is_fitted_on_the_dev_split_and_served(tiny_index, tmp_path):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    index_dir = tiny_index  # built with --fusion on a copy of the data with a dev split (conftest)
    info = json.loads((index_dir / "fusion.json").read_text())
    assert info["fitted"] and info["on"] == "the dev split" and info["queries"] == 20
    assert info["value"] >= info["single"]["bm25"] - 1e-9  # BM25 alone is one of the grid's points
    index = load_index(index_dir)
    assert index.methods()["fusion"] is None
    hits = index.retriever("fusion").search(["topic 1 mine"], 5)[0]
    assert len(hits) == 5 and all(h.source == "fusion" for h in hits)
    with TestClient(create_app(Settings(index=index_dir, updates_dir=tmp_path / "u"))) as client:
        r = client.post("/v1/search", json={"query": "topic 1 mine", "k": 5, "method": "fusion"})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == [h.doc_id for h in hits]


def test_without_validation_queries_fusion_is_equal_weights_and_says_so(tiny_index, plain_index):
    from nci.fusion import fit_fusion

    assert "needs nci" in load_index(plain_index).methods()["fusion"]
    # the synthetic data itself has no dev split, and the tiny model no training config
    manifest = json.loads((tiny_index / "manifest.json").read_text())
    copy = shutil.copytree(tiny_index, tiny_index.parent / "no-validation")
    entry = fit_fusion(copy, Path(manifest["inputs"]["data"]["path"]))
    assert entry["fitted"] is False and "no validation queries" in entry["why"]
    assert entry["weights"] == {"nci": 1.0, "dense": 1.0, "bm25": 1.0} and entry["combination"] == "rrf"
