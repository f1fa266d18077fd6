"""A fresh NCI model for training, and its optimizer.

``build_model`` sizes the decoder from the training config and the semantic ids (``nci.model``
itself only rebuilds saved models, from their ``config.json``), loads the encoder, and marks which
encoder weights train; ``make_optimizer`` groups the trainable weights for AdamW. Training
(``nci.train``) and ``scripts/ids_probe.py`` (an untrained centroid-prior model) build models here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from nci.model import NCIConfig, NCIModel

if TYPE_CHECKING:
    from nci.semantic_ids import SemanticIds
    from nci.train.config import TrainConfig


def build_model(cfg: TrainConfig, sem: SemanticIds) -> NCIModel:
    """A new model over ``sem``'s ids, with ``cfg``'s decoder size and trainable encoder layers
    (``cfg.encoder_trainable_layers`` resolved: -1 all, 0 none, N the top N)."""
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
    """AdamW over the trainable weights: decoder matrices with weight decay, decoder vectors and
    the centroid table without, trainable encoder weights at ``cfg.encoder_lr``. Each group's
    ``base_lr`` is what the schedule scales."""
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
