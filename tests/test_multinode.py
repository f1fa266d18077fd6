"""Work split across machines with torchrun: two "nodes" on loopback are two torchrun launches
that meet at one c10d rendezvous; every process runs on this machine, with one shared /tmp.
The two-node training comparison (about 22 s on 2 cores) is in the slow tier; the rest take
10-11 s each."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_querygen import FAST, generator, small_data  # noqa: F401 (fixtures)
from test_train import _env, assert_same_weights, inputs, tiny_args, weights  # noqa: F401 (a fixture)

from nci.manifest import read_manifest

TIMING = {"seconds", "val_seconds", "examples_per_s", "elapsed"}  # the rest of an epoch's row must agree


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(launcher: list[str], module: str, args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, "-m", module, *args]
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def node(port: int) -> list[str]:
    """One of two nodes with one process each, meeting at 127.0.0.1:port (c10d assigns the ranks)."""
    return ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d",
            "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", f"test-{port}"]  # fmt: skip


def finish(*procs: subprocess.Popen) -> list[tuple[int, str]]:
    return [(p.wait(timeout=300), p.communicate()[0]) for p in procs]


def epochs(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


@pytest.mark.slow
def test_two_nodes_train_the_weights_of_two_processes_on_one_node(inputs, tmp_path):  # noqa: F811
    """``--nnodes 2 --nproc_per_node 1`` against ``--standalone --nproc_per_node 2``: same global
    batch (16, 8 per rank), seed and ranks, so every weight is equal, bit for bit: the last step's
    trainable state (checkpoint/last), the final model (best epoch) and every epoch's metrics."""
    two_nodes, one_node = tmp_path / "two_nodes", tmp_path / "one_node"
    port = free_port()
    args = tiny_args(inputs, two_nodes, "--epochs", "2")
    launches = [torchrun(node(port), "nci.train", args) for _ in range(2)]
    reference = torchrun(
        ["--standalone", "--nproc_per_node", "2"], "nci.train", tiny_args(inputs, one_node, "--epochs", "2")
    )
    for code, output in finish(*launches, reference):
        assert code == 0, output[-3000:]

    assert_same_weights(weights(two_nodes), weights(one_node))
    from safetensors.torch import load_file

    assert_same_weights(
        load_file(str(two_nodes / "model.safetensors")), load_file(str(one_node / "model.safetensors"))
    )
    assert epochs(two_nodes) == epochs(one_node) and len(epochs(two_nodes)) == 2
    a, b = read_manifest(two_nodes, stage="train"), read_manifest(one_node, stage="train")
    assert a["counts"] == b["counts"] and a["counts"]["processes"] == 2
    assert a["last_parameter_sha256"] == b["last_parameter_sha256"]
    assert not list(two_nodes.glob(".rank0-*"))  # the shared-directory probe is gone


@pytest.mark.parametrize(
    "second, message",
    [
        (["--out", "{tmp}/elsewhere"], "cannot see the files rank 0"),
        pytest.param(["--lr", "0.01"], "have another option lr than rank 0", marks=pytest.mark.slow),
    ],
    ids=["output-not-shared", "other-options"],
)
def test_nodes_that_disagree_stop_with_a_clear_error(inputs, tmp_path, second, message):  # noqa: F811
    """A node that writes elsewhere (what a directory that is not shared looks like) or was started
    with other options: every rank stops with the reason, nothing trains."""
    port = free_port()
    first = tiny_args(inputs, tmp_path / "model", "--epochs", "1")
    other = first + [arg.format(tmp=tmp_path) for arg in second]  # a later option wins
    results = finish(torchrun(node(port), "nci.train", first), torchrun(node(port), "nci.train", other))
    for code, output in results:
        assert code != 0
        assert message in output, output[-3000:]
    assert not (tmp_path / "model" / "checkpoint").exists()


