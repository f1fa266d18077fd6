"""Dataset preparation: raw collections into one canonical layout, and the loaders for it.

The canonical layout is BEIR's, plus a manifest (see :mod:`nci.data.layout`)::

    corpus.jsonl        {"_id", "title", "text"} per line, in corpus order
    queries.jsonl       {"_id", "text"} per line
    qrels/train.tsv     "query-id  corpus-id  score" (tab separated, with that header); absent
    qrels/test.tsv      when a dataset has no such split (Cranfield has no train split)
    manifest.json       stage "data": config (dataset, source, seed, ...), counts, input hashes

``nci data prepare NAME --out DIR`` (:mod:`nci.data.prepare`) writes it for the sources named in
:mod:`nci.data.sources`, one module per source format:

- ``squad`` (:mod:`nci.data.squad`): SQuAD v1.1 as passage retrieval. One document per paragraph
  (id ``<title>_<paragraph index>``); each question is relevant to its own paragraph. Questions
  are split into train/test per paragraph with a seeded rule (see :func:`split_group`).
- ``scifact`` (:mod:`nci.data.beir`): the CSV export of allenai/scifact (``scifact.zip``) with
  the BEIR qrels files next to it, or a folder already in the BEIR layout (BEIR's own
  ``scifact.zip``, extracted). Train queries are the train claims, test queries the validation
  claims, as in BEIR.
- ``glasgow`` (alias ``cranfield``; :mod:`nci.data.glasgow`): the ``.I/.T/.A/.B/.W`` format of
  the Glasgow IR test collections. Cranfield grades run from 1 (complete answer) to 4 (minimum
  interest); they are stored as gains ``5 - grade`` so that higher is better. Each query also has
  one row of grade -1, which marks the most relevant document of all (see ``GLASGOW_GAIN``); it
  counts as a complete answer, gain 4. Every query goes to the test split.

Bad input raises :class:`DataError`, naming the file, the line or record, and the problem.
"""

from nci.data.beir import parse_sentence_list, read_beir, read_scifact
from nci.data.glasgow import GLASGOW_GAIN, parse_glasgow, read_glasgow
from nci.data.layout import (
    CORPUS,
    QRELS_DIR,
    QRELS_HEADER,
    QUERIES,
    SPLITS,
    DataError,
    Dataset,
    check_dataset,
    document_text,
    load_corpus,
    load_qrels,
    load_queries,
    split_queries,
    write_dataset,
)
from nci.data.prepare import PrepareConfig, add_arguments, main, prepare
from nci.data.sources import DATASET_SOURCES, DatasetSource, canonical_name, read_dataset, resolve_source
from nci.data.squad import DEFAULT_TEST_FRACTION, read_squad, split_group

__all__ = [
    "CORPUS",
    "DATASET_SOURCES",
    "DEFAULT_TEST_FRACTION",
    "GLASGOW_GAIN",
    "QRELS_DIR",
    "QRELS_HEADER",
    "QUERIES",
    "SPLITS",
    "DataError",
    "Dataset",
    "DatasetSource",
    "PrepareConfig",
    "add_arguments",
    "canonical_name",
    "check_dataset",
    "document_text",
    "load_corpus",
    "load_qrels",
    "load_queries",
    "main",
    "parse_glasgow",
    "parse_sentence_list",
    "prepare",
    "read_beir",
    "read_dataset",
    "read_glasgow",
    "read_scifact",
    "read_squad",
    "resolve_source",
    "split_group",
    "split_queries",
    "write_dataset",
]
