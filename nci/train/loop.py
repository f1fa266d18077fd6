"""The training loop: :func:`train` sets up a run, trains epoch by epoch (validating, recording
and checkpointing after each), and writes the best epoch as the model."""

from __future__ import annotations

import dataclasses
import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from nci.decoding import ConstrainedDecoder
from nci.model import choice_labels
from nci.train.budget import EpochClock, lr_factor
from nci.train.checkpoint import (
    CHECKPOINT_VERSION,
    rng_snapshot,
    save_checkpoint,
    save_tensors,
    trainable_state,
)
from nci.train.config import TrainConfig, amp_context, resolve_config
from nci.train.data import epoch_batches, epoch_order
from nci.train.ddp import StopFlag, all_max, all_sum, barrier, init_distributed, rank_part
from nci.train.finish import write_model
from nci.train.loss import contrastive_loss, rdrop_loss, teacher_targets
from nci.train.prepare import Run, build_run, pick_device, settle_output
from nci.train.validate import fmt, is_better, plot_curve, success_at, write_metrics

log = logging.getLogger("nci.train")


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
        out = Path(out)
        device = pick_device(device_kind, dist)
        if not resume:
            resolve_config(cfg, device)  # refuse what the device makes contradictory before touching out
        cfg, state = settle_output(out, cfg, resume, overwrite, explicit, dist)
        barrier(dist)
        cfg = resolve_config(cfg, device)
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            (out / "manifest.json").unlink(missing_ok=True)  # unfinished again until the end
        run = build_run(data, ids, query_dirs, out, cfg, state, started, device, dist)
        if run.sched.step >= run.sched.total_steps:
            log.info(
                "the checkpoint has trained %d of %d planned steps; writing the model",
                run.sched.step,
                run.sched.total_steps,
            )
        with StopFlag() as stop:
            signum = train_epochs(run, stop)
        if signum:
            return 128 + signum
        write_model(run, data, ids, query_dirs)
        return 0
    finally:
        if dist.on:
            torch.distributed.destroy_process_group()


@dataclass
class EpochTotals:
    """One epoch's losses (summed: loss, ce, kl), steps and examples on this rank."""

    clock: EpochClock
    sums: np.ndarray = field(default_factory=lambda: np.zeros(3))
    n_steps: int = 0
    n_examples: int = 0


def train_epochs(run: Run, stop: StopFlag) -> int:
    """Train until the plan, ``--max-steps`` or the budget ends it (``run.stopped`` says which)
    and return 0, or until a signal does, and return its number."""
    sched = run.sched
    while sched.step < sched.total_steps:
        totals, batches = start_epoch(run)
        halt = train_batches(run, totals, batches, stop)
        train_seconds = time.time() - totals.clock.start
        if halt is not None:
            save(run, "interrupted")
            if halt[0]:
                return _interrupted(run, int(halt[0]), f"at epoch {sched.epoch + 1}, step {sched.step}")
            run.stopped = "max_steps" if halt[1] else "max_minutes"
            return 0
        t_val = validate_epoch(run, totals, train_seconds)
        sched.after_epoch(totals.clock, totals.n_steps, t_val, run.dist, run.device)
        save(run, "epoch")
        if run.dist.main:
            write_metrics(run.history, run.out / "metrics.jsonl")
            plot_curve(run.history, run.out / "training_curve.png")
        signum = int(all_max(run.dist, float(stop.signum or 0), run.device))
        if signum:
            return _interrupted(run, signum, f"after epoch {sched.epoch}")
        if run.cfg.max_steps is not None and sched.step >= run.cfg.max_steps:
            run.stopped = "max_steps"
            return 0
        if sched.budget_spent:
            run.stopped = "max_minutes"
            log.info(
                "--max-minutes %g: the planned %d steps are done", run.cfg.max_minutes, sched.total_steps
            )
            return 0
    return 0


def _interrupted(run: Run, signum: int, where: str) -> int:
    log.error(
        "interrupted by %s %s; checkpoint in %s. Rerun the same command with --resume to continue.",
        signal.Signals(signum).name,
        where,
        run.checkpoint,
    )
    return signum