def test_torchrun_embeds_in_shards_like_one_process(tiny_encoder, synthetic_data, tmp_path):
    """Two processes are shards 0/2 and 1/2 of the 4 chunks; rank 0 merges: byte for byte the
    files of a one-process run."""
    from nci.embed import EmbedConfig, embed_corpus

    config = EmbedConfig(model=str(tiny_encoder), max_length=32, chunk_size=16)
    whole = embed_corpus(synthetic_data, tmp_path / "whole", config)
    out = tmp_path / "emb"
    args = ["--data", str(synthetic_data), "--out", str(out), "--model", str(tiny_encoder),
            "--max-length", "32", "--chunk-size", "16"]  # fmt: skip
    ((code, output),) = finish(torchrun(["--standalone", "--nproc_per_node", "2"], "nci.embed", args))
    assert code == 0, output[-3000:]
    assert "embed chunks (shard 1/2)" in output
    for name in ("embeddings.npy", "doc_ids.txt"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    assert read_manifest(out)["counts"] == read_manifest(whole)["counts"]
    assert not (tmp_path / "emb.partial").exists()


@pytest.mark.slow
def test_torchrun_generates_in_shards_like_one_process(generator, small_data, tmp_path):  # noqa: F811
    """doc2query under torchrun: shards 0/2 (chunks 0, 2) and 1/2 (chunk 1), merged by rank 0,
    write the one-process run's pseudo_queries.jsonl byte for byte (same seed)."""
    from nci import querygen
    from nci.querygen import GenerateConfig

    config = GenerateConfig(model=str(generator), n=2, batch_size=3, chunk_size=5, **FAST)
    querygen.generate(small_data, tmp_path / "whole", config)
    out = tmp_path / "d2q"
    # --queries-per-doc: torchrun's parser takes --n for an abbreviation of its own options
    args = ["generate", "--data", str(small_data), "--out", str(out), "--model", str(generator),
            "--queries-per-doc", "2", "--batch-size", "3", "--chunk-size", "5", "--max-doc-length", "32",
            "--max-query-length", "6", "--device", "cpu", "--threads", "1"]  # fmt: skip
    ((code, output),) = finish(torchrun(["--standalone", "--nproc_per_node", "2"], "nci.querygen", args))
    assert code == 0, output[-3000:]
    assert "doc2query (shard 1/2)" in output
    jsonl = querygen.PSEUDO_QUERIES
    assert (out / jsonl).read_bytes() == (tmp_path / "whole" / jsonl).read_bytes()
    assert read_manifest(out)["counts"] == read_manifest(tmp_path / "whole")["counts"]


@pytest.mark.slow
def test_two_nodes_train_the_weights_of_one_process(inputs, tmp_path):  # noqa: F811
    """Two nodes of one process each (8 rows per rank) against one process (16 rows), without
    dropout (whose masks are drawn per rank): the ranks split each global batch (the last one of
    an epoch is not full) and average over its labelled positions, so they train on what the one
    process trains on, and differ only by float summation order. Adam turns rounding noise into
    steps where a gradient is zero in exact arithmetic (attention key biases, which softmax
    ignores), so the weights are compared as one state: within 0.5% of its norm (measured 0.17%;
    when each rank averaged its own positions and padded the last batch, 2.1%), and every epoch's
    loss within 0.05% (measured 0.007%; before, 0.34% and 0.89%)."""
    two_nodes, one = tmp_path / "two_nodes", tmp_path / "one"
    port = free_port()
    same = ("--epochs", "2", "--dropout", "0", "--rdrop-alpha", "0")
    launches = [torchrun(node(port), "nci.train", tiny_args(inputs, two_nodes, *same)) for _ in range(2)]
    reference = subprocess.run(
        [sys.executable, "-m", "nci.train", *tiny_args(inputs, one, *same)],
        env=_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert reference.returncode == 0, reference.stderr[-3000:]
    for code, output in finish(*launches):
        assert code == 0, output[-3000:]

    a, b = weights(two_nodes), weights(one)
    assert a.keys() == b.keys()
    differ = torch.sqrt(sum(((a[n] - b[n]) ** 2).sum() for n in a))
    norm = torch.sqrt(sum((b[n] ** 2).sum() for n in b))
    assert differ / norm < 0.005
    rows_two, rows_one = epochs(two_nodes), epochs(one)
    assert len(rows_two) == len(rows_one) == 2
    for x, y in zip(rows_two, rows_one, strict=True):
        assert x["step"] == y["step"] and x["lr"] == pytest.approx(y["lr"], rel=1e-9)
        assert x["loss"] == pytest.approx(y["loss"], rel=5e-4)
    assert read_manifest(one, stage="train")["counts"]["processes"] == 1
    assert read_manifest(two_nodes, stage="train")["counts"]["processes"] == 2
