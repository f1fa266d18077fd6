"""Training the NCI model (``nci train``, also ``python -m nci.train`` and under ``torchrun``).

Inputs: a prepared dataset (its training queries and qrels), the semantic ids, and any number of
pseudo-query directories (doc-as-query, doc2query). Each (text, document) pair teaches the model
to write the document's id; sources are mixed per epoch with ``--source-weights``.

Loss (Wang et al. 2022, section 3.4): cross-entropy over the id tokens, plus ``alpha`` times the
symmetric KL divergence between two forward passes of the same batch with different dropout
(R-drop); ``--rdrop-alpha 0`` turns it off and runs one pass.

Recipes, chosen by device unless flags say otherwise:
- CPU: the encoder is frozen and its token states are computed once and cached (``cache/``);
  only the decoder trains, under bf16 autocast where the CPU has native bf16 (1.8x faster than
  fp32 here). ``--encoder-trainable-layers N`` also trains the top N encoder layers on top of
  cached states of the layers below. On a machine shared with other jobs, ``--threads 1`` was
  3-5x faster per step than two threads competing for two busy cores.
- CUDA: the whole encoder is fine-tuned, under bf16 autocast, with larger batches.
- ``torchrun --nproc_per_node N -m nci.train ...`` runs data-parallel (gloo on CPU, NCCL on GPU);
  ``--batch-size`` is the global batch.

Batches: every run of 50 batches' worth of shuffled examples is sorted by input length before it
is cut into batches (which are shuffled again), so a batch pads to about its own inputs' length
rather than to the longest input in the data; ``--no-length-buckets`` turns this off.

Time budget: ``--max-minutes`` plans the learning-rate schedule in steps. After 30 steps, and
again after every epoch, it fits as many steps as the time left allows (holding back time for a
last validation), so the cosine decay ends at the budget. The last epoch may be partial; it is
validated like the others.

The output directory is the run's working directory: ``checkpoint/`` (last state every epoch
and on SIGINT/SIGTERM, for ``--resume``; ``best.safetensors``), ``cache/`` (encoder states),
``metrics.jsonl``, ``training_curve.png``, and at the end the model (``config.json``,
``model.safetensors``, ``encoder/``; the epoch with the best validation success@1) and
``manifest.json``, written last: a directory without it is not a finished model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nci.decoding import ConstrainedDecoder, TrieTensors
from nci.manifest import ArtifactError, fingerprint, write_json_atomic, write_manifest
from nci.model import NCIConfig, NCIModel, choice_labels

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
SOURCES = ("query", "daq", "d2q")


@dataclass(frozen=True)
class TrainConfig:
    encoder: str | None = None  # encoder directory or name; None = the packaged all-MiniLM-L6-v2
    device: str = "auto"  # auto | cpu | cuda
    epochs: int = 30
    max_minutes: float | None = None  # wall-time budget of the whole command
    max_steps: int | None = None  # stop after this many optimizer steps (smoke runs, tests)
    batch_size: int | None = None  # global; None = 128 on CPU, 256 on CUDA
    lr: float = 1e-3  # decoder
    encoder_lr: float = 5e-5  # trainable encoder layers
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decay to lr * this at the last planned step
    grad_clip: float = 1.0
    rdrop_alpha: float = 0.15
    label_smoothing: float = 0.0
    dropout: float = 0.1
    # None = 0 (frozen, cached states) on CPU, -1 (whole encoder) on CUDA
    encoder_trainable_layers: int | None = None
    max_length: int = 64  # query tokens
    d_model: int | None = None  # None = the encoder's width
    n_layers: int = 3
    n_heads: int = 6
    d_ff: int | None = None  # None = 4 * d_model
    pawa: bool = True
    pawa_layers: int = 1
    centroid_prior: bool = False
    source_weights: str = "query=1,daq=1,d2q=1"
    length_buckets: bool = True  # batch inputs of similar length together (less padding)
    val_fraction: float = 0.05
    val_max: int = 500
    val_beam: int = 10
    seed: int = 0
    precision: str = "auto"  # auto (bf16 on CUDA and on CPUs with native bf16, else fp32) | fp32 | bf16

    def __post_init__(self) -> None:
        if self.device not in {"auto", "cpu", "cuda"}:
            raise ValueError(f"device must be auto, cpu or cuda, got '{self.device}'")
        if self.precision not in {"auto", "fp32", "bf16"}:
            raise ValueError(f"precision must be auto, fp32 or bf16, got '{self.precision}'")
        if self.epochs < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("epochs and batch size must be at least 1")
        if self.rdrop_alpha < 0 or not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            raise ValueError("rdrop_alpha must be >= 0; label_smoothing and dropout within [0, 1)")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be within [0, 1), got {self.val_fraction}")
        parse_source_weights(self.source_weights)


# Fields a resumed run may change; everything else must match the checkpoint. The budget and
# step limit apply to one invocation; epochs and device carry over unless given again.
RUN_CONTROL = ("epochs", "max_minutes", "max_steps", "device")
PER_INVOCATION = ("max_minutes", "max_steps")


def parse_source_weights(text: str) -> dict[str, float]:
    """``"query=1,daq=0.5"`` -> {"query": 1.0, "daq": 0.5}; unnamed sources weigh 1."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not name.strip() or weight < 0:
            raise ValueError(f"bad source weight '{part}' in '{text}'; write name=weight with weight >= 0")
        weights[name.strip()] = weight
    return weights


