"""The end of a run: the best validated epoch written as the model (``config.json``,
``model.safetensors``, ``encoder/``), the metrics, the config, and ``manifest.json`` last."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from pathlib import Path

from nci.manifest import write_json_atomic, write_manifest
from nci.model import NCIModel
from nci.train.checkpoint import load_tensors, state_digest, trainable_state
from nci.train.ddp import barrier, gather
from nci.train.prepare import Run
from nci.train.validate import plot_curve, write_metrics

log = logging.getLogger("nci.train")


def write_model(run: Run, data: Path, ids: Path, query_dirs: list[Path]) -> None:
    """Write the final model: the best validated epoch (or the last state when nothing was
    validated). Every rank must end with the same weights."""
    last_digest = state_digest(trainable_state(run.model))
    digests = gather(run.dist, last_digest)
    if len(set(digests)) > 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")
    if run.dist.main:
        out, best = run.out, run.best
        best_path = out / "checkpoint" / "best.safetensors"
        final = run.model
        if best is not None and best_path.is_file() and best.get("val_success@1") is not None:
            final.load_decoder_state(load_tensors(best_path), source=best_path)
        place_model(final, out)
        write_metrics(run.history, out / "metrics.jsonl")
        if run.history:
            plot_curve(run.history, out / "training_curve.png")
        write_json_atomic(out / "train_config.json", dataclasses.asdict(run.cfg))
        _write_manifest(run, data, ids, query_dirs, digests)
        log.info(
            "model (epoch %s) -> %s; %d epochs, %.1f min",
            best and best["epoch"],
            out,
            run.sched.epoch,
            (time.time() - run.started) / 60,
        )
    barrier(run.dist)


def _write_manifest(run: Run, data: Path, ids: Path, query_dirs: list[Path], digests: list[str]) -> None:
    inputs: dict[str, Path] = {"data": Path(data), "ids": Path(ids)}
    inputs.update({f"queries_{i}": Path(q) for i, q in enumerate(query_dirs)})
    write_manifest(
        run.out,
        stage="train",
        config=dataclasses.asdict(run.cfg),
        inputs=inputs,
        counts={
            **run.data.counts,
            "epochs": run.sched.epoch,
            "steps": run.sched.step,
            "trainable_parameters": run.n_trainable,
            "processes": run.dist.world,
        },
        wall_seconds=time.time() - run.started,
        extra={
            "best": run.best,
            "stopped": run.stopped,
            "device": str(run.device),
            "feature_cache_seconds": run.cache_seconds,
            "last_parameter_sha256": digests,
            "model_config": dataclasses.asdict(run.model.config),
            "history": run.history,
        },
    )


def place_model(model: NCIModel, out: Path) -> None:
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
