"""Setting up a run: the output directory (fresh, overwritten or resumed), the inputs, the model
and optimizer, the encoder features, and the :class:`Run` that holds them for the loop."""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from nci.decoding import TrieTensors
from nci.manifest import ArtifactError, fingerprint
from nci.model import NCIModel, pooled_query
from nci.model_build import build_model, make_optimizer
from nci.train.budget import Schedule
from nci.train.checkpoint import load_tensors, optimizer_from_files, read_resume_state, restore_rng
from nci.train.config import TrainConfig, amp_context, parse_source_weights
from nci.train.data import TrainingData, epoch_order, load_training_data, training_data_digest
from nci.train.ddp import Dist, barrier, check_same_everywhere, check_shared_directory
from nci.train.loss import TrainingForward

log = logging.getLogger("nci.train")

# what a run writes into its output directory, besides its feature cache
RUN_FILES = (
    "checkpoint",
    "encoder",
    "manifest.json",
    "metrics.jsonl",
    "model.safetensors",
    "config.json",
    "training_curve.png",
    "train_config.json",
)


@dataclass
class Run:
    """One training run: its config, inputs, model and optimizer, and its progress."""

    cfg: TrainConfig  # resolved: no device-dependent defaults left
    out: Path
    dist: Dist
    device: torch.device
    started: float
    data: TrainingData
    source_weights: dict[str, float]
    model: NCIModel
    forward: nn.Module  # TrainingForward, inside DistributedDataParallel with several ranks
    optimizer: torch.optim.Optimizer
    store: Any  # per-text features: cached encoder states, or token ids
    trie: TrieTensors
    example_lengths: np.ndarray  # input length of every training example
    targets: torch.Tensor  # [n_docs, max_depth + 1] id tokens
    nodes: torch.Tensor  # [n_docs, max_depth + 1] trie node of each prefix
    per_rank: int  # batch size on each rank
    sched: Schedule
    encoder_fp: str
    data_digest: str
    n_trainable: int
    cache_seconds: float
    doc_vectors: torch.Tensor | None = None  # [n_docs, d] unit embeddings, for the contrastive term
    # (documents [n_texts, m], weights [n_texts, m]): each input's dense top documents, for
    # --teacher-weight
    teacher: tuple[torch.Tensor, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    stopped: str = "epochs"

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint" / "last"


def pick_device(device_kind: str, dist: Dist) -> torch.device:
    device = torch.device(f"cuda:{dist.local_rank}" if device_kind == "cuda" else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def settle_output(
    out: Path, cfg: TrainConfig, resume: bool, overwrite: bool, explicit: set[str], dist: Dist
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The config to run and the checkpoint state to resume from (None for a new run). A new
    run in a directory that holds one needs ``overwrite``, which removes the old run's files.
    With several ranks, every one must see ``out`` (see ``check_shared_directory``)."""
    check_shared_directory(out, dist)
    if resume:
        return read_resume_state(out / "checkpoint" / "last", cfg, explicit)
    if (out / "checkpoint").exists() or (out / "manifest.json").exists():
        if not overwrite:
            raise FileExistsError(
                f"{out} holds a training run; pass --resume to continue it or --overwrite to start over"
            )
        if dist.main:
            for name in RUN_FILES:
                p = out / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return cfg, None


def build_run(
    data: Path,
    ids: Path,
    query_dirs: list[Path],
    out: Path,
    cfg: TrainConfig,
    state: dict[str, Any] | None,
    started: float,
    device: torch.device,
    dist: Dist,
) -> Run:
    """Load the inputs, build the model, compute the features, and restore ``state`` if any."""
    from nci.semantic_ids import load_semantic_ids

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
    data_digest, encoder_fp = _check_inputs(tdata, cfg, state)
    # across machines every node reads its own inputs and command line: they must agree (the
    # encoder by content, as its path may differ from machine to machine)
    same = {f"option {k}": repr(v) for k, v in dataclasses.asdict(cfg).items() if k != "encoder"}
    check_same_everywhere(dist, {**same, "training data digest": data_digest, "encoder": encoder_fp})
    store, cache_seconds = feature_store(model, tdata, cfg, out, encoder_fp, device, dist)

    forward: nn.Module = TrainingForward(model)
    if dist.on:
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[device.index] if device.type == "cuda" else None
        )
    per_rank = max(1, cfg.batch_size // dist.world)
    epoch_size = len(epoch_order(tdata, weights, cfg.seed, 0))
    steps_per_epoch = math.ceil(math.ceil(epoch_size / dist.world) / per_rank)
    run = Run(
        cfg=cfg,
        out=out,
        dist=dist,
        device=device,
        started=started,
        data=tdata,
        source_weights=weights,
        model=model,
        forward=forward,
        optimizer=make_optimizer(model, cfg),
        store=store,
        trie=TrieTensors.from_trie(sem.trie, device),
        example_lengths=np.asarray(store.lengths)[tdata.example_text],
        targets=torch.from_numpy(tdata.targets),
        nodes=torch.from_numpy(tdata.nodes),
        per_rank=per_rank,
        sched=Schedule.start(cfg.epochs, steps_per_epoch, cfg.max_minutes, started),
        encoder_fp=encoder_fp,
        data_digest=data_digest,
        n_trainable=n_trainable,
        cache_seconds=cache_seconds,
        doc_vectors=contrast_vectors(sem, tdata, model, cfg, device),
        teacher=teacher_lists(sem, tdata, model, store, cfg, device, Path(data)),
    )
    if state is not None:
        restore(run, state)
    return run


# --teacher-weight: how many of the teacher's top documents teach each input, and the
# temperature of the softmax over their cosines
TEACHER_TOP = 10
TEACHER_TEMPERATURE = 0.05
# --teacher-lexical: the candidates each of dense retrieval and BM25 ranks, over which its scores
# are standardised (as the zscore combination of the fusion method, at its default depth)
TEACHER_DEPTH = 100


def document_vectors(
    sem: Any, tdata: TrainingData, model: NCIModel, device: torch.device, option: str
) -> torch.Tensor:
    """Each document's unit embedding (its own trie node's centroid) ``[n_docs, d]``, for the
    training ``option`` that scores the pooled query against them."""
    centroids = np.asarray(sem.centroids)
    if centroids.shape[1] != model.config.d_model:
        raise ValueError(
            f"{option}: the ids' embeddings are {centroids.shape[1]}-d, the decoder "
            f"{model.config.d_model}-d; the option needs them equal"
        )
    vectors = torch.from_numpy(np.array(centroids[tdata.nodes[:, -1]], dtype=np.float32))
    return F.normalize(vectors, dim=-1).to(device)


def contrast_vectors(
    sem: Any, tdata: TrainingData, model: NCIModel, cfg: TrainConfig, device: torch.device
) -> torch.Tensor | None:
    """The documents' unit embeddings for ``--contrastive-weight``; None when the term is off."""
    if cfg.contrastive_weight <= 0:
        return None
    return document_vectors(sem, tdata, model, device, "--contrastive-weight")


def teacher_lists(
    sem: Any,
    tdata: TrainingData,
    model: NCIModel,
    store: Any,
    cfg: TrainConfig,
    device: torch.device,
    data: Path,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """For ``--teacher-weight``: each input text's top documents by the teacher and their
    softmax weights, ``(documents [n_texts, m] int32, weights [n_texts, m])`` on the CPU; None
    when off.

    The teacher is dense retrieval, or with ``--teacher-lexical L`` its fusion with BM25 over the
    documents of ``data`` (:func:`fused_scores`). The query vector is the model's mean-pooled
    encoder output before any training step: the frozen encoder's sentence embedding (from the
    cached states, over the first ``max_length`` tokens), in the space of the documents'
    embeddings when the ids were built from this encoder's embeddings; a resumed run gets the same
    lists. Every data-parallel rank computes all of them."""
    if cfg.teacher_weight <= 0:
        if cfg.teacher_lexical > 0:
            log.warning("--teacher-lexical %g has no effect without --teacher-weight", cfg.teacher_lexical)
        return None
    if not isinstance(model.proj, nn.Identity):
        raise ValueError(
            f"--teacher-weight scores the encoder's own sentence embedding ({model.config.encoder_hidden}-d) "
            f"against the documents'; the decoder is {model.config.d_model}-d: leave --d-model unset"
        )
    doc_vectors = document_vectors(sem, tdata, model, device, "--teacher-weight")
    n_texts, n_docs = len(tdata.texts), doc_vectors.shape[0]
    m, depth = min(TEACHER_TOP, n_docs), min(TEACHER_DEPTH, n_docs)
    lexical = lexical_teacher(data, sem.doc_ids) if cfg.teacher_lexical > 0 else None
    kind = f"dense+BM25 ({cfg.teacher_lexical:g} lexical)" if lexical is not None else "dense"
    rows = max(16, min(1024, 50_000_000 // n_docs))  # keep the score block near 200 MB
    docs = torch.empty(n_texts, m, dtype=torch.int32)
    weights = torch.empty(n_texts, m)
    t0, training = time.time(), model.training
    model.eval()
    starts = range(0, n_texts, rows)
    for start in tqdm(starts, desc=f"teacher: {kind} top documents", unit="batch", mininterval=30.0):
        end = min(start + rows, n_texts)
        feats = store.batch(np.arange(start, end), device)
        with torch.no_grad():
            with amp_context(device, cfg.precision):
                if "states" in feats:
                    memory, mask = model.encode_top(feats["states"], feats["attention_mask"])
                else:
                    memory, mask = model.encode(feats["input_ids"], feats["attention_mask"])
            # scored in fp32 (autocast would round the cosines to bf16 and tie the top documents)
            scores = pooled_query(memory.float(), mask) @ doc_vectors.T
        if lexical is not None:
            lex_docs, lex_scores = lexical.top(tdata.texts[start:end], depth)
            scores = fused_scores(
                scores,
                torch.from_numpy(lex_docs).to(device),
                torch.from_numpy(lex_scores).to(device),
                cfg.teacher_lexical,
                depth,
            )
        top = scores.topk(m, dim=-1)
        docs[start:end] = top.indices.cpu().to(torch.int32)
        weights[start:end] = teacher_weights(top.values).cpu()
    model.train(training)
    log.info("teacher: %s top %d documents of %d inputs in %.1f s", kind, m, n_texts, time.time() - t0)
    return docs, weights


def lexical_teacher(data: Path, doc_ids: list[str]) -> Any:
    """BM25 (the index's default settings) over the documents of ``data``, numbered as ``doc_ids``."""
    from nci.data import document_text, load_corpus
    from nci.retrieval.bm25 import fit_bm25

    corpus = load_corpus(data)
    missing = [d for d in doc_ids if d not in corpus]
    if missing:
        raise ArtifactError(
            f"--teacher-lexical: {len(missing)} documents of the ids are not in {data} (first: {missing[0]})"
        )
    return fit_bm25([document_text(corpus[d]) for d in doc_ids])


def standardised(scores: torch.Tensor, listed: torch.Tensor) -> torch.Tensor:
    """Scores ``[B, n]`` in standard deviations of each row's ``listed`` entries above their
    lowest, 0 where not listed, 1 throughout a row whose listed scores are all equal (as the
    fusion method's zscore combination, :func:`nci.retrieval.fusion.normalised`)."""
    count = listed.sum(-1, keepdim=True).clamp(min=1)
    mean = torch.where(listed, scores, 0).sum(-1, keepdim=True) / count
    spread = (torch.where(listed, scores - mean, 0).square().sum(-1, keepdim=True) / count).sqrt()
    low = torch.where(listed, scores, torch.inf).amin(-1, keepdim=True)
    z = torch.where(spread > 0, (scores - low) / spread.clamp(min=1e-12), torch.ones_like(scores))
    return torch.where(listed, z, 0)


def fused_scores(
    cosines: torch.Tensor, lex_docs: torch.Tensor, lex_scores: torch.Tensor, lexical: float, depth: int
) -> torch.Tensor:
    """The teacher's score of every document ``[B, n_docs]`` under ``--teacher-lexical``: dense
    retrieval's and BM25's standardised scores over their top ``depth`` lists (BM25's
    ``lex_docs``/``lex_scores`` [B, depth], only the scores above 0) weighted ``1 - lexical`` and
    ``lexical``, in units of the dense list's standard deviation, and -inf for a document no
    weighted list holds (as the fusion method ranks only what its parts return). The temperature
    then means what it means for cosines: at ``lexical`` 0 the softmax over the top documents is
    dense retrieval's."""
    dense_top = cosines.topk(depth, dim=-1)
    scores = torch.zeros_like(cosines)
    listed = torch.zeros_like(cosines, dtype=torch.bool)
    if lexical < 1:
        every = torch.ones_like(dense_top.values, dtype=torch.bool)
        scores.scatter_(1, dense_top.indices, (1 - lexical) * standardised(dense_top.values, every))
        listed.scatter_(1, dense_top.indices, True)
    found = lex_scores > 0
    if lexical > 0:
        lex_docs = lex_docs.long()
        scores.scatter_add_(1, lex_docs, lexical * standardised(lex_scores, found))
        listed |= torch.zeros_like(listed).scatter_(1, lex_docs, found)
    spread = dense_top.values.std(-1, unbiased=False, keepdim=True)
    return torch.where(listed, scores * spread, -torch.inf)


def teacher_weights(scores: torch.Tensor) -> torch.Tensor:
    """Softmax weights of the teacher's top scores ``[B, m]`` (temperature
    :data:`TEACHER_TEMPERATURE`); 0 for a score of -inf (a document no list held), so a row
    whose lists were empty sums to 0 and its targets stay the labels."""
    finite = torch.isfinite(scores)
    return torch.softmax(scores.masked_fill(~finite, -1e30) / TEACHER_TEMPERATURE, -1) * finite


def _check_inputs(tdata: TrainingData, cfg: TrainConfig, state: dict[str, Any] | None) -> tuple[str, str]:
    """The training data's digest and the encoder's fingerprint; a resumed run must match both."""
    from nci.encoder import resolve_encoder

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
    return data_digest, encoder_fp


def feature_store(
    model: NCIModel,
    tdata: TrainingData,
    cfg: TrainConfig,
    out: Path,
    encoder_fp: str,
    device: torch.device,
    dist: Dist,
) -> tuple[Any, float]:
    """Per-text features and the seconds spent: token ids when the whole encoder trains, else the
    frozen encoder states, cached in ``out/cache`` (computed by rank 0, read by the others)."""
    if model.config.encoder_trainable_layers < 0:
        from nci.features import tokenize_all

        return tokenize_all(model.tokenizer, tdata.texts, cfg.max_length), 0.0
    from nci.features import cached_states

    t0 = time.time()
    store = None
    if dist.main:
        with amp_context(device, cfg.precision):
            store = cached_states(model, tdata.texts, out / "cache", encoder_fp, device)
    barrier(dist)
    if not dist.main:
        store = cached_states(model, tdata.texts, out / "cache", encoder_fp, device, compute=False)
        if store is None:
            raise ArtifactError(f"rank {dist.rank}: the feature cache in {out / 'cache'} is missing")
    cache_seconds = time.time() - t0
    log.info("encoder states ready in %.1f s", cache_seconds)
    return store, cache_seconds


def restore(run: Run, state: dict[str, Any]) -> None:
    """Weights, optimizer, RNG states, history and position from ``run.checkpoint``."""
    checkpoint = run.checkpoint
    run.model.load_decoder_state(load_tensors(checkpoint / "weights.safetensors"), source=checkpoint)
    run.optimizer.load_state_dict(
        optimizer_from_files(load_tensors(checkpoint / "optimizer.safetensors"), state["optimizer"])
    )
    restore_rng(load_tensors(checkpoint / "rng.safetensors"), run.dist, run.device)
    run.history, run.best = state["history"], state["best"]
    run.sched.resume(state, run.cfg.epochs)
    log.info("resumed at epoch %d, batch %d (step %d)", run.sched.epoch + 1, run.sched.batch, run.sched.step)