# --- training data ---------------------------------------------------------------------------


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


def load_training_data(data: Path, sem: Any, query_dirs: list[Path], cfg: TrainConfig) -> TrainingData:
    from nci.data import load_qrels, split_queries
    from nci.querygen import read_pseudo_queries
    from nci.semantic_ids import ids_to_tokens

    weights = parse_source_weights(cfg.source_weights)
    doc_index = {d: i for i, d in enumerate(sem.doc_ids)}
    texts: dict[str, int] = {}
    ex_text, ex_doc, ex_source = [], [], []
    sources: list[str] = []

    def add(text: str, doc: int, source: str) -> None:
        if source not in sources:
            sources.append(source)
        ex_text.append(texts.setdefault(text, len(texts)))
        ex_doc.append(doc)
        ex_source.append(sources.index(source))

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
    qids = list(relevant)
    n_val = min(cfg.val_max, int(round(cfg.val_fraction * len(qids))))
    rng = np.random.default_rng([cfg.seed, 1])
    val_qids = set(rng.choice(qids, size=n_val, replace=False).tolist()) if n_val else set()
    for qid in qids:
        if qid not in val_qids:
            for doc in relevant[qid]:
                add(queries[qid], doc, "query")
    n_query_examples = len(ex_text)

    for directory in query_dirs:
        path = Path(directory) / "pseudo_queries.jsonl"
        for lineno, row in enumerate(read_pseudo_queries(directory), 1):
            doc_id, text, source = row["doc_id"], row["text"], row["source"]
            if doc_id not in doc_index:
                raise ArtifactError(
                    f"{path}: row {lineno}: document '{doc_id}' has no semantic id; were the pseudo-queries "
                    "made for another corpus?"
                )
            add(text, doc_index[doc_id], source)

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

    val = [(texts.setdefault(queries[q], len(texts)), relevant[q]) for q in qids if q in val_qids]
    probe_rows = rng.choice(
        n_query_examples or len(ex_text), size=min(500, n_query_examples or len(ex_text)), replace=False
    )
    train_probe = [(ex_text[i], [ex_doc[i]]) for i in sorted(probe_rows.tolist())]
    n_positions = sem.max_depth + 1
    counts = {f"examples_{s}": int(np.sum(np.asarray(ex_source) == j)) for j, s in enumerate(sources)}
    counts.update(
        training_queries=len(qids) - len(val_qids),
        validation_queries=len(val_qids),
        unique_texts=len(texts),
        documents=len(sem.doc_ids),
    )
    return TrainingData(
        texts=list(texts),
        example_text=np.asarray(ex_text, dtype=np.int64),
        example_doc=np.asarray(ex_doc, dtype=np.int64),
        example_source=np.asarray(ex_source, dtype=np.int64),
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


# --- loss ------------------------------------------------------------------------------------


def rdrop_loss(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, ce, kl)``. With ``alpha > 0``, ``logits`` hold two passes ``[2B, T, C]`` (first B
    rows, then the same B again) and ``labels`` is ``[B, T]``; kl is the symmetric KL between the
    passes, averaged over labelled positions: 0.5 * (KL(p1||p2) + KL(p2||p1))."""
    logits = logits.float()
    if alpha <= 0:
        ce = F.cross_entropy(
            logits.flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=label_smoothing
        )
        return ce, ce.detach(), torch.zeros((), device=logits.device)
    ce = F.cross_entropy(
        logits.flatten(0, 1),
        labels.repeat(2, 1).flatten(),
        ignore_index=-100,
        label_smoothing=label_smoothing,
    )
    valid = labels != -100
    first, second = logits.chunk(2)
    lp1, lp2 = F.log_softmax(first[valid], -1), F.log_softmax(second[valid], -1)
    kl = 0.5 * ((lp1.exp() - lp2.exp()) * (lp1 - lp2)).sum(-1).mean()
    return ce + alpha * kl, ce.detach(), kl.detach()


class TrainingForward(nn.Module):
    """Features -> compact logits, with R-drop's second pass in the same batch. One module so
    that DistributedDataParallel sees the whole trainable computation in ``forward``."""

    def __init__(self, model: NCIModel):
        super().__init__()
        self.model = model

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor, nodes: torch.Tensor, twice: bool
    ) -> torch.Tensor:
        nodes = nodes if self.model.config.centroid_prior else None
        passes = 2 if twice else 1
        if "states" in features and self.model.config.encoder_trainable_layers == 0:
            # frozen encoder: both passes share one memory (and its attention keys and values)
            memory, mask = self.model.encode_top(features["states"], features["attention_mask"])
            return self.model(memory, mask, targets, nodes, passes=passes)
        # trainable encoder layers: each pass gets its own encoder dropout
        features = {k: v.repeat(passes, *[1] * (v.dim() - 1)) for k, v in features.items()}
        targets = targets.repeat(passes, 1)
        nodes = None if nodes is None else nodes.repeat(passes, 1)
        if "states" in features:
            memory, mask = self.model.encode_top(features["states"], features["attention_mask"])
        else:
            memory, mask = self.model.encode_train(features["input_ids"], features["attention_mask"])
        return self.model(memory, mask, targets, nodes)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup, then cosine decay to ``min_ratio`` at ``total`` steps."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --- processes -------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1


def init_distributed(device_kind: str) -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as tdist

    backend = "nccl" if device_kind == "cuda" else "gloo"
    tdist.init_process_group(backend=backend)
    return Dist(
        rank=tdist.get_rank(), world=tdist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


def _barrier(dist: Dist) -> None:
    if dist.on:
        torch.distributed.barrier()


def _all_sum(dist: Dist, values: list[float], device: torch.device) -> list[float]:
    if not dist.on:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _all_max(dist: Dist, values: Any, device: torch.device) -> Any:
    """Element-wise max over ranks (so every rank takes the same stop decision)."""
    if not dist.on:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


def _gather(dist: Dist, obj: Any) -> list[Any]:
    if not dist.on:
        return [obj]
    out: list[Any] = [None] * dist.world
    torch.distributed.all_gather_object(out, obj)
    return out


class StopFlag:
    """SIGINT/SIGTERM: finish the current step, checkpoint, exit non-zero. A second SIGINT aborts."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s received: stopping after this step and saving a checkpoint", signal.Signals(signum).name
        )

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --- checkpoints -----------------------------------------------------------------------------