def start_epoch(run: Run) -> tuple[EpochTotals, list[np.ndarray]]:
    """The current epoch's global batches (a function of the seed and the epoch, the same for any
    number of processes: each rank trains on its part of each, see :func:`rank_part`)."""
    cfg, sched = run.cfg, run.sched
    order = epoch_order(run.data, run.source_weights, cfg.seed, sched.epoch)
    batches = epoch_batches(
        order, run.example_lengths, run.per_rank * run.dist.world, cfg.seed, sched.epoch, cfg.length_buckets
    )
    run.forward.train()
    return EpochTotals(clock=EpochClock.now()), batches


def train_batches(
    run: Run, totals: EpochTotals, batches: list[np.ndarray], stop: StopFlag
) -> list[float] | None:
    """Train the epoch's remaining batches. Returns None when the epoch (or the plan) is done, or
    the reasons every rank stops early for: ``[signal, max_steps reached, past the deadline]``."""
    cfg, sched, dist = run.cfg, run.sched, run.dist
    bar = tqdm(
        total=len(batches),
        initial=sched.batch,
        desc=f"epoch {sched.epoch + 1}/{sched.planned_epochs}",
        unit="step",
        disable=not dist.main,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,
    )
    try:
        while sched.batch < len(batches):
            batch = batches[sched.batch]
            rows, n_real = rank_part(batch, dist)
            examples = len(batch) / dist.world if dist.on else None
            totals.sums += train_step(run, rows, n_real, labelled_positions(run, batch), examples)
            totals.n_steps += 1
            totals.n_examples += n_real
            sched.batch += 1
            sched.step += 1
            bar.update(1)
            if totals.n_steps % 10 == 0:
                n = totals.n_steps
                bar.set_postfix(loss=f"{totals.sums[0] / n:.3f}", kl=f"{totals.sums[2] / n:.4f}")
            sched.after_step(totals.clock, totals.n_steps, len(batches), dist, run.device)
            if sched.step >= sched.total_steps:
                break  # the plan ends within this epoch: validate what was trained
            halt = [
                float(stop.signum or 0),
                float(cfg.max_steps is not None and sched.step >= cfg.max_steps),
                float(sched.deadline is not None and time.time() > sched.deadline),
            ]
            halt = all_max(dist, halt, run.device)
            if any(halt) and sched.batch < len(batches):
                return halt
        return None
    finally:
        bar.close()


def labelled_positions(run: Run, batch: np.ndarray) -> float | None:
    """Under data parallelism, the labelled id positions of the whole global batch per rank: what
    each rank's loss averages over, so that the ranks' averaged gradients are those of one process
    on the whole batch, whatever the ids' lengths. None for one process (its batch's own mean)."""
    if not run.dist.on:
        return None
    tokens = run.targets[torch.from_numpy(run.data.example_doc[batch])]
    return float((choice_labels(tokens, run.model.config.k) != -100).sum()) / run.dist.world


