"""``nci bench scale`` at small N: every file written, every figure present and positive."""

from __future__ import annotations

import json
import math

import pytest

from nci.bench.cli import main
from nci.bench.scale import ScaleConfig
from nci.bench.scale_measure import in_fresh_process
from nci.bench.scale_report import figures, growth

NS = (300, 1000)


@pytest.fixture(scope="module")
def encoder_48(tmp_path_factory):
    """A tiny random BERT 48 wide: the default decoder's 6 heads need a width divisible by 6."""
    from tiny_bert import tiny_bert

    return tiny_bert(tmp_path_factory.mktemp("bert48"), hidden_size=48)


@pytest.fixture(scope="module")
def scale_run(encoder_48, tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    argv = ["scale", "--n", *map(str, NS), "--out", str(root / "out"), "--work", str(root / "work")]
    argv += ["--encoder", str(encoder_48), "--in-process", "--batches", "2", "--batch-size", "16"]
    argv += ["--latency-queries", "4", "--live-docs", "10", "--live-batch", "3"]
    assert main(argv, prog="nci bench") == 0
    return root


def test_scale_writes_results_table_and_plot(scale_run):
    out = scale_run / "out"
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "results.md", "scale.png"]
    assert (out / "scale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "results.json").read_text())
    assert [row["n"] for row in report["rows"]] == list(NS)
    md = (out / "results.md").read_text()
    for f in figures(report):
        assert f.label in md
    for n in NS:
        assert f"| {n:,} |" in md
    assert "## Growth" in md and report["command"].startswith("nci bench scale --n 300 1000")


def test_every_figure_is_present_and_positive(scale_run):
    report = json.loads((scale_run / "out" / "results.json").read_text())
    keys = [f.key for f in figures(report)]
    assert len(keys) == len(set(keys)) and {f["key"] for f in report["figures"]} == set(keys)
    for row in report["rows"]:
        missing = [k for k in keys if not (isinstance(row["figures"].get(k), (int, float)))]
        assert not missing, f"N={row['n']}: no figure for {missing}"
        bad = {
            k: row["figures"][k]
            for k in keys
            if not (row["figures"][k] > 0 and math.isfinite(row["figures"][k]))
        }
        assert not bad, f"N={row['n']}: figures not positive: {bad}"
    # the trie grows with the corpus; the decoder's per-node tables with its internal nodes
    small, large = (row["figures"] for row in report["rows"])
    assert large["trie_nodes"] > small["trie_nodes"] >= NS[0]
    assert large["node_heads_mb"] > small["node_heads_mb"]
    assert all(s is not None for s in growth(report)[0]["slopes"].values())


def test_node_heads_take_the_memory_their_formula_says(scale_run):
    report = json.loads((scale_run / "out" / "results.json").read_text())
    for row in report["rows"]:
        expected = row["details"]["node_heads_mb_expected"]
        assert row["figures"]["node_heads_mb"] == pytest.approx(expected, rel=1e-6)


def test_nci_is_skipped_where_its_heads_would_not_fit(encoder_48, tmp_path):
    argv = ["scale", "--n", "300", "--out", str(tmp_path / "out"), "--encoder", str(encoder_48)]
    argv += ["--in-process", "--batches", "1", "--batch-size", "8", "--latency-queries", "2"]
    argv += ["--live-docs", "4", "--live-batch", "0", "--max-heads-gb", "0"]
    assert main(argv, prog="nci bench") == 0
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    row = report["rows"][0]["figures"]
    assert "nci_load_s" not in row and "live_add_p50_ms" not in row
    assert row["dense_qps_b1"] > 0 and row["bm25_qps_b64"] > 0 and row["trie_nodes"] > 0
    assert any("nci and live skipped" in n for n in report["notes"])
    assert "| 300 |" in (tmp_path / "out" / "results.md").read_text()


def test_a_measurement_in_a_fresh_process_reports_its_own_peak(scale_run):
    """The default (isolated) path, on the index the run kept: dense in a spawned process."""
    index = scale_run / "work" / f"n{NS[0]}" / "index"
    import numpy as np

    vectors = np.eye(8, 384, dtype=np.float32)
    task = {"kind": "dense", "index": str(index), "threads": 1, "k": 5, "batch_size": 4}
    task |= {"texts": [], "single_texts": [], "vectors": vectors, "single_vectors": vectors[:2]}
    r = in_fresh_process(task)
    assert r["qps_b64"] > 0 and r["qps_b1"] > 0 and r["load_s"] > 0
    assert r["peak_rss_mb"] > r["added_rss_mb"] > 0


def test_growth_slopes_are_cost_exponents():
    report = {
        "config": {"beams": [10, 100]},
        "rows": [
            {"n": 10, "figures": {"ids_s": 1.0, "dense_qps_b1": 100.0}},
            {"n": 100, "figures": {"ids_s": 100.0, "dense_qps_b1": 10.0}},
        ],
    }
    slopes = growth(report)[0]["slopes"]
    assert slopes["ids_s"] == pytest.approx(2.0)  # quadratic
    assert slopes["dense_qps_b1"] == pytest.approx(1.0)  # time per query grows like N
    assert slopes["trie_s"] is None  # not measured


def test_config_rejects_tiny_corpora():
    with pytest.raises(ValueError, match="at least 64"):
        ScaleConfig(ns=(10,))
