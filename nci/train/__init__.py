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

Time budget: ``--max-minutes`` plans the learning-rate schedule in steps. After 30 steps, again
after every epoch, and inside an epoch when the recent pace would overrun, it fits as many steps
as the time left allows (holding back time for a last validation), so the cosine decay ends at
the budget. The last epoch may be partial; it is validated like the others.

The output directory is the run's working directory: ``checkpoint/`` (last state every epoch
and on SIGINT/SIGTERM, for ``--resume``; ``best.safetensors``), ``cache/`` (encoder states),
``metrics.jsonl``, ``training_curve.png``, and at the end the model (``config.json``,
``model.safetensors``, ``encoder/``; the epoch with the best validation success@1) and
``manifest.json``, written last: a directory without it is not a finished model.

Modules: ``config`` (TrainConfig), ``data`` (the examples, each epoch's order and batches),
``loss`` (R-drop and the training forward pass), ``budget`` (the learning-rate schedule and the
``--max-minutes`` plan), ``prepare`` (output directory, inputs, model, features), ``loop`` (the
epochs), ``validate`` (success@k, metrics, curve), ``checkpoint``, ``finish`` (the model and its
manifest), ``ddp`` (ranks, collectives, signals) and ``cli``. The model and its optimizer are
built by ``nci.model_build``.
"""

from nci.model_build import build_model, make_optimizer
from nci.train.budget import Schedule, lr_factor
from nci.train.checkpoint import (
    CHECKPOINT_VERSION,
    optimizer_from_files,
    optimizer_to_files,
    restore_rng,
    rng_snapshot,
    save_checkpoint,
    state_digest,
    trainable_state,
)
from nci.train.cli import add_arguments, config_from_args, main
from nci.train.config import (
    PER_INVOCATION,
    RUN_CONTROL,
    SOURCES,
    TrainConfig,
    amp_context,
    cpu_has_bf16,
    parse_source_weights,
    resolve_config,
)
from nci.train.data import (
    TrainingData,
    epoch_batches,
    epoch_order,
    load_training_data,
    target_nodes,
    training_data_digest,
)
from nci.train.ddp import Dist, StopFlag, init_distributed
from nci.train.loop import train
from nci.train.loss import TrainingForward, rdrop_loss
from nci.train.validate import plot_curve, success_at

__all__ = [
    "CHECKPOINT_VERSION",
    "PER_INVOCATION",
    "RUN_CONTROL",
    "SOURCES",
    "Dist",
    "Schedule",
    "StopFlag",
    "TrainConfig",
    "TrainingData",
    "TrainingForward",
    "add_arguments",
    "amp_context",
    "build_model",
    "config_from_args",
    "cpu_has_bf16",
    "epoch_batches",
    "epoch_order",
    "init_distributed",
    "load_training_data",
    "lr_factor",
    "main",
    "make_optimizer",
    "optimizer_from_files",
    "optimizer_to_files",
    "parse_source_weights",
    "plot_curve",
    "rdrop_loss",
    "resolve_config",
    "restore_rng",
    "rng_snapshot",
    "save_checkpoint",
    "state_digest",
    "success_at",
    "target_nodes",
    "train",
    "trainable_state",
    "training_data_digest",
]
