"""The build recipe: every choice ``nci build`` makes, decided from the corpus in one place.

:func:`choose` is a pure function of :class:`CorpusStats` (documents, their mean length in words,
how many training, dev and other queries there are), the budget in minutes and the user's
overrides. Each rule below names the measurement it rests on (README, "Results" and
"Ablations"; CPU, 2 cores). No rule reads a judgement of a test query: the only thing taken
from outside the training and dev splits is how many other queries there are, to estimate how
long the final comparison takes.

The time model (seconds, on the README's 2-core CPU, from the measurements named beside each
constant) decides the training budget, and whether short windows and trainable encoder layers
fit in it. On another machine the estimates are off by its speed; the rules' outcomes change
only near their thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# --- the time model ----------------------------------------------------------------------------

# Embedding, with 2 threads (nci build's embed stage at commits da83b97 and 8325190):
# SQuAD's 2,067 paragraphs (about 120 words) in 63 s = 30 ms each; Cranfield's 1,400 (about 177
# words) in 56 s = 40 ms and SciFact's 5,183 abstracts (about 214 words) in 197 s = 38 ms, as
# they come closer to the encoder's 256 tokens. (Earlier figures, 53 and 159 ms a document, no
# longer hold for this code: they made SciFact's default budget 10 minutes longer than needed.)
EMBED_S_PER_DOC = 0.035
EMBED_S_PER_LONG_DOC = 0.045
LONG_DOC_WORDS = 150
# Ids: 100,000 vectors in 31.9 s with the trie (nci bench ids); SQuAD's in 0.3 s.
IDS_S_PER_DOC = 0.0003
# Index: 7 s (SQuAD), 8 s (SciFact, Cranfield) for dense, PQ and BM25; fitting fusion runs every
# part on each validation query and searches the grid twice where the index has bm25-expanded
# (around BM25 and around it): SQuAD's 414 queries took 79 s of its 170-s index stage (6430e09).
INDEX_S = 10.0
INDEX_S_PER_DOC = 0.004
FUSION_S_PER_QUERY = 0.19
# The sentence methods (for corpora up to IndexConfig.sentence_max_docs) encode every sentence
# with the query encoder: SciFact's 49,992 in about 310 s (6.2 ms each; its index stage took 325 s
# at a4c6073), SQuAD's 10,421 within a 92 s index stage. Sentences average 22 words (SciFact) to
# 25 (SQuAD); Cranfield's abstracts, with little punctuation, split into fewer, so this is an
# upper bound there.
SENTENCE_S = 0.0065
WORDS_PER_SENTENCE = 22
# Final comparison: nci, dense, bm25 and fusion (= nci + dense + bm25 again) on every other query,
# in batches of 64 (SQuAD: nci-beam10 74 queries/s, dense 130/s).
COMPARE_S_PER_QUERY = 0.06
# Loading encoders and models, starting each stage.
OVERHEAD_S = 30.0
# Feature caching, per training input: SciFact 57,208 inputs in 9 min (9.4 ms), Cranfield 29,283
# in 4 min (8.2 ms), SQuAD 52,130 layer-4 states in 7 min (8.1 ms); 10 ms leaves some margin.
CACHE_S_PER_INPUT = 0.010
# A training step per input: C without R-drop ran a 128-input step in 1.1 s (8.6 ms per input),
# R-drop doubles it (2.3 s), two trainable encoder layers add 40% (Ablations text).
STEP_S_PER_INPUT = 0.009
RDROP_STEP_FACTOR = 2.0
TRAINABLE_STEP_FACTOR = 1.4

# The constants above were measured with 2 torch threads. With fewer, embedding, caching and
# training steps run slower in proportion (with 1 thread on this machine: embedding SQuAD at
# 116 ms a paragraph, caching at 23 ms an input, while another job used the other core); more
# threads are not assumed to help, so the estimates stay upper bounds on larger machines.
MEASURED_THREADS = 2


def slowdown(threads: int | None) -> float:
    """How much slower than the time model a build with ``threads`` torch threads runs."""
    return MEASURED_THREADS / threads if threads and threads < MEASURED_THREADS else 1.0


# nci train's defaults that the counts depend on
VAL_FRACTION, VAL_MAX = 0.05, 500

# --- the thresholds of the rules ------------------------------------------------------------------

SMALL_CORPUS = 5_000  # documents under which the default budget is 15 minutes
SMALL_CORPUS_MINUTES = 15.0
MIN_TRAIN_QUERIES = 100  # fewer count as none (see the R-drop rule)
MIN_TRAIN_MINUTES = 1.0
SHORT_DOC_WORDS = 150  # 16-word windows only for documents up to this mean length
LAYERS_MIN_EPOCHS = 3.0  # trainable layers only when this many epochs still fit
TEACHER_WEIGHT = 0.6  # distillation from dense retrieval, for corpora without training queries
TEACHER_MAX_PAIRS = 2e9  # ... when inputs x documents stay below this

# every choice, with the flag of nci build that overrides it
CHOICES: dict[str, str] = {
    "k": "--k",
    "leaf_size": "--leaf-size",
    "windows": "--windows",
    "sentences": "--sentences / --no-sentences",
    "queries_per_doc": "--queries-per-doc",
    "centroid_prior": "--centroid-prior / --no-centroid-prior",
    "label_smoothing": "--label-smoothing",
    "rdrop_alpha": "--rdrop-alpha",
    "encoder_trainable_layers": "--encoder-trainable-layers",
    "teacher_weight": "--teacher-weight",
    "train_minutes": "--train-minutes",
}


@dataclass(frozen=True)
class CorpusStats:
    """What the rules know about a prepared dataset."""

    documents: int
    mean_words: float  # words of "title. text" per document
    train_queries: int  # training queries with a relevant document
    dev_queries: int = 0
    other_queries: int = 0  # queries in neither split (test, unjudged): only timed, never read


def corpus_stats(data_dir: str | Path) -> CorpusStats:
    """Count a prepared dataset's documents, words and queries (test judgements are not read)."""
    from nci.data import document_text, load_corpus, load_qrels, load_queries

    corpus = load_corpus(data_dir)
    words = sum(len(document_text(doc).split()) for doc in corpus.values())
    train = load_qrels(data_dir, "train")
    dev = load_qrels(data_dir, "dev")
    queries = load_queries(data_dir)
    return CorpusStats(
        documents=len(corpus),
        mean_words=words / len(corpus),
        train_queries=sum(1 for rels in train.values() if any(g > 0 for g in rels.values())),
        dev_queries=len(dev),
        other_queries=sum(1 for q in queries if q not in train and q not in dev),
    )