def trainable_state(model: NCIModel) -> dict[str, torch.Tensor]:
    """The decoder and any trainable encoder weights (the frozen encoder comes from its source)."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {
        n: t.detach().to("cpu").contiguous()
        for n, t in model.state_dict().items()
        if not n.startswith("encoder.") or n in trainable
    }


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].float().numpy().tobytes())
    return h.hexdigest()


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer's state into tensors (for safetensors) and JSON."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, state in sd["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().to("cpu")
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    out: Path,
    model: NCIModel,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    rng: dict[str, torch.Tensor],
) -> None:
    """Write ``checkpoint/last/`` (weights, optimizer, RNG states, state.json) atomically."""
    root = out / "checkpoint"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / ".last.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_tensors(trainable_state(model), tmp / "weights.safetensors")
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    _save_tensors(opt_tensors, tmp / "optimizer.safetensors")
    _save_tensors(rng, tmp / "rng.safetensors")
    write_json_atomic(tmp / "state.json", {**state, "optimizer": opt_meta})
    last = root / "last"
    if last.exists():
        old = root / ".last.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(last, old)
        os.replace(tmp, last)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, last)


def rng_snapshot(dist: Dist, device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's torch RNG state (dropout), gathered on all ranks."""
    mine = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        mine["cuda"] = torch.cuda.get_rng_state(device)
    states = _gather(dist, {k: v.numpy() for k, v in mine.items()})
    return {f"{k}_rank{r}": torch.from_numpy(v) for r, s in enumerate(states) for k, v in s.items()}


def restore_rng(rng: dict[str, torch.Tensor], dist: Dist, device: torch.device) -> None:
    key = f"cpu_rank{dist.rank}"
    if key not in rng:
        log.warning(
            "the checkpoint has no RNG state for rank %d (other world size); dropout reseeded", dist.rank
        )
        return
    torch.set_rng_state(rng[key])
    if device.type == "cuda" and f"cuda_rank{dist.rank}" in rng:
        torch.cuda.set_rng_state(rng[f"cuda_rank{dist.rank}"], device)


# --- model -----------------------------------------------------------------------------------


def resolve_config(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """Fill the device-dependent defaults, so the recorded config says what ran."""
    cuda = device.type == "cuda"
    return dataclasses.replace(
        cfg,
        batch_size=cfg.batch_size or (256 if cuda else 128),
        encoder_trainable_layers=(
            cfg.encoder_trainable_layers if cfg.encoder_trainable_layers is not None else (-1 if cuda else 0)
        ),
        precision=cfg.precision
        if cfg.precision != "auto"
        else ("bf16" if cuda or cpu_has_bf16() else "fp32"),
    )


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast made
    decoder training steps 1.8x faster than fp32 in our measurements; elsewhere it is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def build_model(cfg: TrainConfig, sem: Any) -> NCIModel:
    from nci.encoder import load_encoder

    tokenizer, encoder = load_encoder(cfg.encoder)
    hidden = encoder.config.hidden_size
    d_model = cfg.d_model or hidden
    ncfg = NCIConfig(
        k=sem.k,
        max_depth=sem.max_depth,
        n_nodes=sem.trie.n_nodes if cfg.centroid_prior else 0,
        encoder_hidden=hidden,
        encoder_layers=encoder.config.num_hidden_layers,
        encoder_trainable_layers=int(cfg.encoder_trainable_layers),
        max_length=cfg.max_length,
        d_model=d_model,
        n_heads=cfg.n_heads,
        n_layers=cfg.n_layers,
        d_ff=cfg.d_ff or 4 * d_model,
        pawa=cfg.pawa,
        pawa_layers=cfg.pawa_layers,
        dropout=cfg.dropout,
        centroid_prior=cfg.centroid_prior,
    )
    model = NCIModel(ncfg, encoder, tokenizer)
    if cfg.centroid_prior:
        model.init_centroid_prior(sem.centroids, sem.trie)
    n = ncfg.encoder_trainable_layers
    for name, p in model.encoder.named_parameters():
        if n < 0:
            p.requires_grad = "pooler" not in name  # the pooler output is never used
        else:
            p.requires_grad = any(
                f"layer.{i}." in name for i in range(model.split_layer, ncfg.encoder_layers)
            )
    return model


def make_optimizer(model: NCIModel, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay, encoder = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("encoder."):
            encoder.append(p)
        elif p.dim() >= 2 and name != "node_weight":  # keep the centroid table near its start
            decay.append(p)
        else:
            no_decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "base_lr": cfg.lr},
        {"params": no_decay, "weight_decay": 0.0, "base_lr": cfg.lr},
        {"params": encoder, "weight_decay": cfg.weight_decay, "base_lr": cfg.encoder_lr},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr)


