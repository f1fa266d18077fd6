"""Tab-separated collections in MS MARCO's layout: the ``tsv`` format.

``--src`` is a collection file alone, or a folder (or zip) holding

- the collection: ``collection.tsv`` (without one, the only other ``.tsv`` file), a line
  ``id<TAB>text`` per document;
- queries: the files whose name contains ``queries`` (``queries.train.tsv``,
  ``queries.dev.small.tsv``, ...), a line ``qid<TAB>text`` per query, all read into one set
  (a query may appear in two files, with the same text);
- judgements: the files whose name contains ``qrels``, ``qid 0 pid rel`` or ``qid<TAB>pid<TAB>rel``
  per line (:mod:`nci.data.judgements`); the name gives the split (``qrels.dev.small.tsv`` is
  dev; a name without train, dev or test is test), one file per split.

A first line that names its columns (``id<TAB>text``) is a header. Files may be gzip-compressed.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from nci.data.judgements import read_judgements, split_of
from nci.data.layout import DataError, Dataset, check_id
from nci.data.rawfiles import RawFile, input_paths, source_files

log = logging.getLogger("nci.data")

# First fields that make a first line a header rather than a record.
HEADER_IDS = {"id", "_id", "pid", "docid", "doc_id", "qid", "query_id", "query-id", "corpus-id"}


def _rows(file: RawFile, kind: str) -> Iterator[tuple[int, str, str]]:
    """(line, id, text) of each ``id<TAB>text`` line; the id checked, the text stripped."""
    for lineno, line in file.lines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(
                f"expected 2 tab-separated fields '{kind} id<TAB>text', found {len(fields)}",
                file=file.name,
                line=lineno,
            )
        if lineno == 1 and fields[0].strip().lower() in HEADER_IDS:
            continue
        yield lineno, check_id(fields[0].strip(), kind, file=file.name, line=lineno), fields[1].strip()


def read_collection(file: RawFile) -> dict[str, dict[str, str]]:
    """Doc id -> {"title": "", "text"} of an ``id<TAB>text`` collection, in file order."""
    corpus: dict[str, dict[str, str]] = {}
    empty = 0
    for lineno, doc_id, text in tqdm(_rows(file, "document"), desc="collection", unit=" docs", disable=None):
        if doc_id in corpus:
            raise DataError(f"duplicate document id '{doc_id}'", file=file.name, line=lineno)
        corpus[doc_id] = {"title": "", "text": text}
        empty += not text
    if not corpus:
        raise DataError("empty corpus: no documents", file=file.name)
    if empty:
        log.warning("%s: %d documents have no text (kept)", file.name, empty)
    return corpus


def read_tsv_queries(files: list[RawFile]) -> dict[str, str]:
    """Query id -> text of ``qid<TAB>text`` files, in file order."""
    queries: dict[str, str] = {}
    seen_in: dict[str, str] = {}
    for file in files:
        for lineno, qid, text in _rows(file, "query"):
            if not text:
                raise DataError(f"query '{qid}' has an empty text", file=file.name, line=lineno)
            if qid in queries and (queries[qid] != text or seen_in[qid] == file.name):
                again = "again" if seen_in[qid] == file.name else f"with another text than in {seen_in[qid]}"
                raise DataError(f"duplicate query id '{qid}' ({again})", file=file.name, line=lineno)
            queries.setdefault(qid, text)
            seen_in.setdefault(qid, file.name)
    return queries


def _folder_files(src: Path, files: list[RawFile]) -> tuple[RawFile, list[RawFile], dict[str, RawFile]]:
    """(collection, queries files, split -> qrels file) of a folder or zip, told apart by name."""
    qrels = [f for f in files if "qrels" in f.basename]
    queries = [f for f in files if "queries" in f.basename and f not in qrels]
    rest = [f for f in files if f not in qrels and f not in queries and f.basename.endswith(".tsv")]
    collection = [f for f in rest if f.basename.startswith("collection")] or rest
    if not collection:
        raise DataError("no collection file: no collection.tsv, nor any other .tsv file", file=src)
    if len(collection) > 1:
        found = [f.rel for f in collection]
        raise DataError(f"expected one collection file (collection.tsv), found {found}", file=src)
    by_split: dict[str, RawFile] = {}
    for f in qrels:
        split = split_of(f.basename) or "test"
        if split in by_split:
            raise DataError(
                f"a second {split} qrels file besides {by_split[split].rel}; keep one of them", file=f.name
            )
        by_split[split] = f
    return collection[0], queries, by_split


def read_tsv(src: str | Path) -> Dataset:
    """An ``id<TAB>text`` collection alone, or a folder or zip in MS MARCO's layout (module doc)."""
    src = Path(src)
    files = source_files(src)
    if src.is_file() and not zipfile.is_zipfile(src):
        return Dataset(read_collection(files[0]), {}, {}, inputs={"collection": src})
    collection, queries_files, qrels_files = _folder_files(src, files)
    corpus = read_collection(collection)
    queries = read_tsv_queries(queries_files)
    where = " or ".join(f.rel for f in queries_files) or "the queries (no queries file found)"
    qrels = {
        split: read_judgements(f, queries, corpus, queries_from=where, corpus_from=collection.rel)
        for split, f in qrels_files.items()
    }
    roles = {"collection": collection} | {f"queries_{n}": f for n, f in enumerate(queries_files, 1)}
    roles |= {f"qrels_{split}": f for split, f in qrels_files.items()}
    return Dataset(corpus, queries, qrels, inputs=input_paths(src, roles))
