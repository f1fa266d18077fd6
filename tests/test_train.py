"""Training: the loss, the data mix, and whole tiny runs (resume, signals, two processes)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nci.decoding import beam_search
from nci.manifest import ArtifactError, read_manifest, write_manifest
from nci.train import (
    TrainConfig,
    TrainingData,
    epoch_batches,
    epoch_order,
    lr_factor,
    main,
    parse_source_weights,
    rdrop_loss,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, synthetic_data, tiny_encoder):
    """Semantic ids (over random 32-d vectors) and doc-as-query pseudo-queries for the synthetic corpus."""
    from nci.data import load_corpus
    from nci.querygen import DaqConfig, write_daq
    from nci.semantic_ids import IdsConfig, build
    from nci.synthetic import make_vectors

    root = tmp_path_factory.mktemp("train_inputs")
    doc_ids = list(load_corpus(synthetic_data))
    emb = root / "emb"
    emb.mkdir()
    np.save(emb / "embeddings.npy", make_vectors(len(doc_ids), 32, n_clusters=6, seed=0))
    (emb / "doc_ids.txt").write_text("\n".join(doc_ids) + "\n")
    write_manifest(emb, stage="embed")
    build(emb, root / "ids", IdsConfig(k=4, leaf_size=4, seed=0))
    write_daq(synthetic_data, root / "daq", DaqConfig(n=1, window=8))
    return {"data": synthetic_data, "ids": root / "ids", "daq": root / "daq", "encoder": tiny_encoder}


def tiny_args(inputs, out: Path, *extra: str) -> list[str]:
    return [
        "--data", str(inputs["data"]), "--ids", str(inputs["ids"]), "--queries", str(inputs["daq"]),
        "--out", str(out), "--encoder", str(inputs["encoder"]), "--device", "cpu",
        "--d-model", "32", "--n-heads", "2", "--n-layers", "1", "--d-ff", "64", "--max-length", "16",
        "--batch-size", "16", "--warmup-steps", "2", "--val-fraction", "0.1", "--val-beam", "5",
        "--threads", "1", *extra,
    ]  # fmt: skip


def weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "checkpoint" / "last" / "weights.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# --- pieces ------------------------------------------------------------------------------------


def test_rdrop_term_is_zero_without_dropout_and_positive_with_it(tiny_encoder):
    from nci.encoder import load_encoder
    from nci.model import NCIConfig, NCIModel, choice_labels
    from nci.train import TrainingForward

    tokenizer, encoder = load_encoder(tiny_encoder)
    targets = torch.tensor([[2, 6, 1], [3, 1, 0]])
    feats = {"states": torch.randn(2, 5, 32), "attention_mask": torch.ones(2, 5, dtype=torch.long)}
    kls = {}
    for dropout in (0.0, 0.3):
        cfg = NCIConfig(
            k=4,
            max_depth=2,
            encoder_hidden=32,
            encoder_layers=2,
            d_model=32,
            n_heads=2,
            n_layers=1,
            d_ff=64,
            dropout=dropout,
        )
        torch.manual_seed(0)
        forward = TrainingForward(NCIModel(cfg, encoder, tokenizer)).train()
        logits = forward(feats, targets, torch.zeros_like(targets), twice=True)
        assert logits.shape == (4, 3, 5)
        loss, ce, kl = rdrop_loss(logits, choice_labels(targets, 4), alpha=0.15)
        kls[dropout] = float(kl)
        assert torch.isclose(loss, ce + 0.15 * kl)
    assert kls[0.0] == 0.0
    assert kls[0.3] > 1e-6


def test_rdrop_kl_is_the_symmetric_kl_over_labelled_positions():
    torch.manual_seed(0)
    logits = torch.randn(4, 3, 5)
    labels = torch.tensor([[1, 4, -100], [0, -100, -100]])
    _, _, kl = rdrop_loss(logits, labels, alpha=1.0)
    p, q = logits[:2][labels != -100].log_softmax(-1), logits[2:][labels != -100].log_softmax(-1)
    kl_pq = torch.nn.functional.kl_div(q, p, log_target=True, reduction="batchmean")
    kl_qp = torch.nn.functional.kl_div(p, q, log_target=True, reduction="batchmean")
    torch.testing.assert_close(kl, 0.5 * (kl_pq + kl_qp))
    loss, ce, kl0 = rdrop_loss(logits[:2], labels, alpha=0.0)
    assert float(kl0) == 0.0 and torch.equal(loss, ce)


def test_ranks_averaging_over_the_global_batch_give_the_one_process_loss():
    """Two ranks' halves of a batch whose ids have different lengths: with ``positions`` (the
    batch's labelled positions per rank) the mean of the ranks' losses is the whole batch's loss,
    with or without R-drop; each averaging over its own positions is not."""
    torch.manual_seed(0)
    labels = torch.tensor([[1, 4, 2, -100], [0, 3, -100, -100], [2, 2, 1, 0], [4, -100, -100, -100]])
    logits = torch.randn(8, 4, 5)  # two passes of four rows
    positions = float((labels != -100).sum()) / 2
    for alpha in (0.0, 0.5):
        whole = rdrop_loss(logits if alpha else logits[:4], labels, alpha, 0.1)[0]
        parts, own = [], []
        for rows in ([0, 2], [1, 3]):
            two = torch.cat([logits[rows], logits[[r + 4 for r in rows]]]) if alpha else logits[rows]
            parts.append(rdrop_loss(two, labels[rows], alpha, 0.1, positions)[0])
            own.append(rdrop_loss(two, labels[rows], alpha, 0.1)[0])
        torch.testing.assert_close(sum(parts) / 2, whole)
        assert abs(float(sum(own) / 2 - whole)) > 1e-3


def test_rank_parts_cover_each_global_batch_once():
    """Every rank gets ceil(n / world) rows; the real ones (every world-th) cover the batch
    exactly once, and a rank one short is padded with the batch's first rows."""
    from nci.train.ddp import Dist, rank_part

    for n, world in [(16, 2), (17, 2), (1, 2), (10, 4), (5, 1)]:
        batch = np.arange(100, 100 + n)
        parts = [rank_part(batch, Dist(rank=r, world=world)) for r in range(world)]
        assert {len(rows) for rows, _ in parts} == {-(-n // world)}
        real = np.concatenate([rows[:n_real] for rows, n_real in parts])
        assert sorted(real.tolist()) == batch.tolist()
        for rows, n_real in parts:
            assert rows[n_real:].tolist() == batch[: len(rows) - n_real].tolist()


def test_epoch_order_follows_source_weights_and_is_seeded():
    data = TrainingData(
        texts=[], example_text=np.arange(30), example_doc=np.arange(30),
        example_source=np.repeat([0, 1, 2], 10), sources=["query", "daq", "d2q"], val=[], train_probe=[],
        targets=np.zeros(0), nodes=np.zeros(0),
    )  # fmt: skip
    weights = parse_source_weights("query=2,daq=0.5,d2q=0")
    order = epoch_order(data, weights, seed=0, epoch=3)
    counts = np.bincount(data.example_source[order], minlength=3)
    assert counts.tolist() == [20, 5, 0]
    assert np.array_equal(np.bincount(order[order < 10]), np.full(10, 2))  # every query twice
    assert np.array_equal(order, epoch_order(data, weights, seed=0, epoch=3))
    assert not np.array_equal(order, epoch_order(data, weights, seed=0, epoch=4))


def test_length_buckets_keep_every_example_and_cut_padding():
    rng = np.random.default_rng(0)
    lengths = rng.choice([12, 24, 64], size=1000)  # questions, short and long windows
    order = rng.permutation(1000)

    def padded(batches):  # tokens a batch pads to: its longest input times its size
        return sum(len(b) * lengths[b].max() for b in batches)

    plain = epoch_batches(order, lengths, 16, seed=0, epoch=0, buckets=False)
    bucketed = epoch_batches(order, lengths, 16, seed=0, epoch=0, buckets=True)
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(1000))
    assert max(len(b) for b in bucketed) == 16 and len(bucketed) == len(plain)
    assert padded(bucketed) < 0.75 * padded(plain)
    # most batches hold one length only
    assert np.mean([len(set(lengths[b])) == 1 for b in bucketed]) > 0.8
    again = epoch_batches(order, lengths, 16, seed=0, epoch=0, buckets=True)
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again, strict=True))
    other = epoch_batches(order, lengths, 16, seed=0, epoch=1, buckets=True)
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, other, strict=True))


