"""``nci build``: the recipe rules as pure functions, and whole builds of the synthetic corpus
(every artifact, build.json, a second run that skips every stage, a changed choice that reruns
only the stages from there, an interrupted training that resumes)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from nci import build as B
from nci.manifest import read_manifest
from nci.recipe import CHOICES, TEACHER_WEIGHT, CorpusStats, choose, corpus_stats, training_inputs

# --- the rules -------------------------------------------------------------------------------------

SQUAD = CorpusStats(documents=2067, mean_words=120, train_queries=8276, other_queries=2294)
SCIFACT = CorpusStats(documents=5183, mean_words=214, train_queries=809, other_queries=300)
CRANFIELD = CorpusStats(documents=1400, mean_words=120, train_queries=0, other_queries=225)
FEW_QUERIES = CorpusStats(documents=1400, mean_words=120, train_queries=40, other_queries=225)
LONG_NO_QUERIES = CorpusStats(documents=1400, mean_words=177, train_queries=0, other_queries=225)
LARGE_NO_QUERIES = CorpusStats(documents=50_000, mean_words=100, train_queries=0)

# corpus, --minutes, overrides -> the choices expected (those not named are not checked)
TABLE = [
    ("squad, default budget", SQUAD, None, {},
     {"minutes": 15, "k": 30, "leaf_size": 30, "windows": (64,), "rdrop_alpha": 0.0,
      "encoder_trainable_layers": 0, "centroid_prior": True, "label_smoothing": 0.1}),
    ("squad, 50 minutes: the README's SQuAD recipe, sentences beside the windows", SQUAD, 50, {},
     {"windows": (64, 16), "sentences": True, "rdrop_alpha": 0.0, "encoder_trainable_layers": 2}),
    ("squad, 25 minutes: a frozen encoder, no sentences", SQUAD, 25, {},
     {"windows": (64, 16), "sentences": False, "encoder_trainable_layers": 0}),
    ("sentences override: the layers rule does not count them", SQUAD, 25, {"sentences": True},
     {"sentences": True, "encoder_trainable_layers": 0}),
    ("scifact: long abstracts", SCIFACT, 40, {},
     {"windows": (64,), "sentences": False, "rdrop_alpha": 0.0, "encoder_trainable_layers": 0}),
    ("cranfield: no training queries", CRANFIELD, None, {},
     {"minutes": 15, "windows": (64, 16), "rdrop_alpha": 0.15, "encoder_trainable_layers": 0,
      "teacher_weight": TEACHER_WEIGHT}),
    ("training queries: no distillation", SQUAD, 50, {}, {"teacher_weight": 0.0}),
    ("no training queries, too many input-document pairs for the teacher", LARGE_NO_QUERIES, None, {},
     {"teacher_weight": 0.0}),
    ("teacher override", SQUAD, None, {"teacher_weight": 0.3}, {"teacher_weight": 0.3}),
    ("under 100 training queries count as none", FEW_QUERIES, None, {}, {"rdrop_alpha": 0.15}),
    ("long documents, no training queries: short windows all the same", LONG_NO_QUERIES, None, {},
     {"minutes": 15, "windows": (64, 16)}),
    ("long documents, no training queries, a budget too short to cache both", LONG_NO_QUERIES, 8, {},
     {"windows": (64,)}),
    ("cranfield with an hour: one trainable layer beside R-drop", CRANFIELD, 60, {},
     {"rdrop_alpha": 0.15, "encoder_trainable_layers": 1}),
    ("k override: leaves follow k", SQUAD, None, {"k": 50}, {"k": 50, "leaf_size": 50}),
    ("R-drop override: the layer rule builds on it", SQUAD, 50, {"rdrop_alpha": 0.15},
     {"rdrop_alpha": 0.15, "encoder_trainable_layers": 0}),
    ("windows override: 64 only leaves room for two layers, no sentences", SQUAD, 50, {"windows": (64,)},
     {"windows": (64,), "sentences": False, "encoder_trainable_layers": 2}),
    ("train minutes override", SQUAD, None, {"train_minutes": 45.0},
     {"train_minutes": 45.0, "windows": (64, 16), "encoder_trainable_layers": 2}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "stats", "minutes", "overrides", "expected"), TABLE, ids=[t[0] for t in TABLE]
)
def test_recipe_rules(name, stats, minutes, overrides, expected):
    recipe = choose(stats, minutes, overrides)
    got = recipe.choices()
    assert {key: got[key] for key in expected} == expected
    assert set(recipe.reasons) == {"minutes", *CHOICES} and all(recipe.reasons.values())
    assert recipe.overrides == tuple(n for n in CHOICES if n in overrides)
    for key in overrides:
        assert recipe.reasons[key].startswith("override")
    # the training gets what the other stages' estimate leaves of the budget
    if "train_minutes" not in overrides:
        others = sum(s for stage, s in recipe.estimates_s.items() if stage != "train") / 60
        assert recipe.train_minutes == pytest.approx(recipe.minutes - others, abs=0.1)


def test_default_budget_grows_with_large_corpora_and_small_budgets_are_refused():
    big = CorpusStats(documents=50_000, mean_words=100, train_queries=0)
    recipe = choose(big)
    assert recipe.minutes > 15 and recipe.minutes % 5 == 0 and "estimated" in recipe.reasons["minutes"]
    with pytest.raises(ValueError, match="larger --minutes"):
        choose(SQUAD, minutes=4)
    assert choose(SQUAD, minutes=4, overrides={"train_minutes": 0.5}).train_minutes == 0.5
    with pytest.raises(ValueError, match="unknown recipe choices"):
        choose(SQUAD, overrides={"beam": 5})


def test_no_compare_keeps_no_time_for_the_comparison():
    """nci build --no-compare: the comparison's estimate is 0, so a fixed budget trains longer
    and a default one (small corpora aside, which get a fixed budget) shrinks by it."""
    with_compare, without = choose(SQUAD, 50), choose(SQUAD, 50, compare=False)
    assert with_compare.estimates_s["compare"] > 30 and without.estimates_s["compare"] == 0
    gained = with_compare.estimates_s["compare"] / 60
    assert without.train_minutes == pytest.approx(with_compare.train_minutes + gained, abs=0.11)
    big = CorpusStats(documents=200_000, mean_words=120, train_queries=0, other_queries=20_000)
    assert choose(big, compare=False).minutes < choose(big).minutes


def test_one_thread_slows_the_estimates_and_the_rules_follow():
    """The time model was measured with 2 threads: with 1, embedding, caching and steps take
    twice as long, so the same 50 minutes hold fewer epochs and no trainable layers."""
    two, one = choose(SQUAD, 50, threads=2), choose(SQUAD, 50, threads=1)
    assert choose(SQUAD, 50, threads=16).estimates_s == two.estimates_s
    assert one.estimates_s["embed"] == pytest.approx(2 * two.estimates_s["embed"], abs=0.2)
    assert one.train_minutes < two.train_minutes
    assert two.encoder_trainable_layers == 2 and one.encoder_trainable_layers == 0
    assert "1 torch thread" in one.reasons["minutes"] and "thread" not in two.reasons["minutes"]


def test_the_index_estimate_counts_the_sentences_it_encodes():
    """The sentence methods encode every sentence of corpora up to IndexConfig.sentence_max_docs:
    the index estimate covers SciFact's measured index stage (325 s, 49,992 sentences) and drops
    the sentences above the limit, where none are built."""
    from nci.index import IndexConfig
    from nci.recipe import fixed_costs, sentence_seconds

    assert 325 <= fixed_costs(SCIFACT)["index"] <= 1.5 * 325
    limit = IndexConfig.sentence_max_docs
    at, above = (CorpusStats(documents=n, mean_words=120, train_queries=0) for n in (limit, limit + 1))
    assert sentence_seconds(at) > 0 and sentence_seconds(above) == 0
    assert sentence_seconds(at, slow=2.0) == pytest.approx(2 * sentence_seconds(at))
    recipe = choose(SCIFACT, None)
    assert recipe.minutes > recipe.train_minutes + sentence_seconds(SCIFACT) / 60


def test_training_inputs_count_windows_the_words_allow():
    stats = CorpusStats(documents=10, mean_words=40, train_queries=100)
    # 95 training queries (5 held out); 64-word windows: only the first; 16-word: first + 10
    assert training_inputs(stats, (64,), 10) == 95 + 10
    assert training_inputs(stats, (64, 16), 10) == 95 + 10 * 12


def test_corpus_stats_never_read_test_judgements(synthetic_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    before = corpus_stats(data)
    (data / "qrels" / "test.tsv").write_text("not a qrels file at all\n")
    assert corpus_stats(data) == before
    assert before.documents == 60 and before.train_queries > 100 and before.other_queries > 0


def test_train_options_after_the_double_dash():
    assert B.train_options(["--", "--d-model", "32", "--batch-size", "16"]) == {
        "batch_size": 16,
        "d_model": 32,
    }
    assert B.train_options([]) == {}
    with pytest.raises(ValueError, match="--label-smoothing"):
        B.train_options(["--", "--label-smoothing", "0.2"])
    with pytest.raises(ValueError, match="--teacher-weight"):
        B.train_options(["--", "--teacher-weight", "0.5"])


# --- whole builds -----------------------------------------------------------------------------------

STAGES = ("emb", "ids", "daq", "model", "index")
TINY_TRAIN = [
    "--", "--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--d-ff", "64", "--max-length", "16",
    "--batch-size", "16", "--warmup-steps", "2", "--val-beam", "5", "--epochs", "1",
]  # fmt: skip


def run_build(data: Path, out: Path, encoder: Path, *flags: str) -> dict:
    args = ["--data", str(data), "--out", str(out), "--encoder", str(encoder), "--threads", "1"]
    assert B.main([*args, "--train-minutes", "0.5", "--windows", "64", *flags, *TINY_TRAIN]) == 0
    return json.loads((out / "build.json").read_text())


def statuses(record: dict) -> dict[str, str]:
    return {name: stage["status"] for name, stage in record["stages"].items()}


@pytest.fixture(scope="module")
def built(synthetic_data, tiny_encoder, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "out"
    return out, run_build(synthetic_data, out, tiny_encoder)


def test_build_writes_every_stage_and_build_json(built, capsys):
    out, record = built
    for name in STAGES:
        assert (out / name / "manifest.json").is_file(), name
    assert (out / "index" / "fusion.json").is_file() and (out / "model" / "metrics.jsonl").is_file()
    assert statuses(record) == dict.fromkeys(STAGES, "ran")
    assert record["status"] == "done" and record["wall_seconds"] > 0
    assert record["recipe"]["windows"] == [64] and record["recipe"]["centroid_prior"] is True
    assert record["overrides"] == {"windows": [64], "train_minutes": 0.5}
    assert record["reasons"]["k"].startswith("k=30") and record["train_options"]["d_model"] == 32
    assert record["versions"]["torch"] and record["nci_version"]
    assert all(stage["wall_seconds"] >= 0 for stage in record["stages"].values())
    assert record["stages"]["model"]["wall_seconds"] > 0 and record["stages"]["emb"]["stage_wall_seconds"] > 0
    # the recipe reached the stages
    train_cfg = json.loads((out / "model" / "manifest.json").read_text())["config"]
    assert train_cfg["label_smoothing"] == 0.1 and train_cfg["rdrop_alpha"] == 0.0
    assert train_cfg["centroid_prior"] and train_cfg["max_minutes"] == 0.5
    validation = record["validation"]
    assert validation["best_epoch"] == 1 and 0 <= validation["success@1"] <= validation["success@10"] <= 1
    methods = record["comparison"]["methods"]
    assert list(methods) == ["nci", "dense", "bm25", "fusion"]
    assert record["comparison"]["queries"] > 0
    for row in methods.values():
        assert 0 <= row["success@1"] <= row["success@10"] <= 1 and 0 <= row["ndcg@10"] <= 1


def test_second_run_skips_every_stage(built, synthetic_data, tiny_encoder, capsys):
    out, first = built
    capsys.readouterr()
    record = run_build(synthetic_data, out, tiny_encoder)
    printed = capsys.readouterr().out
    assert statuses(record) == dict.fromkeys(STAGES, "skipped")
    assert record["comparison"] == first["comparison"]
    assert "recipe:" in printed and "| fusion |" in printed and "validation" in printed
    args = ["--data", str(synthetic_data), "--out", str(out), "--encoder", str(tiny_encoder), "--dry-run"]
    assert B.main([*args, "--train-minutes", "0.5", "--windows", "64", *TINY_TRAIN]) == 0
    assert capsys.readouterr().out.count("skipped: manifest matches") == len(STAGES)
    assert B.main([*args, "--train-minutes", "0.5", "--windows", "64,16", *TINY_TRAIN]) == 0
    plan = capsys.readouterr().out
    assert "emb    skipped" in plan and "daq16  no manifest yet" in plan and "model  skipped" not in plan


def test_a_manifest_older_than_a_config_field_counts_it_at_its_default(built, tmp_path):
    """An artifact written before a field existed (``ADDED_FIELDS``) ran as that field's default:
    it matches the default and no other value."""
    from nci.train.config import TrainConfig

    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    del manifest["config"]["contrastive_weight"]
    (out / "model" / "manifest.json").write_text(json.dumps(manifest))
    config = TrainConfig(
        **{k: v for k, v in manifest["config"].items() if k in TrainConfig.__dataclass_fields__}
    )
    inputs = {name: Path(entry["path"]) for name, entry in manifest["inputs"].items()}
    assert B.why_run(out, B.Step("model", "train", config, inputs, lambda _: 0)) is None
    changed = B.Step(
        "model", "train", dataclasses.replace(config, contrastive_weight=1.0), inputs, lambda _: 0
    )
    assert B.why_run(out, changed) == "contrastive_weight 0.0 -> 1.0"


def test_a_changed_choice_reruns_only_the_stages_from_there(built, synthetic_data, tiny_encoder, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    record = run_build(synthetic_data, out, tiny_encoder, "--label-smoothing", "0.2")
    assert statuses(record) == {
        "emb": "skipped",
        "ids": "skipped",
        "daq": "skipped",
        "model": "ran",
        "index": "ran",
    }
    assert record["stages"]["model"]["why"] == "label_smoothing 0.1 -> 0.2"
    record = run_build(synthetic_data, out, tiny_encoder, "--label-smoothing", "0.2", "--k", "8")
    assert statuses(record) == {
        "emb": "skipped",
        "ids": "ran",
        "daq": "skipped",
        "model": "ran",
        "index": "ran",
    }
    assert json.loads((out / "ids" / "config.json").read_text())["k"] == 8


def test_sentences_add_their_stage_and_retrain(built, synthetic_data, tiny_encoder, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    record = run_build(synthetic_data, out, tiny_encoder, "--sentences")
    assert statuses(record) == {
        "emb": "skipped",
        "ids": "skipped",
        "daq": "skipped",
        "sentences": "ran",
        "model": "ran",
        "index": "ran",
    }
    assert record["recipe"]["sentences"] is True
    train_inputs = read_manifest(out / "model", stage="train")["inputs"]
    assert any(Path(v["path"]).name == "sentences" for v in train_inputs.values() if isinstance(v, dict))


def test_an_interrupted_training_resumes_from_its_checkpoint(built, synthetic_data, tiny_encoder, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(built[0], out)
    (out / "model" / "manifest.json").unlink()  # as a build killed before training finished leaves it
    record = run_build(synthetic_data, out, tiny_encoder)
    assert statuses(record) == {
        "emb": "skipped",
        "ids": "skipped",
        "daq": "skipped",
        "model": "resumed",
        "index": "ran",
    }


def test_a_corpus_without_training_queries(synthetic_data, tiny_encoder, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_data, data)
    (data / "qrels" / "train.tsv").unlink()
    record = run_build(data, tmp_path / "out", tiny_encoder)
    assert record["corpus"]["train_queries"] == 0 and record["recipe"]["rdrop_alpha"] == 0.15
    assert "R-drop kept" in record["reasons"]["rdrop_alpha"]
    assert (
        record["validation"]["best_epoch"] is None and "no validation queries" in record["validation"]["why"]
    )
    assert record["fusion"]["fitted"] is False and record["comparison"]["queries"] > 0
