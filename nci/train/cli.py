"""``nci train`` / ``python -m nci.train``: the command line."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch

from nci.manifest import ArtifactError
from nci.train.config import TrainConfig
from nci.train.loop import train


def _option(group: Any, flag: str, help_text: str = "", **kw: Any) -> None:
    """A config field's option. It is only set when given, so --resume can tell it from a default."""
    default = getattr(TrainConfig(), flag[2:].replace("-", "_"), None)
    shown = f" (default {default})" if default is not None and "store_" not in str(kw.get("action")) else ""
    group.add_argument(flag, default=argparse.SUPPRESS, help=help_text + shown, **kw)


def _switch(group: Any, flag: str, dest: str, help_text: str) -> None:
    """--no-X turns a default-on field off, --X a default-off one on."""
    action = "store_false" if flag.startswith("--no-") else "store_true"
    group.add_argument(flag, dest=dest, action=action, default=argparse.SUPPRESS, help=help_text)


def add_arguments(p: argparse.ArgumentParser) -> None:
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

    g = p.add_argument_group("run")
    _option(g, "--device", choices=["auto", "cpu", "cuda"])
    _option(g, "--epochs", type=int)
    _option(g, "--max-minutes", "wall-time budget, feature caching included", type=float)
    _option(g, "--max-steps", "stop after this many optimizer steps (smoke runs)", type=int)
    _option(g, "--seed", type=int)
    _option(
        g,
        "--precision",
        "bf16 autocast or fp32; auto: bf16 on CUDA and on CPUs with native bf16",
        choices=["auto", "fp32", "bf16"],
    )
    _add_optimisation_arguments(p.add_argument_group("optimisation"))
    _add_model_arguments(p)
    v = p.add_argument_group("validation")
    _option(v, "--val-fraction", "share of training queries held out (at most --val-max)", type=float)
    _option(v, "--val-max", type=int)
    _option(v, "--val-beam", type=int)


def _add_optimisation_arguments(o: Any) -> None:
    _option(o, "--batch-size", "global batch; default 128 on CPU, 256 on CUDA", type=int)
    _option(o, "--lr", "decoder learning rate", type=float)
    _option(o, "--encoder-lr", "learning rate of trainable encoder layers", type=float)
    _option(o, "--weight-decay", type=float)
    _option(o, "--warmup-steps", type=int)
    _option(o, "--min-lr-ratio", "cosine decay floor, as a fraction of the learning rate", type=float)
    _option(o, "--grad-clip", "gradient norm clip, 0 = off", type=float)
    _option(o, "--rdrop-alpha", "weight of the R-drop KL term; 0 turns R-drop off", type=float)
    _option(o, "--label-smoothing", type=float)
    _option(
        o,
        "--contrastive-weight",
        "weight of a contrastive term between the pooled query and every document's embedding "
        "(0 = off; needs trainable encoder layers)",
        type=float,
    )
    _option(
        o,
        "--teacher-weight",
        "share of each target moved to the documents dense retrieval ranks first for the input "
        "(distillation; 0 = off)",
        type=float,
    )
    _option(
        o,
        "--teacher-lexical",
        "the teacher's share of BM25: 0 = dense retrieval alone, above 0 their fusion, 1 = BM25 alone",
        type=float,
    )
    _option(o, "--source-weights", "per-source epoch weights; unnamed sources weigh 1")
    _switch(
        o,
        "--no-length-buckets",
        "length_buckets",
        "batch in plain shuffled order instead of grouping inputs of similar length",
    )


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    m = p.add_argument_group("model")
    _option(m, "--encoder", "encoder directory or name; default the packaged all-MiniLM-L6-v2")
    _option(
        m,
        "--encoder-trainable-layers",
        "top encoder layers to train on cached states below them; 0 = frozen (CPU default), -1 = all "
        "(CUDA default)",
        type=int,
    )
    _option(m, "--max-length", "query tokens", type=int)
    _option(m, "--d-model", "decoder width; default the encoder's", type=int)
    _option(m, "--n-layers", "decoder layers", type=int)
    _option(m, "--n-heads", type=int)
    _option(m, "--d-ff", "decoder feed-forward width; default 4 * d-model", type=int)
    _option(m, "--dropout", type=float)
    _option(m, "--pawa-layers", "layers of the PAWA prefix transformer", type=int)
    # these two were always top-level options, not in the model group (keeps --help as it was)
    _switch(p, "--no-pawa", "pawa", "one shared output layer instead of PAWA (ablation)")
    _switch(
        p,
        "--centroid-prior",
        "centroid_prior",
        "add per-node output weights initialised from the k-means centroids of each node's children",
    )


def config_from_args(args: argparse.Namespace) -> tuple[TrainConfig, set[str]]:
    """The config and the names of the fields given on the command line."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in vars(args).items() if k in names}
    return TrainConfig(**given), set(given)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Train the NCI model (encoder + PAWA decoder).",
        epilog="Data-parallel: torchrun --nproc_per_node N -m nci.train ... on one machine; on M machines, "
        "torchrun --nnodes M --nproc_per_node N --rdzv_backend c10d --rdzv_endpoint HOST:PORT "
        "--rdzv_id JOB -m nci.train ... on each, the same command, with --out on a filesystem they all "
        "share. --batch-size is the global batch.",
    )
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