@dataclass(frozen=True)
class Recipe:
    """Every choice of a build, why it was made, and the time model behind the budget."""

    minutes: float  # the whole build
    k: int
    leaf_size: int
    windows: tuple[int, ...]  # doc-as-query window lengths in words, one querygen run each
    queries_per_doc: int  # random windows per document and window length
    centroid_prior: bool
    label_smoothing: float
    rdrop_alpha: float
    encoder_trainable_layers: int
    train_minutes: float
    sentences: bool = False  # sentence pseudo-queries beside the windows (nci querygen sentences)
    teacher_weight: float = 0.0  # distillation from dense retrieval (nci train --teacher-weight)
    reasons: dict[str, str] = field(default_factory=dict)
    overrides: tuple[str, ...] = ()
    estimates_s: dict[str, float] = field(default_factory=dict)

    def choices(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in ("minutes", *CHOICES)}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# --- estimates -------------------------------------------------------------------------------------


def validation_queries(train_queries: int) -> int:
    """How many training queries nci train holds out (its val_fraction and val_max)."""
    return min(VAL_MAX, int(round(VAL_FRACTION * train_queries)))


def training_inputs(stats: CorpusStats, windows: tuple[int, ...], queries_per_doc: int) -> int:
    """Training queries left after validation, plus doc-as-query pairs: per window length, the
    first window and up to ``queries_per_doc`` random ones (as many as the words allow)."""
    words = round(stats.mean_words)
    per_doc = sum(1 + min(queries_per_doc, max(0, words - w)) for w in windows)
    return stats.train_queries - validation_queries(stats.train_queries) + stats.documents * per_doc


