"""Validation: success@1 and @10 of the trie-constrained search on held-out training questions,
which epoch is best, and the per-epoch record (``metrics.jsonl``, ``training_curve.png``)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nci.decoding import ConstrainedDecoder
from nci.model import NCIModel
from nci.train.config import amp_context
from nci.train.ddp import Dist, all_sum


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
    hits1, hits10, n = all_sum(dist, [hits1, hits10, float(len(mine))], device)
    return (hits1 / n, hits10 / n) if n else (None, None)


def is_better(row: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None or row.get("val_success@1") is None:
        return True  # no validation set: the last epoch is the model
    return (row["val_success@1"], row["val_success@10"]) > (best["val_success@1"], best["val_success@10"])


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_metrics(history: list[dict[str, Any]], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)


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
