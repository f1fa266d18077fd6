"""The training objective (Wang et al. 2022, section 3.4): cross-entropy over the id tokens plus
``alpha`` times the symmetric KL divergence between two forward passes of the same batch with
different dropout (R-drop), and the module that runs both passes; optionally (``nci train
--contrastive-weight``) a contrastive term between the pooled query and the documents' embeddings,
measured on SQuAD and not part of any recipe (README: NCI levers on split seed 0); optionally
(``nci train --teacher-weight``) targets that move a share of each token's probability to the
documents dense retrieval ranks first for the input (:func:`teacher_targets`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nci.model import NCIModel, pooled_query

# the contrastive term scores every document up to this many, else the batch's documents and a
# random sample of this many others
CONTRAST_MAX_DOCS = 65_536


def teacher_targets(
    labels: torch.Tensor, teacher_labels: torch.Tensor, teacher_weights: torch.Tensor, k: int, share: float
) -> torch.Tensor:
    """Soft targets ``[B, T, k+1]``: at each labelled position, ``1 - share`` on the label and
    ``share`` spread over the next tokens of the teacher's documents whose ids share the label's
    prefix, in proportion to their weights (all on the label where none does). ``labels`` [B, T]
    and ``teacher_labels`` [B, m, T] are compact labels (:func:`nci.model.choice_labels`) of each
    row's document and of its teacher's m documents; ``teacher_weights`` [B, m] sum to 1 or less.
    Rows of unlabelled positions (-100) are zero."""
    B, T = labels.shape
    valid = labels != -100
    same = teacher_labels == labels[:, None, :]  # [B, m, T]
    # a teacher document counts at position t when its id agrees with the label's before t
    before = torch.cumprod(torch.cat([same.new_ones(B, same.shape[1], 1), same[..., :-1]], -1).int(), -1)
    mass = teacher_weights[..., None] * before * (teacher_labels != -100)  # [B, m, T]
    spread = torch.zeros(B, T, k + 1, device=labels.device)
    spread.scatter_add_(2, teacher_labels.clamp(min=0).transpose(1, 2), mass.transpose(1, 2).float())
    total = spread.sum(-1, keepdim=True)
    hard = F.one_hot(labels.clamp(min=0), k + 1).float()
    teach = torch.where(total > 0, spread / total.clamp(min=1e-12), hard)
    return ((1 - share) * hard + share * teach) * valid[..., None]


def rdrop_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    label_smoothing: float = 0.0,
    positions: float | None = None,
    soft: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, ce, kl)``. With ``alpha > 0``, ``logits`` hold two passes ``[2B, T, C]`` (first B
    rows, then the same B again) and ``labels`` is ``[B, T]``; kl is the symmetric KL between the
    passes, averaged over labelled positions: 0.5 * (KL(p1||p2) + KL(p2||p1)). Both terms average
    over the labelled positions of ``labels``, or over ``positions`` of them when given (a data-
    parallel rank's share of its global batch's). ``soft`` [B, T, C] (:func:`teacher_targets`)
    replaces the one-hot targets of the cross-entropy; label smoothing applies to either."""
    logits = logits.float()
    passes = 2 if alpha > 0 else 1
    if soft is None:
        ce = F.cross_entropy(
            logits.flatten(0, 1),
            labels.repeat(passes, 1).flatten(),
            ignore_index=-100,
            label_smoothing=label_smoothing,
            reduction="mean" if positions is None else "sum",
        )
    else:
        valid = (labels != -100).repeat(passes, 1)
        target = soft.repeat(passes, 1, 1)
        target = (1 - label_smoothing) * target + label_smoothing / target.shape[-1]
        ce = -(target * F.log_softmax(logits, -1)).sum(-1)[valid].sum()
        if positions is None:
            ce = ce / valid.sum().clamp(min=1)
    if positions is not None:
        ce = ce / (passes * positions)
    if alpha <= 0:
        return ce, ce.detach(), torch.zeros((), device=logits.device)
    valid = labels != -100
    first, second = logits.chunk(2)
    lp1, lp2 = F.log_softmax(first[valid], -1), F.log_softmax(second[valid], -1)
    kl_terms = 0.5 * ((lp1.exp() - lp2.exp()) * (lp1 - lp2)).sum(-1)
    kl = kl_terms.mean() if positions is None else kl_terms.sum() / positions
    return ce + alpha * kl, ce.detach(), kl.detach()


def contrastive_loss(
    query: torch.Tensor,
    doc_vectors: torch.Tensor,
    docs: torch.Tensor,
    n_real: int,
    examples: float | None = None,
    scale: float = 20.0,
) -> torch.Tensor:
    """Cross-entropy of each query's document among the documents, by ``scale`` times the cosine
    of the pooled query ``query`` [passes * B, d] and the unit document vectors ``doc_vectors``
    [n_docs, d]; ``docs`` [B] are the rows' documents, of which the first ``n_real`` are real (the
    rest is padding). Averaged over the real rows, or over ``examples`` of them when given (a
    data-parallel rank's share of its global batch, as ``positions`` in :func:`rdrop_loss`; a
    rank with only padding then adds 0). Above :data:`CONTRAST_MAX_DOCS` documents the candidates
    are the batch's documents and a random sample."""
    docs = docs.to(query.device)
    n_docs = doc_vectors.shape[0]
    if n_docs > CONTRAST_MAX_DOCS:
        sample = torch.randint(n_docs, (CONTRAST_MAX_DOCS,), device=query.device)
        candidates, inverse = torch.unique(torch.cat([docs, sample]), return_inverse=True)
        docs, doc_vectors = inverse[: len(docs)], doc_vectors[candidates]
    passes = len(query) // len(docs)
    labels = docs.clone()
    labels[n_real:] = -100
    logits = scale * query.float() @ doc_vectors.T
    total = F.cross_entropy(logits, labels.repeat(passes), ignore_index=-100, reduction="sum")
    return total / (passes * max(examples if examples is not None else n_real, 1))


class TrainingForward(nn.Module):
    """Features -> compact logits, with R-drop's second pass in the same batch. One module so
    that DistributedDataParallel sees the whole trainable computation in ``forward``."""

    def __init__(self, model: NCIModel):
        super().__init__()
        self.model = model

    def forward(
        self,
        features: dict[str, torch.Tensor],
        targets: torch.Tensor,
        nodes: torch.Tensor,
        twice: bool,
        pooled: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Compact logits; with ``pooled``, also each pass's pooled query (:func:`pooled_query`)."""
        nodes = nodes if self.model.config.centroid_prior else None
        passes = 2 if twice else 1
        if "states" in features and self.model.config.encoder_trainable_layers == 0:
            # frozen encoder: both passes share one memory (and its attention keys and values)
            memory, mask = self.model.encode_top(features["states"], features["attention_mask"])
            logits = self.model(memory, mask, targets, nodes, passes=passes)
            if pooled:
                return logits, pooled_query(memory, mask).repeat(passes, 1)
            return logits
        # trainable encoder layers: each pass gets its own encoder dropout
        features = {k: v.repeat(passes, *[1] * (v.dim() - 1)) for k, v in features.items()}
        targets = targets.repeat(passes, 1)
        nodes = None if nodes is None else nodes.repeat(passes, 1)
        if "states" in features:
            memory, mask = self.model.encode_top(features["states"], features["attention_mask"])
        else:
            memory, mask = self.model.encode_train(features["input_ids"], features["attention_mask"])
        logits = self.model(memory, mask, targets, nodes)
        return (logits, pooled_query(memory, mask)) if pooled else logits