def fixed_costs(stats: CorpusStats, slow: float = 1.0, compare: bool = True) -> dict[str, float]:
    """Estimated seconds of every stage but training (``slow``: :func:`slowdown`; ``compare``:
    whether the build ends with the test-split comparison)."""
    per_doc = EMBED_S_PER_LONG_DOC if stats.mean_words > LONG_DOC_WORDS else EMBED_S_PER_DOC
    fusion_queries = stats.dev_queries or validation_queries(stats.train_queries)
    return {
        "embed": stats.documents * per_doc * slow,
        "ids": 1.0 + stats.documents * IDS_S_PER_DOC,
        "querygen": 1.0 + stats.documents * 0.001,
        "index": INDEX_S
        + stats.documents * INDEX_S_PER_DOC
        + fusion_queries * FUSION_S_PER_QUERY
        + sentence_seconds(stats, slow),
        "compare": stats.other_queries * COMPARE_S_PER_QUERY if compare else 0.0,
        "overhead": OVERHEAD_S,
    }


def sentence_seconds(stats: CorpusStats, slow: float = 1.0) -> float:
    """Estimated seconds to encode the sentences of the sentence methods (0 above the index's
    ``sentence_max_docs``, where it builds none)."""
    from nci.index import IndexConfig

    if stats.documents > IndexConfig.sentence_max_docs:
        return 0.0
    sentences = stats.documents * max(1.0, stats.mean_words / WORDS_PER_SENTENCE)
    return sentences * SENTENCE_S * slow


def step_s_per_input(rdrop_alpha: float, trainable_layers: int, slow: float = 1.0) -> float:
    """Estimated training seconds per input and epoch (``slow``: :func:`slowdown`)."""
    step = STEP_S_PER_INPUT * slow * (RDROP_STEP_FACTOR if rdrop_alpha > 0 else 1.0)
    return step * (TRAINABLE_STEP_FACTOR if trainable_layers else 1.0)


def epochs_that_fit(
    train_minutes: float, inputs: int, rdrop_alpha: float, trainable_layers: int, slow: float = 1.0
) -> float:
    """Epochs the training budget holds after caching the inputs' encoder states."""
    step = step_s_per_input(rdrop_alpha, trainable_layers, slow)
    return max(0.0, train_minutes * 60 - inputs * CACHE_S_PER_INPUT * slow) / (inputs * step)


def default_minutes(
    stats: CorpusStats, rdrop_alpha: float = 0.0, slow: float = 1.0, compare: bool = True
) -> tuple[float, str]:
    """The whole build's budget when --minutes is not given, and why."""
    fixed = sum(fixed_costs(stats, slow, compare).values())
    if stats.documents < SMALL_CORPUS and fixed <= 10 * 60:
        return SMALL_CORPUS_MINUTES, f"default for corpora under {SMALL_CORPUS:,} documents"
    # larger (or slow to embed): the other stages, caching and three epochs of 64-word windows
    # with a frozen encoder (the SQuAD models peaked at their third or fourth epoch: E, F, G)
    inputs = training_inputs(stats, (64,), 10)
    train = inputs * CACHE_S_PER_INPUT * slow + 3 * inputs * step_s_per_input(rdrop_alpha, 0, slow)
    minutes = 5 * math.ceil((fixed + train) / 60 / 5)
    return float(minutes), (
        f"estimated {fixed / 60:.0f} min for the other stages + {train / 60:.0f} min to cache {inputs:,} "
        "inputs and train 3 epochs, rounded up to 5 min"
    )


# --- the rules --------------------------------------------------------------------------------------


