"""doc2query: a sequence-to-sequence model that writes queries a document answers.

No pretrained doc2query, T5 or BART weights are assumed. ``train_generator`` builds an
encoder-decoder from a BERT encoder (by default the packaged all-MiniLM-L6-v2) for both halves,
in the manner of Rothe et al. 2020 ("Leveraging Pre-trained Checkpoints for Sequence Generation
Tasks"): the decoder reuses the BERT layers with a causal mask and new cross-attention, and the
whole model is fine-tuned on a dataset's training (query, document) pairs. It is saved with
``save_pretrained``, so ``AutoModelForSeq2SeqLM`` loads it like any other seq2seq model, and
``sample_queries`` treats it and, say, a public doc2query-T5 directory the same way.

The CPU recipe (the default) keeps the encoder and the word embeddings frozen, computes each
document's encoder states once, and trains the decoder layers, the new cross-attention and the LM
head transform; ``finetune_all`` trains everything (for a GPU).

Sampling is seeded per (seed, document id, sample number), never per batch, so the queries of a
document do not depend on the batch size, the chunking, or which other documents are in the run.
By default a query may only use the document's own tokens and common query words
(``QUERY_WORDS``): a small generator otherwise drifts to the topics of its training set.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nci.encoder import DEFAULT_ENCODER, resolve_encoder

log = logging.getLogger(__name__)

TRAIN_STAGE = "doc2query"
TRAIN_QUERY_IDS = "train_query_ids.txt"  # provenance: exactly the queries the generator saw


class GeneratorError(ValueError):
    """A query generator could not be loaded or used; the message says what to do."""


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any values, the same on every machine and Python run."""
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GeneratorError(f"--device {name}: CUDA is not available here; use --device cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# Training data


def training_pairs(data_dir: str | Path) -> list[tuple[str, str]]:
    """(query id, doc id) pairs of the training split with a positive grade, in qrels order.

    Only ``qrels/train.tsv`` is read. A query id that is also judged in the test split is
    left out (and logged): test queries must reach no training stage. A dataset without a
    training split gives [].
    """
    from nci.data import load_qrels

    train = load_qrels(data_dir, "train")
    test = load_qrels(data_dir, "test")
    both = sorted(train.keys() & test.keys())
    if both:
        log.warning(
            "%s: %d query ids are judged in both train and test (e.g. %s); they are left out of training",
            data_dir,
            len(both),
            both[0],
        )
    return [
        (qid, doc_id)
        for qid, docs in train.items()
        if qid not in test
        for doc_id, grade in docs.items()
        if grade > 0
    ]


# --------------------------------------------------------------------------------------------
# Model


def build_generator(base_model: str | Path | None = None, decoder_layers: int | None = None):
    """``(tokenizer, EncoderDecoderModel)`` warm-started from a BERT encoder for both halves.

    ``decoder_layers`` keeps the first layers of the BERT for the decoder (cheaper decoding);
    None keeps all of them. Cross-attention and the LM head's transform are new.
    """
    from transformers import AutoTokenizer, EncoderDecoderModel, GenerationConfig
    from transformers.utils import logging as hf_logging

    source = resolve_encoder(base_model)
    tokenizer = AutoTokenizer.from_pretrained(source)
    kwargs: dict[str, Any] = {}
    if decoder_layers is not None:
        kwargs["decoder_num_hidden_layers"] = decoder_layers
    # transformers prints a long table of the (expected) newly initialised weights; one line will do.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(source, source, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
    log.info("generator warm-started from %s; cross-attention and LM head transform are new", source)
    start, pad, eos = tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id
    if start is None or pad is None or eos is None:
        raise GeneratorError(
            f"{source}: the tokenizer needs [CLS], [PAD] and [SEP] tokens (a BERT tokenizer)"
        )
    model.config.decoder_start_token_id = start
    model.config.pad_token_id = pad
    model.config.eos_token_id = eos
    model.generation_config = GenerationConfig(
        decoder_start_token_id=start, pad_token_id=pad, eos_token_id=eos, max_new_tokens=32
    )
    return tokenizer, model


def load_generator(name_or_path: str | Path, device: torch.device | str = "cpu"):
    """``(tokenizer, model)`` of any ``AutoModelForSeq2SeqLM`` directory or hub id, in eval mode.

    A local directory is loaded with ``local_files_only`` (never a hub request). Failures are
    raised as GeneratorError with what to do, not as a traceback from inside transformers.
    """
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    name = str(name_or_path)
    path = Path(name).expanduser()
    local = path.exists()
    if local:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise GeneratorError(
                f"{path}: not a model directory (no config.json); pass a directory written by "
                "`nci querygen train` or any saved seq2seq model"
            )
        name = str(path)
    elif name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise GeneratorError(
            f"{name}: no such model directory; train one with `nci querygen train --data DIR --out DIR`"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local)
        model = AutoModelForSeq2SeqLM.from_pretrained(name, local_files_only=local)
    except (OSError, ValueError, KeyError) as e:
        where = "this directory" if local else "the Hugging Face hub or its local cache (is the network off?)"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise GeneratorError(
            f"{name}: could not load a seq2seq model and tokenizer from {where}: {first}"
        ) from e
    return tokenizer, model.to(device).eval()


# --------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class Doc2QueryConfig:
    """How a doc2query generator is trained. Saved as ``config`` in the generator's manifest.json,
    fields only, so ``Doc2QueryConfig(**manifest["config"])`` rebuilds it (config.json there is
    the model's own)."""

    base_model: str = DEFAULT_ENCODER
    decoder_layers: int | None = 3
    max_doc_length: int = 192
    max_query_length: int = 32
    batch_size: int = 32  # (query, document) pairs; each distinct document is encoded once
    # 5e-4: on SQuAD, held-out loss after 80 steps was 5.48 / 5.28 / 5.24 at 2e-4 / 5e-4 / 1e-3.
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.05
    epochs: float = 2.0
    # False (the CPU recipe): the encoder and the word embeddings (tied to the output layer) stay
    # as warm-started, and encoder states are computed once per document, so each step only
    # trains the decoder layers, cross-attention and LM head transform. True: train everything.
    finetune_all: bool = False
    max_minutes: float | None = None  # stop (and save) when this wall-clock budget is spent
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs <= 0 or self.lr <= 0:
            raise ValueError("batch_size must be >= 1, epochs and lr > 0")
        if self.max_doc_length < 8 or self.max_query_length < 4:
            raise ValueError("max_doc_length must be >= 8 and max_query_length >= 4")
        if self.decoder_layers is not None and self.decoder_layers < 1:
            raise ValueError("decoder_layers must be >= 1 (or None for all)")


def _pad(rows: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _pad_states(states: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(h) for h in states)
    hidden = torch.zeros((len(states), width, states[0].shape[-1]), dtype=torch.float32, device=device)
    mask = torch.zeros((len(states), width), dtype=torch.long, device=device)
    for i, h in enumerate(states):
        hidden[i, : len(h)] = h.to(device, torch.float32)
        mask[i, : len(h)] = 1
    return hidden, mask


@torch.no_grad()
def _encode_documents(
    model, doc_tokens: Sequence[Sequence[int]], pad: int, device: torch.device, progress: bool
) -> list[torch.Tensor]:
    """The frozen encoder's states of every document (float16, unpadded), computed once.

    Memory: documents x tokens x hidden x 2 bytes (about 0.25 GB for SQuAD's 2,067 paragraphs).
    no_grad rather than inference_mode: the states are inputs to later autograd steps.
    """
    model.encoder.eval()
    order = sorted(range(len(doc_tokens)), key=lambda i: len(doc_tokens[i]))
    states: list[torch.Tensor] = [torch.empty(0)] * len(doc_tokens)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    for s in tqdm(range(0, len(order), 32), desc="encode documents", unit="batch", disable=not progress):
        idx = order[s : s + 32]
        ids, mask = _pad([doc_tokens[i] for i in idx], pad)
        with autocast:
            hidden = model.encoder(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
        for j, i in enumerate(idx):
            states[i] = hidden[j, : len(doc_tokens[i])].to(torch.float16)
    return states


def _epoch_batches(
    pairs: Sequence[tuple[int, int]], n_docs: int, batch_size: int, rng: np.random.Generator
) -> list[list[int]]:
    """Pair indices in batches, the pairs of one document kept together (shuffled document order),
    so that a batch encodes each of its documents once for all of that document's queries."""
    by_doc: list[list[int]] = [[] for _ in range(n_docs)]
    for i, (_, d) in enumerate(pairs):
        by_doc[d].append(i)
    order = [i for d in rng.permutation(n_docs) for i in by_doc[d]]
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


@dataclass(frozen=True)
class _TrainingData:
    """A dataset's training pairs, checked against its corpus."""

    pairs_by_id: list[tuple[str, str]]  # (query id, doc id), in qrels order
    doc_ids: list[str]  # the documents of those pairs, in order of first appearance
    pairs: list[tuple[int, int]]  # (index into pairs_by_id, index into doc_ids)
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]


def _load_training_data(data_dir: str | Path) -> _TrainingData:
    from nci.data import DataError, load_corpus, split_queries

    pairs_by_id = training_pairs(data_dir)
    if not pairs_by_id:
        raise GeneratorError(
            f"{data_dir}: no training queries (qrels/train.tsv is missing or empty). Train the generator "
            "on a dataset that has them and generate for this corpus with it (zero-shot)."
        )
    corpus = load_corpus(data_dir)
    queries = split_queries(data_dir, "train")
    doc_ids = list(dict.fromkeys(d for _, d in pairs_by_id))
    for d in doc_ids:
        if d not in corpus:
            raise DataError(f"train qrels name document '{d}', which is not in corpus.jsonl", file=data_dir)
    doc_index = {d: i for i, d in enumerate(doc_ids)}
    pairs = [(i, doc_index[d]) for i, (_, d) in enumerate(pairs_by_id)]
    return _TrainingData(pairs_by_id, doc_ids, pairs, corpus, queries)


def _warm_start(config: Doc2QueryConfig, device: torch.device) -> tuple[Any, Any]:
    # Seeded before building: the new cross-attention and LM head weights come from torch's RNG.
    torch.manual_seed(config.seed)
    tokenizer, model = build_generator(config.base_model, config.decoder_layers)
    model.generation_config.max_new_tokens = config.max_query_length
    model.to(device).train()
    return tokenizer, model


def _tokenize_pairs(
    tokenizer, data: _TrainingData, config: Doc2QueryConfig, eos: int
) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of every document of ``data.doc_ids`` and of every query of ``data.pairs_by_id``."""
    from nci.data import document_text

    doc_tokens = tokenizer(
        [document_text(data.corpus[d]) for d in data.doc_ids],
        truncation=True,
        max_length=config.max_doc_length,
    )["input_ids"]
    # Labels are the query then [SEP]; the model prepends the start token ([CLS]) itself.
    query_tokens = [
        ids + [eos]
        for ids in tokenizer(
            [data.queries[q] for q, _ in data.pairs_by_id],
            add_special_tokens=False,
            truncation=True,
            max_length=config.max_query_length - 1,
        )["input_ids"]
    ]
    return doc_tokens, query_tokens


def _freeze_encoder(model) -> None:
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    # The decoder's word embeddings are tied to the output layer: frozen with the encoder.
    model.decoder.get_input_embeddings().weight.requires_grad_(False)


@dataclass(frozen=True)
class _PairBatches:
    """Turns a batch of pair indices into the model's loss; each distinct document of the batch
    is encoded (or read from ``cache``) once and its states repeated for each of its queries."""

    pairs: Sequence[tuple[int, int]]  # (query index, document index)
    doc_tokens: Sequence[Sequence[int]]
    query_tokens: Sequence[Sequence[int]]
    cache: list[torch.Tensor] | None  # frozen encoder states per document, or None to encode
    pad: int
    device: torch.device

    def loss(self, model, batch: Sequence[int], autocast: torch.autocast) -> torch.Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        pairs, device = self.pairs, self.device
        docs = list(dict.fromkeys(pairs[i][1] for i in batch))
        slot = {d: j for j, d in enumerate(docs)}
        labels, label_mask = _pad([self.query_tokens[pairs[i][0]] for i in batch], self.pad)
        labels = labels.masked_fill(label_mask == 0, -100).to(device)
        expand = torch.tensor([slot[pairs[i][1]] for i in batch], device=device)
        with autocast:
            if self.cache is None:
                input_ids, attention = _pad([self.doc_tokens[d] for d in docs], self.pad)
                input_ids, attention = input_ids.to(device), attention.to(device)
                hidden = model.encoder(input_ids=input_ids, attention_mask=attention).last_hidden_state
            else:
                hidden, attention = _pad_states([self.cache[d] for d in docs], device)
            return model(
                encoder_outputs=BaseModelOutput(last_hidden_state=hidden[expand]),
                attention_mask=attention[expand],
                labels=labels,
            ).loss


def _batch_stream(
    pairs: Sequence[tuple[int, int]], n_docs: int, batch_size: int, seed: int
) -> Iterator[tuple[int, list[int]]]:
    """``(epoch, batch)`` without end; an epoch's order depends on (seed, epoch) only."""
    for epoch in itertools.count():
        rng = np.random.default_rng([seed, epoch])
        for batch in _epoch_batches(pairs, n_docs, batch_size, rng):
            yield epoch, batch


@dataclass(frozen=True)
class _Optimizer:
    """AdamW with a linear warmup schedule over the parameters left trainable."""

    trained: list[torch.nn.Parameter]
    adamw: torch.optim.AdamW
    scheduler: Any

    @classmethod
    def for_model(cls, model, config: Doc2QueryConfig, total_steps: int) -> _Optimizer:
        from transformers import get_linear_schedule_with_warmup

        trained = [p for p in model.parameters() if p.requires_grad]
        adamw = torch.optim.AdamW(trained, lr=config.lr, weight_decay=config.weight_decay)
        scheduler = get_linear_schedule_with_warmup(
            adamw, round(config.warmup_fraction * total_steps), total_steps
        )
        return cls(trained, adamw, scheduler)

    def step(self, loss: torch.Tensor) -> None:
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trained, 1.0)
        self.adamw.step()
        self.scheduler.step()
        self.adamw.zero_grad(set_to_none=True)


def _train_loop(
    model,
    batches: _PairBatches,
    optimizer: _Optimizer,
    config: Doc2QueryConfig,
    total_steps: int,
    progress: bool,
) -> tuple[list[float], bool]:
    """Up to ``total_steps`` optimizer steps; returns the loss of each step taken and whether the
    ``max_minutes`` budget stopped it early."""
    device = batches.device
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    deadline = None if config.max_minutes is None else time.monotonic() + 60 * config.max_minutes
    # transformers warns on every EncoderDecoderModel loss about a change made in v4.12; not ours.
    warnings.filterwarnings("ignore", message="Version v4.12.0 introduces", category=FutureWarning)
    losses: list[float] = []
    stopped_early = False
    stream = _batch_stream(batches.pairs, len(batches.doc_tokens), config.batch_size, config.seed)
    bar = tqdm(total=total_steps, desc="train doc2query", unit="step", disable=not progress)
    for epoch, batch in itertools.islice(stream, total_steps):
        if deadline is not None and time.monotonic() > deadline:
            stopped_early = True
            log.warning(
                "time budget of %s minutes spent after %d of %d steps",
                config.max_minutes,
                len(losses),
                total_steps,
            )
            break
        loss = batches.loss(model, batch, autocast)
        optimizer.step(loss)
        losses.append(loss.detach().item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", epoch=epoch)
    bar.close()
    return losses, stopped_early


def _training_report(
    data: _TrainingData,
    losses: list[float],
    total_steps: int,
    steps_per_epoch: int,
    stopped_early: bool,
    device: torch.device,
    trained_parameters: int,
) -> dict[str, Any]:
    # Losses averaged over the first and last fifth (at most 50 steps): single steps are noisy.
    tail = max(1, min(50, len(losses) // 5))
    return {
        "training_pairs": len(data.pairs),
        "training_queries": len({q for q, _ in data.pairs_by_id}),
        "documents": len(data.doc_ids),
        "steps": len(losses),
        "planned_steps": total_steps,
        "epochs_run": round(len(losses) / steps_per_epoch, 3),
        "stopped_early": stopped_early,
        "device": str(device),
        "trained_parameters": trained_parameters,
        "loss_first": round(float(np.mean(losses[:tail])), 4) if losses else None,
        "loss_last": round(float(np.mean(losses[-tail:])), 4) if losses else None,
        "query_ids": list(dict.fromkeys(q for q, _ in data.pairs_by_id)),
    }


def train_generator(
    data_dir: str | Path, config: Doc2QueryConfig, progress: bool = True
) -> tuple[Any, Any, dict[str, Any]]:
    """Fine-tune a generator on ``data_dir``'s training pairs.

    Returns ``(tokenizer, model, report)``; the report holds counts, losses and the training
    query ids, for the manifest. Saving is the caller's (see ``nci.querygen``).
    """
    data = _load_training_data(data_dir)
    device = pick_device(config.device)
    tokenizer, model = _warm_start(config, device)
    pad, eos = model.config.pad_token_id, model.config.eos_token_id
    doc_tokens, query_tokens = _tokenize_pairs(tokenizer, data, config, eos)
    cache = None
    if not config.finetune_all:
        _freeze_encoder(model)
        cache = _encode_documents(model, doc_tokens, pad, device, progress)
    batches = _PairBatches(data.pairs, doc_tokens, query_tokens, cache, pad, device)

    steps_per_epoch = math.ceil(len(data.pairs) / config.batch_size)
    total_steps = max(1, round(config.epochs * steps_per_epoch))
    optimizer = _Optimizer.for_model(model, config, total_steps)
    losses, stopped_early = _train_loop(model, batches, optimizer, config, total_steps, progress)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    trained_parameters = sum(p.numel() for p in optimizer.trained)
    report = _training_report(
        data, losses, total_steps, steps_per_epoch, stopped_early, device, trained_parameters
    )
    return tokenizer, model, report


# --------------------------------------------------------------------------------------------
# Sampling


@dataclass(frozen=True)
class SamplingConfig:
    n: int = 10
    top_k: int | None = 10
    top_p: float | None = None
    temperature: float = 1.0
    max_doc_length: int = 192
    max_query_length: int = 32
    max_rounds: int = 3  # extra sampling rounds for documents left short by duplicates/empties
    # "document": only tokens of the (truncated) document and common query words may be written,
    # which keeps a weak generator from drifting to topics of its training set; "none": any token.
    vocabulary: str = "document"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_rounds < 1:
            raise ValueError("n and max_rounds must be >= 1")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1 (or None)")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0")
        if self.vocabulary not in {"document", "none"}:
            raise ValueError(f"vocabulary must be 'document' or 'none', got '{self.vocabulary}'")


# Words a query may use whatever the document: question words, auxiliaries, pronouns,
# prepositions, determiners and the like (restricted vocabulary, see SamplingConfig).
QUERY_WORDS = (
    "what which who whom whose when where why how many much long old far often kind type name "
    "is are was were be been being do does did has have had can could will would shall should may might "
    "must the a an of in on at to for from by with without about into onto over under between during "
    "before after since until than as and or but not no nor if then that this these those there here "
    "it its he she they them their his her him we our you your i me my one first last most more less "
    "other another same such some any all each every both either neither called known used made "
    "year years number percent people time part ? , . ' \" - ( ) : ; s"
).split()


def _allowed_tokens():
    from transformers import LogitsProcessor

    class AllowedTokens(LogitsProcessor):
        """Masks every token outside a per-row allowed set (built once the vocabulary size is known)."""

        def __init__(self, allowed: Sequence[Sequence[int]]) -> None:
            self.allowed = allowed
            self.mask: torch.Tensor | None = None

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            if self.mask is None:
                self.mask = torch.zeros(scores.shape, dtype=torch.bool)
                for row, ids in enumerate(self.allowed):
                    self.mask[row, [t for t in ids if t < scores.shape[-1]]] = True
                self.mask = self.mask.to(scores.device)
            return scores.masked_fill(~self.mask, -float("inf"))

    return AllowedTokens


def _gumbel_sampler():
    from transformers import LogitsProcessor

    class GumbelSampler(LogitsProcessor):
        """Adds Gumbel noise from one generator per row, so that greedy decoding of the result
        is a sample from the (warped) distribution: arg max(logits + Gumbel) ~ softmax(logits).
        Each row's noise stream depends on its own seed only, never on the rest of the batch."""

        def __init__(self, seeds: Sequence[int]) -> None:
            self.generators = [torch.Generator().manual_seed(s) for s in seeds]

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
            # Noise only for the tokens top-k/top-p left in play, in token order: a row draws as
            # many numbers as it has candidates, which depends on that row alone.
            scores = scores.float()
            live = torch.isfinite(scores)
            sizes = live.sum(dim=1).tolist()
            u = torch.cat([torch.rand(n, generator=g) for g, n in zip(self.generators, sizes, strict=True)])
            gumbel = -torch.log(-torch.log(u.clamp_(1e-10, 1 - 1e-7)))
            out = torch.full_like(scores, -float("inf"))
            out[live] = scores[live] + gumbel.to(scores.device)
            return out

    return GumbelSampler


def _greedy_generation_config(tokenizer, model, max_query_length: int):
    """The model's generation config, set to greedy decoding: sampling comes from the Gumbel
    noise of ``_gumbel_sampler``, not from ``generate``'s own (batch-dependent) sampling."""
    gen_config = model.generation_config.__class__.from_dict(model.generation_config.to_dict())
    gen_config.update(
        do_sample=False,
        num_beams=1,
        num_return_sequences=1,
        max_new_tokens=max_query_length,
        top_k=None,
        top_p=None,
        temperature=None,
    )
    if gen_config.eos_token_id is None:
        gen_config.eos_token_id = tokenizer.eos_token_id or tokenizer.sep_token_id
    if gen_config.pad_token_id is None:
        gen_config.pad_token_id = tokenizer.pad_token_id
    return gen_config


def _warpers(config: SamplingConfig) -> list:
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers = []
    if config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None:
        warpers.append(TopKLogitsWarper(config.top_k))
    if config.top_p is not None:
        warpers.append(TopPLogitsWarper(config.top_p))
    return warpers


def _common_query_tokens(tokenizer) -> set[int]:
    words = [*QUERY_WORDS, *(w.capitalize() for w in QUERY_WORDS)]  # cased vocabularies too
    return set(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"])


def _document_vocabularies(
    input_ids: torch.Tensor, common: set[int], special: set[int], eos: int | list[int]
) -> list[set[int]]:
    """Per document: its own tokens and the common query words, no special token but the end."""
    ends = set(eos if isinstance(eos, list) else [eos])
    return [(common | set(ids.tolist())) - special | ends for ids in input_ids]


@dataclass
class _Harvest:
    """The distinct queries kept for each document so far, and what was drawn and dropped."""

    kept: list[list[str]]
    seen: list[set[str]]  # casefolded kept queries
    drawn: list[int]  # samples drawn per document: the next sample's number
    counts: dict[str, int]

    @classmethod
    def start(cls, n_docs: int) -> _Harvest:
        counts = {"samples": 0, "empty": 0, "duplicates": 0}
        return cls([[] for _ in range(n_docs)], [set() for _ in range(n_docs)], [0] * n_docs, counts)

    def missing(self, n: int) -> list[tuple[int, int]]:
        """``(document, sample number)`` for each query a document still lacks, numbered on
        from its earlier samples so that a new round never repeats an earlier seed."""
        rows = [(i, self.drawn[i] + r) for i in range(len(self.kept)) for r in range(n - len(self.kept[i]))]
        for i, _ in rows:
            self.drawn[i] += 1
        return rows

    def add(self, i: int, text: str) -> None:
        self.counts["samples"] += 1
        text = " ".join(text.split())
        if not text:
            self.counts["empty"] += 1
        elif text.casefold() in self.seen[i]:
            self.counts["duplicates"] += 1
        else:
            self.seen[i].add(text.casefold())
            self.kept[i].append(text)


def sample_queries(
    tokenizer, model, docs: Sequence[tuple[str, str]], config: SamplingConfig
) -> tuple[list[list[str]], dict[str, int]]:
    """Up to ``config.n`` distinct, non-empty queries for each ``(doc_id, text)``, by sampling.

    Returns the queries per document and counts of dropped empty and duplicate samples. Each
    document is encoded once; its samples share the encoder states.
    """
    from transformers import LogitsProcessorList
    from transformers.modeling_outputs import BaseModelOutput

    device = next(model.parameters()).device
    gen_config = _greedy_generation_config(tokenizer, model, config.max_query_length)
    warpers = _warpers(config)
    sampler = _gumbel_sampler()
    restrict = config.vocabulary == "document"
    if restrict:
        common, special = _common_query_tokens(tokenizer), set(tokenizer.all_special_ids)
    enc = tokenizer(
        [text for _, text in docs],
        truncation=True,
        max_length=config.max_doc_length,
        padding=True,
        return_tensors="pt",
    ).to(device)
    harvest = _Harvest.start(len(docs))
    with torch.inference_mode():
        hidden = model.get_encoder()(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        if restrict:
            doc_vocab = _document_vocabularies(enc["input_ids"], common, special, gen_config.eos_token_id)
        for _ in range(config.max_rounds):
            rows = harvest.missing(config.n)
            if not rows:
                break
            expand = torch.tensor([i for i, _ in rows], device=device)
            seeds = [stable_seed(config.seed, docs[i][0], j) for i, j in rows]
            processors = [*warpers, sampler(seeds)]
            if restrict:
                processors.insert(0, _allowed_tokens()([doc_vocab[i] for i, _ in rows]))
            out = model.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=hidden[expand]),
                attention_mask=enc["attention_mask"][expand],
                generation_config=gen_config,
                logits_processor=LogitsProcessorList(processors),
            )
            for (i, _), text in zip(rows, tokenizer.batch_decode(out, skip_special_tokens=True), strict=True):
                harvest.add(i, text)
    return harvest.kept, harvest.counts