def train_step(
    run: Run, rows: np.ndarray, n_real: int, positions: float | None, examples: float | None = None
) -> list[float]:
    """One optimizer step on this rank's examples ``rows`` (the first ``n_real`` real, the rest
    padding the loss ignores), its loss averaged over ``positions`` labelled positions (default:
    its own) and its contrastive term over ``examples`` examples (default: its own ``n_real``);
    returns ``[loss, ce, kl]``."""
    cfg, model, device = run.cfg, run.model, run.device
    docs = torch.from_numpy(run.data.example_doc[rows])
    feats = run.store.batch(run.data.example_text[rows], device)
    targets = run.targets[docs].to(device)
    nodes = run.nodes[docs].to(device)
    factor = lr_factor(run.sched.step, run.sched.total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
    for group in run.optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    contrast = run.doc_vectors is not None
    with amp_context(device, cfg.precision):
        out = run.forward(feats, targets, nodes, cfg.rdrop_alpha > 0, pooled=contrast)
    logits, query = out if contrast else (out, None)
    labels = choice_labels(targets, model.config.k)
    labels[n_real:] = -100  # padding rows
    soft = step_teacher_targets(run, rows, labels)
    loss, ce, kl = rdrop_loss(logits, labels, cfg.rdrop_alpha, cfg.label_smoothing, positions, soft)
    if query is not None:
        term = contrastive_loss(query, run.doc_vectors, docs, n_real, examples)
        loss = loss + cfg.contrastive_weight * term
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
    run.optimizer.step()
    return [loss.item(), ce.item(), kl.item()]


def step_teacher_targets(run: Run, rows: np.ndarray, labels: torch.Tensor) -> torch.Tensor | None:
    """The soft targets of examples ``rows`` (their labels ``labels``) under ``--teacher-weight``:
    each example's teacher is its input text's list; None when the option is off."""
    if run.teacher is None:
        return None
    k = run.model.config.k
    text = torch.from_numpy(run.data.example_text[rows])
    teacher_docs, teacher_weights = run.teacher[0][text].long(), run.teacher[1][text]
    teacher_labels = choice_labels(run.targets[teacher_docs].to(labels.device), k)
    return teacher_targets(
        labels, teacher_labels, teacher_weights.to(labels.device), k, run.cfg.teacher_weight
    )


def validate_epoch(run: Run, totals: EpochTotals, train_seconds: float) -> float:
    """Validate, record the epoch in ``run.history``, keep the best weights; returns when
    validation began."""
    cfg, dist, device, sched = run.cfg, run.dist, run.device, run.sched
    t_val = time.time()
    run.model.eval()  # before the decoder: its per-node heads are computed without dropout
    decode = ConstrainedDecoder(run.model, run.trie)
    where = (device, cfg.precision, dist)
    val1, val10 = success_at(run.model, run.store, run.data.val, decode, cfg.val_beam, *where)
    probe1, _ = success_at(run.model, run.store, run.data.train_probe, decode, 1, *where)
    val_seconds = time.time() - t_val
    sched.end_reserve = sched.spare + val_seconds
    *sums, n_examples = all_sum(dist, [*totals.sums.tolist(), float(totals.n_examples)], device)
    n_total = max(1, totals.n_steps * dist.world)
    row = {
        "epoch": sched.epoch + 1,
        "step": sched.step,
        "loss": sums[0] / n_total,
        "ce": sums[1] / n_total,
        "kl": sums[2] / n_total,
        "lr": run.optimizer.param_groups[0]["lr"],
        "val_success@1": val1,
        "val_success@10": val10,
        "train_success@1": probe1,
        "seconds": round(train_seconds, 2),
        "val_seconds": round(val_seconds, 2),
        "examples_per_s": round(n_examples / train_seconds, 1),
        "elapsed": round(time.time() - run.started, 1),
    }
    run.history.append(row)
    _log_epoch(row, train_seconds, val_seconds)
    if is_better(row, run.best):
        run.best = {k: row[k] for k in ("epoch", "val_success@1", "val_success@10")}
        if dist.main:
            save_tensors(trainable_state(run.model), run.out / "checkpoint" / "best.safetensors")
    return t_val


def _log_epoch(row: dict[str, Any], train_seconds: float, val_seconds: float) -> None:
    log.info(
        "epoch %d: loss %.4f (ce %.4f, kl %.4f); val success@1 %s @10 %s; train@1 %.3f; %.0f s + %.0f s val",
        row["epoch"],
        row["loss"],
        row["ce"],
        row["kl"],
        fmt(row["val_success@1"]),
        fmt(row["val_success@10"]),
        row["train_success@1"],
        train_seconds,
        val_seconds,
    )


def checkpoint_state(run: Run) -> dict[str, Any]:
    """``state.json``: where the run is, its plan, history and config, and what it trained on."""
    sched = run.sched
    return {
        "version": CHECKPOINT_VERSION,
        "epoch": sched.epoch,
        "batch": sched.batch,
        "global_step": sched.step,
        "planned_epochs": sched.planned_epochs,
        "total_steps": sched.total_steps,
        "history": run.history,
        "best": run.best,
        "config": dataclasses.asdict(run.cfg),
        "encoder_fingerprint": run.encoder_fp,
        "data_digest": run.data_digest,
        "world_size": run.dist.world,
    }


def save(run: Run, reason: str) -> None:
    """Checkpoint (rank 0 writes; every rank's RNG state goes in)."""
    rng = rng_snapshot(run.dist, run.device)
    if run.dist.main:
        save_checkpoint(run.out, run.model, run.optimizer, checkpoint_state(run), rng)
        log.info("checkpoint (%s) at step %d -> %s", reason, run.sched.step, run.checkpoint)
    barrier(run.dist)