def choose(
    stats: CorpusStats,
    minutes: float | None = None,
    overrides: Mapping[str, Any] | None = None,
    threads: int | None = None,
    compare: bool = True,
) -> Recipe:
    """The recipe for ``stats`` within ``minutes`` (None: :func:`default_minutes`); a choice named
    in ``overrides`` (keys of :data:`CHOICES`) is taken as given, and later rules build on it.
    ``threads`` (torch threads of the build; None: the time model's own) scales the estimates;
    without ``compare`` (``nci build --no-compare``) no time is kept for the comparison."""
    slow = slowdown(threads)
    over = dict(overrides or {})
    unknown = set(over) - set(CHOICES)
    if unknown:
        raise ValueError(f"unknown recipe choices {sorted(unknown)}; known: {', '.join(CHOICES)}")
    c: dict[str, Any] = {}
    why: dict[str, str] = {}

    def pick(name: str, value: Any, reason: str) -> Any:
        if name in over:
            c[name], why[name] = over[name], f"override ({CHOICES[name].split(' ')[0]})"
        else:
            c[name], why[name] = value, reason
        return c[name]

    # Ids: k=30, leaves of 30. E -> E + k=30 ids raised test success@1 0.617 -> 0.651 (val 0.592 ->
    # 0.635); SciFact kept k=30 after k=100 fell (val 0.425 -> 0.275). k=50 (G) was adopted for
    # SQuAD after its test figures were known, so it is no rule here.
    k = pick(
        "k",
        30,
        "k=30: SQuAD val success@1 0.592 -> 0.635 over k=10 (Ablations, E + k=30 ids); "
        "SciFact k=100 fell to val 0.275 from 0.425",
    )
    pick("leaf_size", k, "leaves of up to k, as every measured tree (k=10/30/50/100)")
    # Centroid prior: A -> B, val success@1 0.273 -> 0.514.
    pick("centroid_prior", True, "SQuAD val success@1 0.273 -> 0.514 (Ablations A -> B)")
    # Label smoothing 0.1: E -> E + 0.1, val 0.592 -> 0.621; SciFact nDCG@10 0.537 -> 0.604 and
    # Cranfield 0.453 -> 0.461 with it; 0.2 gained on k=30 ids but lost on k=50 (Ablations).
    pick(
        "label_smoothing",
        0.1,
        "SQuAD val success@1 0.592 -> 0.621 (Ablations E + label smoothing); "
        "0.2 gained on k=30 ids and lost on k=50",
    )
    rdrop = _rdrop_rule(stats, pick)
    if minutes is None:
        c["minutes"], why["minutes"] = default_minutes(stats, rdrop, slow, compare)
    else:
        c["minutes"], why["minutes"] = float(minutes), "--minutes"
    if slow > 1:
        why["minutes"] += f"; stage estimates x{slow:g} for {threads} torch thread(s)"
    fixed = fixed_costs(stats, slow, compare)
    train_minutes = pick(
        "train_minutes",
        round(c["minutes"] - sum(fixed.values()) / 60, 1),
        f"the budget less the other stages' estimate ({sum(fixed.values()) / 60:.1f} min)",
    )
    if train_minutes <= 0 or ("train_minutes" not in over and train_minutes < MIN_TRAIN_MINUTES):
        raise ValueError(
            f"a {c['minutes']:g}-minute build leaves {train_minutes:g} min to train: the other stages are "
            f"estimated at {sum(fixed.values()) / 60:.1f} min ({_fmt(fixed)}); give a larger --minutes "
            "or set --train-minutes"
        )
    pick("queries_per_doc", 10, "nci querygen daq's 10 random windows, as in every measured recipe")
    windows = _windows_rule(stats, c, pick, slow)
    _layers_rule(stats, c, windows, rdrop, pick, slow)
    _sentences_rule(c, windows, pick)
    _teacher_rule(stats, c, windows, pick)
    estimates = {**fixed, "train": train_minutes * 60}
    return Recipe(
        **c,
        reasons=why,
        overrides=tuple(n for n in CHOICES if n in over),
        estimates_s={name: round(s, 1) for name, s in estimates.items()},
    )


