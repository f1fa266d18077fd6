"""Dataset preparation: raw collections into one canonical layout, and the loaders for it.

The canonical layout is BEIR's, plus a manifest (see :mod:`nci.data.layout`)::

    corpus.jsonl        {"_id", "title", "text"} per line, in corpus order
    queries.jsonl       {"_id", "text"} per line
    qrels/train.tsv     "query-id  corpus-id  score" (tab separated, with that header); absent
    qrels/dev.tsv       when a dataset has no such split (Cranfield has no train split, most
    qrels/test.tsv      have no dev split, a corpus alone has none)
    manifest.json       stage "data": config (dataset, source, seed, ...), counts, input hashes

``nci data prepare NAME --out DIR`` (:mod:`nci.data.prepare`) writes it for the sources named in
:mod:`nci.data.sources`, one module per source format. Three are datasets with a default copy:

- ``squad`` (:mod:`nci.data.squad`): SQuAD v1.1 as passage retrieval. One document per paragraph
  (id ``<title>_<paragraph index>``); each question is relevant to its own paragraph. Questions
  are split into train/test per paragraph with a seeded rule (see :func:`split_group`).
- ``scifact`` (:mod:`nci.data.beir`): the CSV export of allenai/scifact (``scifact.zip``) with
  the BEIR qrels files next to it, or a folder already in the BEIR layout (BEIR's own
  ``scifact.zip``, extracted). Train queries are the train claims, test queries the validation
  claims, as in BEIR.
- ``glasgow`` (alias ``cranfield``; :mod:`nci.data.glasgow`): the ``.I/.T/.A/.B/.W`` format of
  the Glasgow IR test collections (Cranfield by default; CACM, CISI, MED, ADI with ``--src``),
  files found by content. Cranfield grades run from 1 (complete answer) to 4 (minimum
  interest); they are stored as gains ``5 - grade`` so that higher is better. Each query also has
  one row of grade -1, which marks the most relevant document of all (see ``GLASGOW_GAIN``); it
  counts as a complete answer, gain 4. The 4-column relevance files of the other collections
  are binary unless a column carries grades. Every judged query goes to the test split.

The others are formats, read from ``--src`` (a file, a folder, or a zip; files may be gzipped):

- ``beir`` (:mod:`nci.data.beir`): a BEIR dataset, ``corpus.jsonl``, ``queries.jsonl``,
  ``qrels/{train,dev,test}.tsv``; each qrels file is its own split.
- ``jsonl`` (:mod:`nci.data.jsonl`): a JSON-lines corpus (``_id`` or ``id``, ``title``,
  ``text``) alone, or with ``queries.jsonl`` and ``qrels/<split>.tsv``.
- ``trec`` (:mod:`nci.data.trec`): ``<DOC>`` documents, ``<top>`` topics (the query is the
  title) and ``qid 0 docid rel`` qrels, found by content; judged topics go to test.
- ``tsv`` (:mod:`nci.data.tsv`): MS MARCO's layout, ``collection.tsv`` (``id<TAB>text``),
  ``queries.*.tsv``, ``qrels.*.tsv`` (the name gives the split).

A corpus without queries, or without training queries, is prepared without those splits.

Bad input raises :class:`DataError`, naming the file, the line or record, and the problem.
"""

from nci.data.beir import parse_sentence_list, read_beir, read_scifact
from nci.data.glasgow import GLASGOW_GAIN, parse_glasgow, read_glasgow
from nci.data.jsonl import read_jsonl
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
from nci.data.trec import read_trec
from nci.data.tsv import read_tsv

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
    "read_jsonl",
    "read_scifact",
    "read_squad",
    "read_trec",
    "read_tsv",
    "resolve_source",
    "split_group",
    "split_queries",
    "write_dataset",
]
