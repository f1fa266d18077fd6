"""``nci bench train``: training cost measured on a slice and extrapolated (tiny encoder)."""

from __future__ import annotations

import json

import pytest

from nci.bench.train_cost import TrainCostConfig, main, run_train_cost


def test_train_cost_times_both_recipes_and_extrapolates_from_its_own_figures(
    tiny_encoder, synthetic_data, tmp_path
):
    cfg = TrainCostConfig(docs=30, windows=(8,), encoder=str(tiny_encoder), n_heads=4, target_docs=3000)
    report = run_train_cost(synthetic_data, tmp_path / "out", cfg, work=tmp_path / "work")
    assert report["docs"] == 30
    cpu, full = report["recipes"]["cpu"], report["recipes"]["cuda-path"]
    assert cpu["encoder_trainable_layers"] == 0 and full["encoder_trainable_layers"] == -1
    assert (cpu["batch_size"], full["batch_size"]) == (128, 256)
    for r in (cpu, full):
        assert r["examples_per_s"] > 0 and r["steps"] >= 1
    # only the frozen-encoder recipe caches encoder states
    assert cpu["cache_s_per_1k"] > 0 and cpu["cache_mb_per_1k"] > 0 and "cache_s_per_1k" not in full
    assert (tmp_path / "work" / "train-cpu" / "cache").is_dir()
    x = report["extrapolated"]
    assert x["inputs"] == round(report["pseudo_queries_per_doc"] * 3000)
    expected_train_h = cfg.epochs * x["inputs"] / cpu["examples_per_s"] / 3600
    assert x["cpu"]["train_h"] == pytest.approx(expected_train_h, abs=0.05)
    total_h = x["embed_h"] + x["cpu"]["cache_h"] + expected_train_h
    assert x["cpu"]["total_h"] == pytest.approx(total_h, abs=0.1)
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    assert written["recipes"] == report["recipes"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| cpu | 128 |" in md and "| cuda-path | 256 |" in md


def test_train_cost_refuses_bad_arguments(synthetic_data, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--data", str(synthetic_data), "--out", str(tmp_path / "o"), "--recipes", "gpu"])
    assert e.value.code == 2 and "recipes must be among" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "no corpus.jsonl" in capsys.readouterr().err
    with pytest.raises(ValueError, match="fewer than --docs"):
        run_train_cost(synthetic_data, tmp_path / "o", TrainCostConfig(docs=10_000), tmp_path / "w")