def _rdrop_rule(stats: CorpusStats, pick: Any) -> float:
    # Off with training queries: it runs every batch twice, so a fixed CPU budget holds half the
    # epochs; SQuAD val success@1 0.573 -> 0.585 (C) and 0.575 -> 0.592 (D -> E) without it,
    # SciFact val 0.350 -> 0.425. On without: Cranfield (no training queries) fell 0.461 -> 0.442
    # nDCG@10 without it -- measured on its test queries, the only ones it has. Re-checked on
    # validation data: a 1,500-abstract SciFact cut built as if it had no queries (64- and 16-word
    # windows, 15 minutes), NCI on 400 held-out training claims nDCG@10 0.676 with and without
    # (success@1 0.585 / 0.575), so it stays. Under 100 training queries (none measured) the
    # corpus counts as having none.
    if stats.train_queries >= MIN_TRAIN_QUERIES:
        reason = (
            f"{stats.train_queries:,} training queries: without R-drop SQuAD val success@1 0.575 -> 0.592, "
            "SciFact 0.350 -> 0.425 (twice the steps in the budget)"
        )
        return pick("rdrop_alpha", 0.0, reason)
    reason = (
        f"{stats.train_queries} training queries (< {MIN_TRAIN_QUERIES}): R-drop kept; SciFact cut without "
        "queries, held-out claims nDCG@10 0.676 with it and without; Cranfield 0.461 with, 0.442 without"
    )
    return pick("rdrop_alpha", 0.15, reason)


def _windows_rule(stats: CorpusStats, c: dict[str, Any], pick: Any, slow: float) -> tuple[int, ...]:
    # 64-word windows always (every recipe). 16-word windows beside them for short documents: B ->
    # B + 16-word windows, SQuAD (about 120 words) val success@1 0.514 -> 0.539; Cranfield uses
    # them; SciFact (about 214 words, with its training claims) does not. Without training
    # queries the windows are all NCI learns from, and short ones pay on long documents too: a
    # 1,500-abstract SciFact cut built as if it had no queries (15 minutes), NCI on 400 held-out
    # training claims nDCG@10 0.639 -> 0.676, success@1 0.532 -> 0.585, in 4.2 epochs against 9.
    # They double the inputs to cache, so only when caching everything takes at most half the
    # training budget (SciFact's caching took 9 of 20 minutes and left one epoch).
    both = training_inputs(stats, (64, 16), c["queries_per_doc"])
    cache_min = both * CACHE_S_PER_INPUT * slow / 60
    if stats.mean_words > SHORT_DOC_WORDS and stats.train_queries >= MIN_TRAIN_QUERIES:
        reason = f"64-word windows: documents of {stats.mean_words:.0f} words (> {SHORT_DOC_WORDS}) are long"
        return tuple(pick("windows", (64,), reason))
    if cache_min > c["train_minutes"] / 2:
        reason = (
            f"64-word windows: caching {both:,} inputs with 16-word ones too (~{cache_min:.1f} min) "
            f"would take over half the {c['train_minutes']:g} training minutes"
        )
        return tuple(pick("windows", (64,), reason))
    measured = (
        "SciFact cut without queries, held-out claims nDCG@10 0.639 -> 0.676"
        if stats.mean_words > SHORT_DOC_WORDS
        else "SQuAD val success@1 0.514 -> 0.539"
    )
    reason = (
        f"64- and 16-word windows: {stats.mean_words:.0f}-word documents, {stats.train_queries} training "
        f"queries, caching {both:,} inputs ~{cache_min:.1f} min; {measured} with 16-word windows"
    )
    return tuple(pick("windows", (64, 16), reason))


def _sentences_rule(c: dict[str, Any], windows: tuple[int, ...], pick: Any) -> bool:
    # Sentence pseudo-queries beside the 64- and 16-word windows: SQuAD split seed 1, the 50-minute
    # recipe (two trainable layers), val success@1 0.684 -> 0.713 (@10 0.935 -> 0.937): 4 epochs
    # of 20% more inputs against 6 of the windows alone (best: the 4th against the 5th). Measured
    # only with trainable layers, so only where the layers rule gave them (a generous budget for
    # short documents); the layers rule counts the windows only, and the sentences' inputs come
    # out of its epochs.
    if 16 in windows and c["encoder_trainable_layers"] > 0:
        reason = (
            "sentences beside 64- and 16-word windows and trainable layers: SQuAD (split seed 1) "
            "val success@1 0.684 -> 0.713"
        )
        return bool(pick("sentences", True, reason))
    reason = "no sentences: measured only beside 16-word windows and trainable layers"
    return bool(pick("sentences", False, reason))