def test_source_weights_and_config_validation():
    assert parse_source_weights("query=1, daq=0.25") == {"query": 1.0, "daq": 0.25}
    for bad in ("query", "query=-1", "=2", "daq=x"):
        with pytest.raises(ValueError, match="bad source weight"):
            parse_source_weights(bad)
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")


def test_learning_rate_warms_up_then_decays_to_the_floor():
    values = [lr_factor(s, total=100, warmup=10, min_ratio=0.1) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[9:], values[10:], strict=False))
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


# --- whole runs ----------------------------------------------------------------------------------


def test_train_writes_a_loadable_model_with_metrics(inputs, tmp_path):
    from nci.model import NCIModel
    from nci.semantic_ids import load_semantic_ids

    out = tmp_path / "model"
    assert main(tiny_args(inputs, out, "--epochs", "2", "--centroid-prior")) == 0
    manifest = read_manifest(out, stage="train")
    assert manifest["counts"]["epochs"] == 2
    assert manifest["counts"]["examples_query"] > 0 and manifest["counts"]["examples_daq"] > 0
    assert manifest["counts"]["validation_queries"] > 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert 0 <= r["val_success@1"] <= r["val_success@10"] <= 1
        assert r["ce"] > 0 and r["kl"] >= 0 and r["examples_per_s"] > 0
    assert (out / "training_curve.png").stat().st_size > 0
    assert list((out / "cache").glob("features-*.states.npy"))
    assert manifest["best"]["epoch"] in (1, 2)

    model = NCIModel.from_pretrained(out)
    assert model.config.centroid_prior and model.config.d_model == 32
    sem = load_semantic_ids(inputs["ids"])
    batch = model.tokenize(["kalo mine", "rutavo"])
    docs, scores = beam_search(
        model, *model.encode(batch["input_ids"], batch["attention_mask"]), sem.trie, beam=3
    )
    assert docs.shape == (2, 3) and (docs >= 0).all()

    # a second run over the same inputs reuses the cached encoder states
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()}
    with pytest.raises(SystemExit):  # a finished run is not overwritten by accident
        main(tiny_args(inputs, out, "--epochs", "1"))
    assert main(tiny_args(inputs, out, "--epochs", "1", "--max-steps", "2", "--overwrite")) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cache").iterdir()} == before
    manifest = read_manifest(out, stage="train")
    assert manifest["stopped"] == "max_steps" and manifest["counts"]["steps"] == 2