def amp_context(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


@torch.inference_mode()
def success_at(
    model: NCIModel,
    store: Any,
    items: list[tuple[int, list[int]]],
    decode: ConstrainedDecoder,
    beam: int,
    device: torch.device,
    precision: str,
    dist: Dist,
    batch_size: int = 64,
) -> tuple[float, float]:
    """success@1 and success@10 of trie-constrained beam search over ``items`` (sharded by rank)."""
    model.eval()
    mine = items[dist.rank :: dist.world]
    hits1 = hits10 = 0.0
    for start in range(0, len(mine), batch_size):
        chunk = mine[start : start + batch_size]
        feats = store.batch(np.array([t for t, _ in chunk]), device)
        with amp_context(device, precision):
            if "states" in feats:
                memory, mask = model.encode_top(feats["states"], feats["attention_mask"])
            else:
                memory, mask = model.encode(feats["input_ids"], feats["attention_mask"])
        docs, _ = decode(memory.float(), mask, beam)
        docs = docs.cpu().numpy()
        for row, (_, rel) in zip(docs, chunk, strict=True):
            rel_set = set(rel)
            hits1 += float(row[0] in rel_set)
            hits10 += float(any(d in rel_set for d in row[:10]))
    hits1, hits10, n = _all_sum(dist, [hits1, hits10, float(len(mine))], device)
    return (hits1 / n, hits10 / n) if n else (None, None)


# --- the run ---------------------------------------------------------------------------------


def plot_curve(history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["ce"] for h in history], marker="o", label="cross-entropy")
    ax1.plot(epochs, [h["kl"] for h in history], marker="o", label="R-drop KL")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.legend()
    for key in ("val_success@1", "val_success@10", "train_success@1"):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax2.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=key)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("success")
    ax2.set_ylim(0, 1)
    ax2.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _write_metrics(history: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


def _place_model(model: NCIModel, out: Path) -> None:
    """Write the final model files into ``out`` through a temporary folder."""
    tmp = out / ".model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    for entry in sorted(tmp.iterdir()):
        dst = out / entry.name
        if dst.is_dir():
            shutil.rmtree(dst)
        os.replace(entry, dst)
    tmp.rmdir()


def _is_better(row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None or row.get("val_success@1") is None:
        return True  # no validation set: the last epoch is the model
    return (row["val_success@1"], row["val_success@10"]) > (best["val_success@1"], best["val_success@10"])


def train(
    data: Path,
    ids: Path,
    query_dirs: list[Path],
    out: Path,
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    explicit: set[str] | None = None,
) -> int:
    """Run training; returns the process exit code (0 done, 128 + signal when interrupted).

    With ``resume``, the checkpoint's config is used; ``explicit`` names the fields the caller
    set (default: those differing from TrainConfig's defaults): run-control fields among them
    override the checkpoint, any other must agree with it."""
    started = time.time()
    device_kind = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available (this torch build or machine has none)")
    dist = init_distributed(device_kind)
    try:
        if explicit is None:
            explicit = {
                f.name
                for f in dataclasses.fields(TrainConfig)
                if getattr(cfg, f.name) != getattr(TrainConfig(), f.name)
            }
        return _train(
            data, ids, query_dirs, out, cfg, resume, overwrite, explicit, started, device_kind, dist
        )
    finally:
        if dist.on:
            torch.distributed.destroy_process_group()


def _train(data, ids, query_dirs, out, cfg, resume, overwrite, explicit, started, device_kind, dist) -> int:
    from nci.encoder import resolve_encoder
    from nci.semantic_ids import load_semantic_ids

    out = Path(out)
    device = torch.device(f"cuda:{dist.local_rank}" if device_kind == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    checkpoint = out / "checkpoint" / "last"
    state: dict[str, Any] | None = None
    if resume:
        if not (checkpoint / "state.json").is_file():
            raise ArtifactError(f"{checkpoint}: no checkpoint to resume from; start without --resume")
        state = json.loads((checkpoint / "state.json").read_text())
        state["config"].setdefault("length_buckets", False)  # checkpoints from before bucketing
        saved = TrainConfig(**state["config"])
        for name in sorted(explicit - set(RUN_CONTROL)):
            if getattr(cfg, name) != getattr(saved, name):
                raise ValueError(
                    f"--resume: {name} is {getattr(saved, name)!r} in the checkpoint, "
                    f"{getattr(cfg, name)!r} now; "
                    "only --epochs, --max-minutes, --max-steps and --device may change"
                )
        keep = {n: getattr(cfg, n) for n in RUN_CONTROL if n in explicit or n in PER_INVOCATION}
        cfg = dataclasses.replace(saved, **keep)
    elif (out / "checkpoint").exists() or (out / "manifest.json").exists():
        if not overwrite:
            raise FileExistsError(
                f"{out} holds a training run; pass --resume to continue it or --overwrite to start over"
            )
        if dist.main:
            for name in (
                "checkpoint",
                "encoder",
                "manifest.json",
                "metrics.jsonl",
                "model.safetensors",
                "config.json",
                "training_curve.png",
                "train_config.json",
            ):
                p = out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    _barrier(dist)
    cfg = resolve_config(cfg, device)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "manifest.json").unlink(missing_ok=True)  # unfinished again until the end

    sem = load_semantic_ids(ids)
    tdata = load_training_data(Path(data), sem, [Path(q) for q in query_dirs], cfg)
    weights = parse_source_weights(cfg.source_weights)
    log.info("training inputs: %s", tdata.counts)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, sem).to(device)
    torch.manual_seed(cfg.seed + dist.rank)  # dropout differs across ranks
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "model: %s; %.2fM trainable parameters; device %s; %d process(es)",
        model.config,
        n_trainable / 1e6,
        device,
        dist.world,
    )

    data_digest = training_data_digest(tdata)
    if state is not None and state.get("data_digest", data_digest) != data_digest:
        raise ArtifactError(
            "--resume: the training inputs differ from the checkpoint's (--data, --ids or --queries "
            "changed); resume with the inputs of the first run, or start over with --overwrite"
        )
    encoder_source = resolve_encoder(cfg.encoder)
    encoder_fp = fingerprint(encoder_source) if Path(encoder_source).exists() else encoder_source
    if state is not None and state.get("encoder_fingerprint") != encoder_fp:
        raise ArtifactError(
            f"--resume: the encoder {encoder_source} changed since the checkpoint was written"
        )

    # features: cached frozen states, or token ids when the whole encoder trains
    cache_seconds = 0.0
    if model.config.encoder_trainable_layers < 0:
        from nci.features import tokenize_all

        store = tokenize_all(model.tokenizer, tdata.texts, cfg.max_length)
    else:
        from nci.features import cached_states

        t0 = time.time()
        store = None
        if dist.main:
            with amp_context(device, cfg.precision):
                store = cached_states(model, tdata.texts, out / "cache", encoder_fp, device)
        _barrier(dist)
        if not dist.main:
            store = cached_states(model, tdata.texts, out / "cache", encoder_fp, device, compute=False)
            if store is None:
                raise ArtifactError(f"rank {dist.rank}: the feature cache in {out / 'cache'} is missing")
        cache_seconds = time.time() - t0
        log.info("encoder states ready in %.1f s", cache_seconds)

    forward = TrainingForward(model)
    if dist.on:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = make_optimizer(model, cfg)
    trie = TrieTensors.from_trie(sem.trie, device)
    example_lengths = np.asarray(store.lengths)[tdata.example_text]  # per training example
    targets_all = torch.from_numpy(tdata.targets)
    nodes_all = torch.from_numpy(tdata.nodes)
    per_rank = max(1, cfg.batch_size // dist.world)
    epoch_size = len(epoch_order(tdata, weights, cfg.seed, 0))
    steps_per_epoch = math.ceil(math.ceil(epoch_size / dist.world) / per_rank)

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    epoch, batch_start, global_step = 0, 0, 0
    step_cap = total_steps = cfg.epochs * steps_per_epoch  # steps that --epochs allows
    planned_epochs = cfg.epochs
    if state is not None:
        model.load_decoder_state(_load_tensors(checkpoint / "weights.safetensors"), source=checkpoint)
        optimizer.load_state_dict(
            optimizer_from_files(_load_tensors(checkpoint / "optimizer.safetensors"), state["optimizer"])
        )
        restore_rng(_load_tensors(checkpoint / "rng.safetensors"), dist, device)
        epoch, batch_start, global_step = state["epoch"], state["batch"], state["global_step"]
        history, best = state["history"], state["best"]
        # the schedule planned so far, unless this run sets a new epoch count or time budget
        # (an epoch that a time budget cut short counts as done)
        step_cap = global_step - batch_start + (cfg.epochs - epoch) * steps_per_epoch
        if state["config"]["epochs"] == cfg.epochs and cfg.max_minutes is None:
            planned_epochs = state["planned_epochs"]
            total_steps = state.get("total_steps", planned_epochs * steps_per_epoch)
        else:
            total_steps = step_cap
        log.info("resumed at epoch %d, batch %d (step %d)", epoch + 1, batch_start, global_step)
    if global_step >= total_steps:
        log.info(
            "the checkpoint has trained %d of %d planned steps; writing the model", global_step, total_steps
        )

    deadline = started + cfg.max_minutes * 60 if cfg.max_minutes else None
    spare = 0.02 * cfg.max_minutes * 60 if cfg.max_minutes else 0.0  # 2% of the budget held back
    end_reserve = spare  # time kept for the last validation; the measured one is added once known
    run_step_seconds: list[float] = []  # per epoch of this run: wall time per step, validation included
    stopped = "epochs"
    exit_code = 0
    twice = cfg.rdrop_alpha > 0

    def checkpoint_state() -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "epoch": epoch,
            "batch": batch_start,
            "global_step": global_step,
            "planned_epochs": planned_epochs,
            "total_steps": total_steps,
            "history": history,
            "best": best,
            "config": dataclasses.asdict(cfg),
            "encoder_fingerprint": encoder_fp,
            "data_digest": data_digest,
            "world_size": dist.world,
        }

    def save(reason: str) -> None:
        rng = rng_snapshot(dist, device)
        if dist.main:
            save_checkpoint(out, model, optimizer, checkpoint_state(), rng)
            log.info("checkpoint (%s) at step %d -> %s", reason, global_step, checkpoint)
        _barrier(dist)

    def fit_budget(step_seconds: float, reserve_seconds: float) -> None:
        """Fit the step plan, and so the learning-rate schedule, to the time budget: as many steps
        as fit before the deadline less ``reserve_seconds``, at ``step_seconds`` each (up to
        --epochs). The last epoch may be partial; it is validated like the others."""
        nonlocal planned_epochs, total_steps
        left = max(0.0, deadline - time.time() - reserve_seconds)
        fit = min(step_cap, global_step + int(left / step_seconds))
        if fit % steps_per_epoch < steps_per_epoch // 10 and fit - fit % steps_per_epoch > global_step:
            fit -= fit % steps_per_epoch  # not a new epoch (and a validation) for a few steps
        fit = -int(_all_max(dist, -float(fit), device))  # every rank plans the fewest steps
        if fit != total_steps:
            total_steps = max(global_step, fit)
            epoch_start = global_step - batch_start
            planned_epochs = epoch + max(1, math.ceil((total_steps - epoch_start) / steps_per_epoch))
            log.info(
                "--max-minutes %g: about %.2f s per step, planning %d steps (%.1f epochs)",
                cfg.max_minutes,
                step_seconds,
                total_steps,
                total_steps / steps_per_epoch,
            )

    with StopFlag() as stop:
        while global_step < total_steps:
            order = epoch_order(tdata, weights, cfg.seed, epoch)
            from torch.utils.data.distributed import DistributedSampler

            mine = order[list(DistributedSampler(range(len(order)), dist.world, dist.rank, shuffle=False))]
            batches = epoch_batches(mine, example_lengths, per_rank, cfg.seed, epoch, cfg.length_buckets)
            forward.train()
            sums = np.zeros(3)
            n_steps = n_examples = 0
            t_epoch = t_check = time.time()
            n_check = 0
            bar = tqdm(
                total=len(batches),
                initial=batch_start,
                desc=f"epoch {epoch + 1}/{planned_epochs}",
                unit="step",
                disable=not dist.main,
                mininterval=1.0 if sys.stderr.isatty() else 30.0,
            )
            interrupted = False
            while batch_start < len(batches):
                rows = batches[batch_start]
                docs = torch.from_numpy(tdata.example_doc[rows])
                feats = store.batch(tdata.example_text[rows], device)
                targets = targets_all[docs].to(device)
                nodes = nodes_all[docs].to(device)
                factor = lr_factor(global_step, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                with amp_context(device, cfg.precision):
                    logits = forward(feats, targets, nodes, twice)
                loss, ce, kl = rdrop_loss(
                    logits, choice_labels(targets, model.config.k), cfg.rdrop_alpha, cfg.label_smoothing
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(
                        [p for p in model.parameters() if p.requires_grad], cfg.grad_clip
                    )
                optimizer.step()
                sums += [loss.item(), ce.item(), kl.item()]
                n_steps += 1
                n_examples += len(rows)
                batch_start += 1
                global_step += 1
                bar.update(1)
                if n_steps % 10 == 0:
                    bar.set_postfix(loss=f"{sums[0] / n_steps:.3f}", kl=f"{sums[2] / n_steps:.4f}")
                if deadline is not None and not run_step_seconds and n_steps == min(30, len(batches) // 5):
                    # an early estimate, so the schedule decays within the budget (10% for
                    # validation, and 2% of the budget held back for the last one)
                    fit_budget(1.1 * (time.time() - t_epoch) / n_steps, spare)
                elif deadline is not None and n_steps % 10 == 0 and global_step < total_steps:
                    # a shared machine can slow down inside a long epoch: shrink the plan before
                    # it runs into the deadline, so that the last epoch still ends on the schedule
                    # and is validated instead of being cut off unvalidated
                    now = time.time()
                    # the slower of the epoch's pace and the pace since the last check
                    pace = max((now - t_epoch) / n_steps, (now - t_check) / (n_steps - n_check))
                    t_check, n_check = now, n_steps
                    late = now + (total_steps - global_step) * pace > deadline - end_reserve
                    if _all_max(dist, float(late), device):
                        fit_budget(pace, end_reserve)
                if global_step >= total_steps:
                    break  # the plan ends within this epoch: validate what was trained
                halt = [
                    float(stop.signum or 0),
                    float(cfg.max_steps is not None and global_step >= cfg.max_steps),
                    float(deadline is not None and time.time() > deadline),
                ]
                halt = _all_max(dist, halt, device)
                if any(halt) and batch_start < len(batches):
                    interrupted = True
                    break
            bar.close()
            train_seconds = time.time() - t_epoch
            if interrupted:
                save("interrupted")
                if halt[0]:
                    signum = int(halt[0])
                    log.error(
                        "interrupted by %s at epoch %d, step %d; checkpoint in %s. Rerun the same "
                        "command with --resume to continue.",
                        signal.Signals(signum).name,
                        epoch + 1,
                        global_step,
                        checkpoint,
                    )
                    return 128 + signum
                stopped = "max_steps" if halt[1] else "max_minutes"
                break

            # end of epoch: validate, record, checkpoint
            t_val = time.time()
            model.eval()  # before the decoder: its per-node heads are computed without dropout
            decode = ConstrainedDecoder(model, trie)
            run = (device, cfg.precision, dist)
            val1, val10 = success_at(model, store, tdata.val, decode, cfg.val_beam, *run)
            probe1, _ = success_at(model, store, tdata.train_probe, decode, 1, *run)
            val_seconds = time.time() - t_val
            end_reserve = spare + val_seconds
            *sums, n_examples = _all_sum(dist, [*sums.tolist(), float(n_examples)], device)
            n_total = n_steps * dist.world
            row = {
                "epoch": epoch + 1,
                "step": global_step,
                "loss": sums[0] / max(1, n_total),
                "ce": sums[1] / max(1, n_total),
                "kl": sums[2] / max(1, n_total),
                "lr": optimizer.param_groups[0]["lr"],
                "val_success@1": val1,
                "val_success@10": val10,
                "train_success@1": probe1,
                "seconds": round(train_seconds, 2),
                "val_seconds": round(val_seconds, 2),
                "examples_per_s": round(n_examples / train_seconds, 1),
                "elapsed": round(time.time() - started, 1),
            }
            history.append(row)
            log.info(
                "epoch %d: loss %.4f (ce %.4f, kl %.4f); val success@1 %s @10 %s; train@1 %.3f; "
                "%.0f s + %.0f s val",
                row["epoch"],
                row["loss"],
                row["ce"],
                row["kl"],
                _fmt(val1),
                _fmt(val10),
                probe1,
                train_seconds,
                val_seconds,
            )
            if _is_better(row, best):
                best = {k: row[k] for k in ("epoch", "val_success@1", "val_success@10")}
                if dist.main:
                    _save_tensors(trainable_state(model), out / "checkpoint" / "best.safetensors")
            run_step_seconds.append((time.time() - t_epoch) / max(1, n_steps))
            epoch += 1
            batch_start = 0
            if deadline is not None and global_step < total_steps:
                # again, with measured epochs (a shared machine's speed drifts): the step cost
                # with validation spread over the epoch, and one more validation held back
                fit_budget(float(np.mean(run_step_seconds[-2:])), time.time() - t_val)
            save("epoch")
            if dist.main:
                _write_metrics(history, out / "metrics.jsonl")
                plot_curve(history, out / "training_curve.png")
            signum = int(_all_max(dist, float(stop.signum or 0), device))
            if signum:
                log.error(
                    "interrupted by %s after epoch %d; checkpoint in %s. Rerun the same command with "
                    "--resume to continue.",
                    signal.Signals(signum).name,
                    epoch,
                    checkpoint,
                )
                return 128 + signum
            if cfg.max_steps is not None and global_step >= cfg.max_steps:
                stopped = "max_steps"
                break
            if deadline is not None and global_step >= total_steps and global_step < step_cap:
                stopped = "max_minutes"
                log.info("--max-minutes %g: the planned %d steps are done", cfg.max_minutes, total_steps)
                break

    # the final model: the best validated epoch (or the last state when nothing was validated)
    last_digest = state_digest(trainable_state(model))
    digests = _gather(dist, last_digest)
    if len(set(digests)) > 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")
    if dist.main:
        best_path = out / "checkpoint" / "best.safetensors"
        final = model
        if best is not None and best_path.is_file() and best.get("val_success@1") is not None:
            final.load_decoder_state(_load_tensors(best_path), source=best_path)
        _place_model(final, out)
        _write_metrics(history, out / "metrics.jsonl")
        if history:
            plot_curve(history, out / "training_curve.png")
        write_json_atomic(out / "train_config.json", dataclasses.asdict(cfg))
        inputs: dict[str, Path] = {"data": Path(data), "ids": Path(ids)}
        inputs.update({f"queries_{i}": Path(q) for i, q in enumerate(query_dirs)})
        write_manifest(
            out,
            stage="train",
            config=dataclasses.asdict(cfg),
            inputs=inputs,
            counts={
                **tdata.counts,
                "epochs": epoch,
                "steps": global_step,
                "trainable_parameters": n_trainable,
                "processes": dist.world,
            },
            wall_seconds=time.time() - started,
            extra={
                "best": best,
                "stopped": stopped,
                "device": str(device),
                "feature_cache_seconds": cache_seconds,
                "last_parameter_sha256": digests,
                "model_config": dataclasses.asdict(model.config),
                "history": history,
            },
        )
        log.info(
            "model (epoch %s) -> %s; %d epochs, %.1f min",
            best and best["epoch"],
            out,
            epoch,
            (time.time() - started) / 60,
        )
    _barrier(dist)
    return exit_code


# --- CLI -------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (its training queries)")
    p.add_argument("--ids", type=Path, required=True, help="semantic ids directory (nci ids build)")
    p.add_argument(
        "--queries",
        type=Path,
        nargs="+",
        default=[],
        action="extend",
        help="pseudo-query directories (nci querygen); repeatable",
    )
    p.add_argument("--out", type=Path, required=True, help="output (and working) directory")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--overwrite", action="store_true", help="discard a previous run in OUT (keeps its cache)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: cores / processes)")

    # Config options are only set when given, so --resume can tell them from defaults.
    def opt(group, flag, help_text="", **kw):
        name = flag[2:].replace("-", "_")
        default = getattr(d, name, None)
        shown = (
            f" (default {default})" if default is not None and "store_" not in str(kw.get("action")) else ""
        )
        group.add_argument(flag, default=argparse.SUPPRESS, help=help_text + shown, **kw)

    def switch(group, flag, dest, help_text):  # --no-X turns a default-on field off, --X one on
        action = "store_false" if flag.startswith("--no-") else "store_true"
        group.add_argument(flag, dest=dest, action=action, default=argparse.SUPPRESS, help=help_text)

    g = p.add_argument_group("run")
    opt(g, "--device", choices=["auto", "cpu", "cuda"])
    opt(g, "--epochs", type=int)
    opt(g, "--max-minutes", "wall-time budget, feature caching included", type=float)
    opt(g, "--max-steps", "stop after this many optimizer steps (smoke runs)", type=int)
    opt(g, "--seed", type=int)
    opt(
        g,
        "--precision",
        "bf16 autocast or fp32; auto: bf16 on CUDA and on CPUs with native bf16",
        choices=["auto", "fp32", "bf16"],
    )
    o = p.add_argument_group("optimisation")
    opt(o, "--batch-size", "global batch; default 128 on CPU, 256 on CUDA", type=int)
    opt(o, "--lr", "decoder learning rate", type=float)
    opt(o, "--encoder-lr", "learning rate of trainable encoder layers", type=float)
    opt(o, "--weight-decay", type=float)
    opt(o, "--warmup-steps", type=int)
    opt(o, "--min-lr-ratio", "cosine decay floor, as a fraction of the learning rate", type=float)
    opt(o, "--grad-clip", "gradient norm clip, 0 = off", type=float)
    opt(o, "--rdrop-alpha", "weight of the R-drop KL term; 0 turns R-drop off", type=float)
    opt(o, "--label-smoothing", type=float)
    opt(o, "--source-weights", "per-source epoch weights; unnamed sources weigh 1")
    switch(
        o,
        "--no-length-buckets",
        "length_buckets",
        "batch in plain shuffled order instead of grouping inputs of similar length",
    )
    m = p.add_argument_group("model")
    opt(m, "--encoder", "encoder directory or name; default the packaged all-MiniLM-L6-v2")
    opt(
        m,
        "--encoder-trainable-layers",
        "top encoder layers to train on cached states below them; 0 = frozen (CPU default), -1 = all "
        "(CUDA default)",
        type=int,
    )
    opt(m, "--max-length", "query tokens", type=int)
    opt(m, "--d-model", "decoder width; default the encoder's", type=int)
    opt(m, "--n-layers", "decoder layers", type=int)
    opt(m, "--n-heads", type=int)
    opt(m, "--d-ff", "decoder feed-forward width; default 4 * d-model", type=int)
    opt(m, "--dropout", type=float)
    opt(m, "--pawa-layers", "layers of the PAWA prefix transformer", type=int)
    switch(p, "--no-pawa", "pawa", "one shared output layer instead of PAWA (ablation)")
    switch(
        p,
        "--centroid-prior",
        "centroid_prior",
        "add per-node output weights initialised from the k-means centroids of each node's children",
    )
    v = p.add_argument_group("validation")
    opt(v, "--val-fraction", "share of training queries held out (at most --val-max)", type=float)
    opt(v, "--val-max", type=int)
    opt(v, "--val-beam", type=int)


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The config and the names of the fields given on the command line."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    return TrainConfig(**given), set(given)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Train the NCI model (encoder + PAWA decoder).")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        from nci.cli import setup_logging

        setup_logging()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // local_world))
    try:
        cfg, given = config_from_args(args)
        return train(
            args.data,
            args.ids,
            args.queries,
            args.out,
            cfg,
            resume=args.resume,
            overwrite=args.overwrite,
            explicit=given,
        )
    except (ValueError, ArtifactError, FileExistsError, FileNotFoundError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
