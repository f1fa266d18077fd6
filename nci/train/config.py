"""The training config: one frozen dataclass, the fields a resumed run may change, and the
defaults that depend on the device."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

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
    # weight of a contrastive term: the pooled query against every document's embedding (its
    # own trie node's centroid), scaled by 20 (temperature 0.05); 0 = off. Needs trainable
    # encoder layers (see resolve_config).
    contrastive_weight: float = 0.0
    # share of each id token's target moved from the label to the documents dense retrieval
    # (the input's frozen-encoder embedding against the documents') ranks first, in proportion
    # to their softmax weights (temperature 0.05, top 10); 0 = off (distillation from dense
    # retrieval, see nci.train.loss.teacher_targets)
    teacher_weight: float = 0.0
    # the teacher's lexical share: 0 = dense retrieval alone; above 0 its fusion with BM25 (each
    # standardised over its top 100, weighted 1 - this and this); 1 = BM25 alone
    teacher_lexical: float = 0.0
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
        if self.contrastive_weight < 0:
            raise ValueError(f"contrastive_weight must be >= 0, got {self.contrastive_weight}")
        if not 0 <= self.teacher_weight < 1:
            raise ValueError(f"teacher_weight must be within [0, 1), got {self.teacher_weight}")
        if not 0 <= self.teacher_lexical <= 1:
            raise ValueError(f"teacher_lexical must be within [0, 1], got {self.teacher_lexical}")
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


def resolve_config(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """Fill the device-dependent defaults, so the recorded config says what ran; a contrastive
    term with a frozen encoder (nothing it could train) is refused."""
    cuda = device.type == "cuda"
    layers = cfg.encoder_trainable_layers if cfg.encoder_trainable_layers is not None else (-1 if cuda else 0)
    if cfg.contrastive_weight > 0 and layers == 0:
        raise ValueError(
            "--contrastive-weight trains the pooled query, which a frozen encoder does not change; "
            "give --encoder-trainable-layers 1 or more"
        )
    return dataclasses.replace(
        cfg,
        batch_size=cfg.batch_size or (256 if cuda else 128),
        encoder_trainable_layers=layers,
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


def amp_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast when the resolved precision is bf16 (CPU or CUDA); nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