def test_interrupted_and_resumed_run_ends_with_the_same_weights(inputs, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(tiny_args(inputs, straight, "--epochs", "2")) == 0
    steps = read_manifest(straight, stage="train")["counts"]["steps"]
    # stop in the middle of the first epoch, then continue
    assert main(tiny_args(inputs, resumed, "--epochs", "2", "--max-steps", str(steps // 4))) == 0
    assert json.loads((resumed / "checkpoint" / "last" / "state.json").read_text())["batch"] == steps // 4
    with pytest.raises(SystemExit):  # the model may not change on resume
        main(tiny_args(inputs, resumed, "--resume", "--n-layers", "2"))
    with pytest.raises(SystemExit):  # nor the training inputs
        main(tiny_args(inputs, resumed, "--resume", "--queries", str(inputs["daq"])))
    assert main(tiny_args(inputs, resumed, "--resume")) == 0
    assert read_manifest(resumed, stage="train")["counts"]["steps"] == steps
    assert_same_weights(weights(straight), weights(resumed))
    a = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_success@1"] for r in a] == [r["val_success@1"] for r in b]
    assert [r["loss"] for r in a][1:] == [r["loss"] for r in b][1:]  # epoch 1 was split over two runs


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_sigint_saves_a_checkpoint_and_exits_nonzero(inputs, tmp_path):
    out = tmp_path / "model"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nci.train", *tiny_args(inputs, out, "--epochs", "500")],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    state = out / "checkpoint" / "last" / "state.json"
    deadline = time.time() + 120
    while not state.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, output
    assert "--resume" in output
    saved = json.loads(state.read_text())
    assert 1 <= saved["epoch"] < 500
    assert not (out / "manifest.json").exists()  # not a finished model
    # continue it, with fewer epochs than it was started with
    assert main(tiny_args(inputs, out, "--resume", "--epochs", str(saved["epoch"] + 1))) == 0
    assert read_manifest(out, stage="train")["counts"]["epochs"] == saved["epoch"] + 1


def test_two_processes_end_with_identical_weights(inputs, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "nci.train", *tiny_args(inputs, out, "--epochs", "1")]  # fmt: skip
    result = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = read_manifest(out, stage="train")
    digests = manifest["last_parameter_sha256"]
    assert manifest["counts"]["processes"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    from nci.train import state_digest

    assert state_digest(weights(out)) == digests[0]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["val_success@10"] is not None


def test_bad_inputs_fail_with_clear_messages(inputs, tmp_path):
    from nci.manifest import write_manifest as wm

    bad = tmp_path / "bad_daq"
    bad.mkdir()
    (bad / "pseudo_queries.jsonl").write_text(
        json.dumps({"doc_id": "nope", "text": "x", "source": "daq"}) + "\n"
    )
    wm(bad, stage="querygen")
    with pytest.raises(SystemExit) as e:
        main(tiny_args(inputs, tmp_path / "m", "--queries", str(bad)))
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(tiny_args(inputs, tmp_path / "m2", "--resume"))


@pytest.mark.parametrize("layers", [1, -1])
def test_trainable_encoder_layers_are_trained_and_the_rest_frozen(inputs, tmp_path, layers):
    from safetensors.torch import load_file

    out = tmp_path / "model"
    extra = [
        "--epochs",
        "1",
        "--max-steps",
        "3",
        "--encoder-trainable-layers",
        str(layers),
        "--encoder-lr",
        "1e-2",
    ]
    if layers < 0:
        extra += ["--precision", "bf16"]  # the autocast path, on CPU
    assert main(tiny_args(inputs, out, *extra)) == 0
    before = load_file(str(inputs["encoder"] / "model.safetensors"))
    after = load_file(str(out / "encoder" / "model.safetensors"))
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    top = {n for n in before if "layer.1." in n}
    if layers == 1:
        assert changed and changed <= top  # only the top layer moved
        assert list((out / "cache").glob("features-*.states.npy"))  # states below it were cached
    else:
        assert any("embeddings" in n for n in changed) and any("layer.0." in n for n in changed)
        assert not (out / "cache").exists()


def test_feature_cache_computes_only_new_texts(tiny_encoder, tmp_path):
    from nci.encoder import load_encoder
    from nci.features import cached_states
    from nci.model import NCIConfig, NCIModel

    tokenizer, encoder = load_encoder(tiny_encoder)
    cfg = NCIConfig(
        k=4, max_depth=2, encoder_hidden=32, encoder_layers=2, max_length=16, d_model=32, n_heads=2
    )
    model = NCIModel(cfg, encoder, tokenizer)
    first, more = ["kalo mine", "a much longer text about rutavo zibedo", "ta"], ["fagu hijo", "kalo mine"]
    cache = tmp_path / "cache"
    store = cached_states(model, first, cache, "enc-a", progress=False)
    again = cached_states(model, first + more, cache, "enc-a", progress=False)
    assert len(list(cache.glob("features-*.json"))) == 2
    # the second call encoded only the one new text
    assert sorted(json.loads(p.read_text())["inputs"] for p in cache.glob("features-*.json")) == [1, 3]
    fresh = cached_states(model, first + more, tmp_path / "fresh", "enc-a", progress=False)
    index = np.arange(5)
    torch.testing.assert_close(again.batch(index, "cpu")["states"], fresh.batch(index, "cpu")["states"])
    assert torch.equal(
        again.batch(index, "cpu")["attention_mask"], fresh.batch(index, "cpu")["attention_mask"]
    )
    torch.testing.assert_close(
        store.batch(np.arange(3), "cpu")["states"], fresh.batch(np.arange(3), "cpu")["states"]
    )
    batch = model.tokenize(first + more)
    with torch.no_grad():
        states = model.lower_states(batch["input_ids"], batch["attention_mask"])
    got = fresh.batch(index, "cpu")
    mask = got["attention_mask"].bool()
    torch.testing.assert_close(got["states"][mask], states[:, : mask.shape[1]][mask], atol=2e-3, rtol=2e-3)
    # another encoder: the old shards are dropped, not read
    cached_states(model, more, cache, "enc-b", progress=False)
    metas = [json.loads(p.read_text()) for p in cache.glob("features-*.json")]
    assert [m["encoder_fingerprint"] for m in metas] == ["enc-b"]


def fake_clock(monkeypatch, slower_after: float = float("inf")) -> None:
    """Replace the clock of every nci.train module that reads one: one second per reading (a step
    reads it a few times), three seconds per reading once ``slower_after`` seconds have passed."""
    import importlib
    import pkgutil

    import nci.train

    class Clock:
        now = 0.0

        @classmethod
        def time(cls) -> float:
            cls.now += 1.0 if cls.now < slower_after else 3.0
            return cls.now

    patched = []
    for info in pkgutil.iter_modules(nci.train.__path__):
        module = importlib.import_module(f"nci.train.{info.name}")
        if getattr(module, "time", None) is time:
            monkeypatch.setattr(module, "time", Clock)
            patched.append(info.name)
    assert {"budget", "loop"} <= set(patched)


def test_time_budget_plans_steps_and_validates_a_partial_last_epoch(inputs, tmp_path, monkeypatch):
    """With a clock where every step costs the same, --max-minutes plans the schedule in steps:
    training ends inside an epoch, that epoch is validated, and the learning rate reaches its floor."""
    fake_clock(monkeypatch)
    out = tmp_path / "model"
    assert main(tiny_args(inputs, out, "--epochs", "50", "--max-minutes", "3", "--min-lr-ratio", "0.1")) == 0
    manifest = read_manifest(out, stage="train")
    history = manifest["history"]
    assert manifest["stopped"] == "max_minutes"
    steps_per_epoch = history[0]["step"]
    assert len(history) >= 2 and history[-1]["step"] % steps_per_epoch != 0  # a partial last epoch
    assert history[-1]["val_success@1"] is not None
    assert history[-1]["lr"] == pytest.approx(1e-4, rel=0.05)  # the cosine ended at the floor
    assert history[-1]["elapsed"] <= 180  # trained and validated within the budget


def test_time_budget_replans_when_the_machine_slows_inside_an_epoch(inputs, tmp_path, monkeypatch):
    """When steps get three times slower partway through, the plan shrinks within the epoch: every
    trained step is validated and training still ends within the budget."""
    fake_clock(monkeypatch, slower_after=100)
    out = tmp_path / "model"
    # small batches: one long epoch, so only a re-plan inside it can help
    assert main(tiny_args(inputs, out, "--epochs", "50", "--max-minutes", "4", "--batch-size", "2")) == 0
    manifest = read_manifest(out, stage="train")
    history = manifest["history"]
    assert manifest["stopped"] == "max_minutes"
    assert manifest["counts"]["steps"] == history[-1]["step"]  # no unvalidated steps at the end
    assert history[-1]["val_success@1"] is not None
    assert history[-1]["elapsed"] - history[-1]["val_seconds"] <= 240  # trained within the budget


def test_time_budget_stops_cleanly_and_still_writes_the_model(inputs, tmp_path):
    from nci.model import NCIModel

    out = tmp_path / "model"
    assert main(tiny_args(inputs, out, "--epochs", "50", "--max-minutes", "0.0001")) == 0
    manifest = read_manifest(out, stage="train")
    assert manifest["stopped"] == "max_minutes" and manifest["counts"]["steps"] == 1
    assert (out / "checkpoint" / "last" / "state.json").is_file()
    NCIModel.from_pretrained(out)


def test_contrastive_loss_is_the_cross_entropy_of_each_query_over_the_documents(monkeypatch):
    import torch.nn.functional as F

    from nci.train import loss as loss_module

    torch.manual_seed(0)
    docs_vectors = F.normalize(torch.randn(6, 8), dim=-1)
    query = F.normalize(torch.randn(4, 8), dim=-1)  # two passes of two rows
    docs = torch.tensor([3, 5])
    # one real row: the padding row's document plays no part
    got = loss_module.contrastive_loss(query, docs_vectors, docs, n_real=1, scale=20.0)
    # a data-parallel rank with padding only adds nothing (not NaN); one averaging over its share
    # of the global batch (``examples``) gives the mean over the global batch's rows
    assert float(loss_module.contrastive_loss(query, docs_vectors, docs, n_real=0, examples=1.0)) == 0.0
    halves = [
        loss_module.contrastive_loss(query[[r, r + 2]], docs_vectors, docs[[r]], 1, 1.0) for r in (0, 1)
    ]
    whole = loss_module.contrastive_loss(query, docs_vectors, docs, n_real=2)
    torch.testing.assert_close(sum(halves) / 2, whole)
    logits = 20.0 * query @ docs_vectors.T
    want = F.cross_entropy(logits[[0, 2]], torch.tensor([3, 3]))
    torch.testing.assert_close(got, want)
    # above the cap the candidates are the batch's documents and a sample: the loss is the
    # cross-entropy over that subset, with each row's label on its own document
    monkeypatch.setattr(loss_module, "CONTRAST_MAX_DOCS", 2)
    torch.manual_seed(1)
    sampled = loss_module.contrastive_loss(query, docs_vectors, docs, n_real=2, scale=20.0)
    torch.manual_seed(1)
    candidates = torch.unique(torch.cat([docs, torch.randint(6, (2,))]))
    sub = 20.0 * query @ docs_vectors[candidates].T
    labels = torch.tensor([(candidates == d).nonzero().item() for d in docs.tolist()])
    torch.testing.assert_close(sampled, F.cross_entropy(sub, labels.repeat(2)))


def test_contrastive_term_pulls_the_pooled_query_toward_its_document(inputs, tmp_path):
    """With --contrastive-weight, a run trains the top encoder layer so that the training inputs'
    pooled queries score their own documents higher (a lower contrastive loss) than a run
    without it; a frozen encoder is refused."""
    from nci.model import NCIModel, pooled_query
    from nci.semantic_ids import load_semantic_ids
    from nci.train.config import TrainConfig as Config
    from nci.train.data import load_training_data
    from nci.train.loss import contrastive_loss

    sem = load_semantic_ids(inputs["ids"])
    data = load_training_data(inputs["data"], sem, [inputs["daq"]], Config())
    centroids = torch.from_numpy(np.array(sem.centroids)[data.nodes[:, -1]])
    vectors = torch.nn.functional.normalize(centroids, dim=-1)
    texts = [data.texts[i] for i in data.example_text[:64]]
    docs = torch.from_numpy(data.example_doc[:64])

    def loss(out: Path) -> float:
        model = NCIModel.from_pretrained(out).eval()
        batch = model.tokenize(texts)
        memory, mask = model.encode(batch["input_ids"], batch["attention_mask"])
        return float(contrastive_loss(pooled_query(memory, mask), vectors, docs, len(docs)))

    common = [
        "--epochs",
        "3",
        "--encoder-trainable-layers",
        "1",
        "--encoder-lr",
        "1e-2",
        "--rdrop-alpha",
        "0",
    ]
    assert main(tiny_args(inputs, tmp_path / "plain", *common)) == 0
    assert main(tiny_args(inputs, tmp_path / "contrast", *common, "--contrastive-weight", "1")) == 0
    assert loss(tmp_path / "contrast") < 0.8 * loss(tmp_path / "plain")
    # refused with a frozen encoder (the CPU default), before --overwrite removes the run there
    with pytest.raises(SystemExit) as e:
        main(tiny_args(inputs, tmp_path / "plain", "--contrastive-weight", "1", "--overwrite"))
    assert e.value.code == 2
    assert (tmp_path / "plain" / "model.safetensors").is_file()


def test_teacher_targets_spread_a_share_over_the_teachers_documents_under_each_prefix():
    """k=3, the row's document 0.1: at the first digit the teacher's documents 0.1, 0.2 (weights
    0.5, 0.3) and 1.0 (0.2) share the spread; at the second only those under prefix 0; at END
    only the document itself. A padding row gets no target, and one-hot targets give the loss of
    the labels themselves (label smoothing included)."""
    from nci.model import END, choice_labels
    from nci.semantic_ids import digit_to_token
    from nci.train.loss import teacher_targets

    k = 3

    def tokens(*ids):
        return torch.tensor([[digit_to_token(t, d, k) for t, d in enumerate(i)] + [END] for i in ids])

    labels = choice_labels(tokens((0, 1), (2, 2)), k)
    labels[1] = -100  # padding row
    teacher = choice_labels(torch.stack([tokens((0, 1), (0, 2), (1, 0))] * 2), k)  # [2, 3, 3]
    weights = torch.tensor([[0.5, 0.3, 0.2]] * 2)
    soft = teacher_targets(labels, teacher, weights, k, share=0.4)
    torch.testing.assert_close(
        soft[0, 0], 0.6 * torch.tensor([1.0, 0, 0, 0]) + 0.4 * torch.tensor([0.8, 0.2, 0, 0])
    )
    torch.testing.assert_close(
        soft[0, 1], 0.6 * torch.tensor([0, 1.0, 0, 0]) + 0.4 * torch.tensor([0, 0.625, 0.375, 0])
    )
    torch.testing.assert_close(soft[0, 2], torch.tensor([0, 0, 0, 1.0]))
    assert float(soft[1].abs().sum()) == 0.0
    # a teacher with none of its documents under the row's prefix leaves the label alone
    far = choice_labels(torch.stack([tokens((2, 0), (2, 1), (1, 0))] * 2), k)
    lone = teacher_targets(labels, far, weights, k, share=0.4)
    torch.testing.assert_close(lone[0, 1], torch.tensor([0, 1.0, 0, 0]))
    # one-hot soft targets: the hard-label loss, with and without R-drop's two passes
    logits = torch.randn(4, 3, k + 1)
    hard = torch.nn.functional.one_hot(labels.clamp(min=0), k + 1).float() * (labels != -100)[..., None]
    for alpha, rows in ((0.0, logits[:2]), (0.5, logits)):
        want = rdrop_loss(rows, labels, alpha, label_smoothing=0.1)
        got = rdrop_loss(rows, labels, alpha, label_smoothing=0.1, soft=hard)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)
    # averaging over ``positions`` (a data-parallel rank's share: here the row's 3 labelled
    # positions) gives the batch's own mean with soft targets too
    torch.testing.assert_close(
        rdrop_loss(logits[:2], labels, 0.0, positions=3.0, soft=soft)[0],
        rdrop_loss(logits[:2], labels, 0.0, soft=soft)[0],
    )


def test_teacher_lists_are_dense_retrievals_top_documents_and_train(inputs, tmp_path):
    """--teacher-weight: each input's teacher is the documents ranked by the cosine of its pooled
    (untrained) encoder output against the documents' embeddings, weighted by a softmax; a run
    with it trains and records it."""
    import torch.nn.functional as F

    from nci.features import cached_states
    from nci.model import pooled_query
    from nci.model_build import build_model
    from nci.semantic_ids import load_semantic_ids
    from nci.train.config import TrainConfig as Config
    from nci.train.data import load_training_data
    from nci.train.prepare import TEACHER_TEMPERATURE, TEACHER_TOP, teacher_lists

    sem = load_semantic_ids(inputs["ids"])
    cfg = Config(
        encoder=str(inputs["encoder"]), d_model=32, n_heads=2, n_layers=1, d_ff=64, max_length=16,
        encoder_trainable_layers=1, teacher_weight=0.5, precision="fp32",
    )  # fmt: skip
    data = load_training_data(inputs["data"], sem, [inputs["daq"]], cfg)
    model = build_model(cfg, sem)
    store = cached_states(model, data.texts, tmp_path / "cache", "fp", "cpu")
    docs, w = teacher_lists(sem, data, model, store, cfg, torch.device("cpu"), inputs["data"])
    m = min(TEACHER_TOP, len(sem.doc_ids))
    assert docs.shape == w.shape == (len(data.texts), m)
    model.eval()
    batch = model.tokenize(data.texts[:20])
    with torch.no_grad():
        memory, mask = model.encode(batch["input_ids"], batch["attention_mask"])
    vectors = F.normalize(torch.from_numpy(np.array(sem.centroids)[data.nodes[:, -1]]).float(), dim=-1)
    cosines = pooled_query(memory, mask) @ vectors.T
    scores = cosines.topk(m).values
    # the lists' documents carry the top cosines, in order (compared by value: the cached states
    # are fp16, so near-ties may swap), weighted by their softmax
    torch.testing.assert_close(cosines.gather(1, docs[:20].long()), scores, atol=2e-3, rtol=0)
    torch.testing.assert_close(w[:20], torch.softmax(scores / TEACHER_TEMPERATURE, -1), atol=0.05, rtol=0)
    # the encoder's sentence embedding is what the teacher scores: a projected decoder is refused
    narrow = build_model(dataclasses.replace(cfg, d_model=16, centroid_prior=False), sem)
    with pytest.raises(ValueError, match="--d-model"):
        teacher_lists(sem, data, narrow, store, cfg, torch.device("cpu"), inputs["data"])
    # each training example is taught by its own input text's list
    from types import SimpleNamespace

    from nci.model import choice_labels
    from nci.train.loop import step_teacher_targets
    from nci.train.loss import teacher_targets

    rows = np.array([5, 0, 17])
    targets = torch.from_numpy(data.targets)
    labels = choice_labels(targets[torch.from_numpy(data.example_doc[rows])], sem.k)
    run = SimpleNamespace(teacher=(docs, w), data=data, targets=targets, model=model, cfg=cfg)
    got = step_teacher_targets(run, rows, labels)
    for i, row in enumerate(rows):
        t = data.example_text[row]
        want = teacher_targets(
            labels[i : i + 1], choice_labels(targets[docs[t].long()][None], sem.k), w[t][None], sem.k, 0.5
        )
        torch.testing.assert_close(got[i : i + 1], want)
    assert step_teacher_targets(SimpleNamespace(teacher=None), rows, labels) is None
    # a run with it: trains, records the weight, and its loss is not the plain run's
    out = tmp_path / "teach"
    common = ["--epochs", "1", "--rdrop-alpha", "0"]
    assert main(tiny_args(inputs, out, *common, "--teacher-weight", "0.5")) == 0
    assert json.loads((out / "train_config.json").read_text())["teacher_weight"] == 0.5
    assert main(tiny_args(inputs, tmp_path / "plain", *common)) == 0
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    plain = [json.loads(line) for line in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert first[0]["ce"] != plain[0]["ce"]
    with pytest.raises(ValueError, match="teacher_weight"):
        Config(teacher_weight=1.0)


def test_fused_teacher_scores_are_the_zscore_fusion_of_dense_and_bm25():
    """--teacher-lexical: each document's teacher score is dense retrieval's and BM25's zscore
    fusion (as the fusion method computes it over each part's top list), in units of the dense
    list's standard deviation; at 0 the teacher's weights are dense retrieval's, at 1 its ranking
    is BM25's."""
    from nci.retrieval.fusion import normalised
    from nci.train.prepare import TEACHER_TEMPERATURE, fused_scores, teacher_weights

    gen = torch.Generator().manual_seed(0)
    cosines = torch.rand(4, 40, generator=gen)
    depth = 12
    lex_docs = torch.stack([torch.randperm(40, generator=gen)[:depth] for _ in range(4)])
    lex_scores = torch.rand(4, depth, generator=gen).sort(descending=True).values * 9
    lex_scores[1, 5:] = 0  # BM25 found only five documents sharing a term
    lex_scores[3] = 0  # nor any for the last input
    dense_top = cosines.topk(depth)
    spread = dense_top.values.std(-1, unbiased=False)
    for row in range(4):
        fused = fused_scores(cosines, lex_docs, lex_scores, 0.5, depth)[row]
        want = torch.zeros(40, dtype=torch.float64)
        dense_z = normalised(dense_top.values[row].tolist(), "zscore")
        want[dense_top.indices[row]] += 0.5 * torch.tensor(dense_z, dtype=torch.float64)
        listed = torch.zeros(40, dtype=torch.bool)
        listed[dense_top.indices[row]] = True
        found = lex_scores[row] > 0
        if found.any():
            lex_z = normalised(lex_scores[row][found].tolist(), "zscore")
            want[lex_docs[row][found]] += 0.5 * torch.tensor(lex_z, dtype=torch.float64)
            listed[lex_docs[row][found]] = True
        # what neither list holds is no candidate (-inf), as in the fusion method
        want = torch.where(listed, want * spread[row].double(), -torch.inf)
        torch.testing.assert_close(fused.double(), want, atol=1e-5, rtol=1e-5)
    # at 0, the softmax over the top documents is dense retrieval's own
    plain = fused_scores(cosines, lex_docs, lex_scores, 0.0, depth).topk(10)
    assert torch.equal(plain.indices, cosines.topk(10).indices)
    torch.testing.assert_close(
        torch.softmax(plain.values / TEACHER_TEMPERATURE, -1),
        torch.softmax(cosines.topk(10).values / TEACHER_TEMPERATURE, -1),
    )
    # at 1, BM25's ranking (the documents it found, best first; its lowest scores 0, as in fusion)
    lexical = fused_scores(cosines, lex_docs, lex_scores, 1.0, depth)
    assert torch.equal(lexical[0].topk(depth).indices, lex_docs[0])
    assert torch.equal(lexical[1].topk(5).indices, lex_docs[1, :5])
    assert torch.isfinite(lexical[1]).sum() == 5 and torch.isinf(lexical[3]).all()
    # the teacher's weights go to listed documents only: none past BM25's five, none for a row
    # where it found nothing (whose targets then stay the labels)
    weights = teacher_weights(lexical.topk(10).values)
    assert torch.all(weights[1, 5:] == 0) and weights[1].sum() == pytest.approx(1.0)
    assert torch.all(weights[3] == 0)
    # ties at the dense list's cutoff list exactly `depth` documents, as dense retrieval returns
    tied = cosines.clone()
    tied[0, :] = 0.5
    tied[0, :3] = torch.tensor([0.9, 0.8, 0.7])
    assert torch.isfinite(fused_scores(tied, lex_docs, lex_scores * 0, 0.5, depth)[0]).sum() == depth


def test_lexical_teacher_ranks_an_inputs_own_document_first(inputs, tmp_path):
    """With --teacher-lexical 1 the teacher is BM25 over the data's documents (in the ids'
    order): a document's own text is taught its document first; a document missing from the
    data is refused."""
    from nci.data import document_text, load_corpus
    from nci.features import cached_states
    from nci.model_build import build_model
    from nci.semantic_ids import load_semantic_ids
    from nci.train.config import TrainConfig as Config
    from nci.train.data import load_training_data
    from nci.train.prepare import teacher_lists

    sem = load_semantic_ids(inputs["ids"])
    cfg = Config(
        encoder=str(inputs["encoder"]), d_model=32, n_heads=2, n_layers=1, d_ff=64, max_length=16,
        encoder_trainable_layers=1, teacher_weight=0.5, teacher_lexical=1.0, precision="fp32",
    )  # fmt: skip
    data = load_training_data(inputs["data"], sem, [inputs["daq"]], cfg)
    corpus = load_corpus(inputs["data"])
    own = {document_text(corpus[d]): i for i, d in enumerate(sem.doc_ids)}
    data.texts.extend(own)  # each document's whole text as one more input
    data.texts.append("zzyzx qwxqj")  # and one sharing no term with any document
    model = build_model(cfg, sem)
    store = cached_states(model, data.texts, tmp_path / "cache", "fp", "cpu")
    docs, w = teacher_lists(sem, data, model, store, cfg, torch.device("cpu"), inputs["data"])
    tail = docs[-len(own) - 1 : -1, 0].tolist()
    assert tail == list(own.values())
    assert torch.all(w[-len(own) - 1 : -1, 0] > w[-len(own) - 1 : -1, 1])
    assert torch.all(w[-1] == 0)  # BM25 alone found nothing: no teacher, the label stays
    bad = dataclasses.replace(sem, doc_ids=[*sem.doc_ids[:-1], "no-such-document"])
    with pytest.raises(ArtifactError, match="no-such-document"):
        teacher_lists(bad, data, model, store, cfg, torch.device("cpu"), inputs["data"])
    with pytest.raises(ValueError, match="teacher_lexical"):
        Config(teacher_lexical=1.5)