def _teacher_rule(stats: CorpusStats, c: dict[str, Any], windows: tuple[int, ...], pick: Any) -> float:
    # Distillation from dense retrieval (nci train --teacher-weight), for corpora without training
    # queries: the 1,500-abstract SciFact cut built as if it had none (15 minutes, 64- and 16-word
    # windows, frozen encoder), NCI on its 400 held-out training claims, nDCG@10 0.676 without,
    # 0.687 at 0.3, 0.733 at 0.6, 0.708 at 0.85. With training queries it did not pay: SQuAD
    # split seed 0, val success@1 0.713 without, 0.710 at 0.3. The teacher scores every input
    # against every document once (the cut's 32,834 inputs x 1,500 documents took 3 s), so above
    # TEACHER_MAX_PAIRS input-document pairs (about two minutes) it stays off.
    if stats.train_queries >= MIN_TRAIN_QUERIES:
        reason = (
            f"{stats.train_queries:,} training queries: no distillation (SQuAD seed 0 val success@1 "
            "0.713 without, 0.710 with 0.3)"
        )
        return pick("teacher_weight", 0.0, reason)
    pairs = training_inputs(stats, windows, c["queries_per_doc"]) * stats.documents
    if pairs > TEACHER_MAX_PAIRS:
        reason = f"no distillation: {pairs:.1e} input-document pairs to score (> {TEACHER_MAX_PAIRS:.0e})"
        return pick("teacher_weight", 0.0, reason)
    reason = (
        f"{stats.train_queries} training queries (< {MIN_TRAIN_QUERIES}): distillation from dense "
        f"retrieval at {TEACHER_WEIGHT:g}; SciFact cut without queries, held-out claims nDCG@10 0.676 -> "
        "0.733 (0.687 at 0.3, 0.708 at 0.85)"
    )
    return pick("teacher_weight", TEACHER_WEIGHT, reason)


def _layers_rule(
    stats: CorpusStats, c: dict[str, Any], windows: tuple[int, ...], rdrop: float, pick: Any, slow: float
) -> None:
    # Trainable top encoder layers cost 40% more per step (their states are cached like the frozen
    # encoder's, from a lower layer). They paid off in runs that still held 3 or more epochs:
    # B -> B + top layer, val success@1 0.514 -> 0.553 (3 epochs, with R-drop); a second layer
    # added nothing with R-drop (C -> D: 0.573 -> 0.575) and paid off without it (C without
    # R-drop 0.585 -> E 0.592, 4.3 epochs in 45 min). SciFact (caching 9 of 20 min, one epoch)
    # and Cranfield (2.3 epochs) kept the encoder frozen. So: frozen unless 3 epochs at the
    # trainable step cost fit after caching; then 2 layers without R-drop, 1 with it.
    inputs = training_inputs(stats, windows, c["queries_per_doc"])
    epochs = epochs_that_fit(c["train_minutes"], inputs, rdrop, 1, slow)
    if epochs < LAYERS_MIN_EPOCHS:
        reason = (
            f"frozen encoder: with trainable layers {c['train_minutes']:g} min hold ~{epochs:.1f} "
            f"epochs of {inputs:,} inputs after caching (< {LAYERS_MIN_EPOCHS:g})"
        )
        pick("encoder_trainable_layers", 0, reason)
    elif rdrop == 0:
        reason = (
            f"top two layers trained: ~{epochs:.1f} epochs of {inputs:,} inputs fit; without R-drop "
            "SQuAD val success@1 0.585 -> 0.592 (Ablations: C without R-drop -> E)"
        )
        pick("encoder_trainable_layers", 2, reason)
    else:
        reason = (
            f"top layer trained: ~{epochs:.1f} epochs of {inputs:,} inputs fit; with R-drop one layer "
            "gained 0.514 -> 0.553 (B -> B + top layer), a second nothing (C -> D)"
        )
        pick("encoder_trainable_layers", 1, reason)


def _fmt(seconds: Mapping[str, float]) -> str:
    return ", ".join(f"{name} {s / 60:.1f}" for name, s in seconds.items())
