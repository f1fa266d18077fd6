"""JSON-lines corpora, alone or with queries and judgements: the ``jsonl`` format, and the
reading that the ``beir`` format shares.

``--src`` is the corpus file itself, or a folder (or zip) holding ``corpus.jsonl`` and
optionally ``queries.jsonl`` and ``qrels/<split>.tsv``, at its top or in its one subfolder.

- corpus: ``{"_id" (or "id"), "title" (optional), "text" (or "contents")}`` per line;
- queries: ``{"_id" (or "id"), "text"}`` per line;
- qrels: see :mod:`nci.data.judgements`; the file name is the split: ``train``, ``dev``
  (also ``validation``, ``valid``, ``val``) or ``test``.

Files may be gzip-compressed (``corpus.jsonl.gz``).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nci.data.judgements import read_judgements, split_of
from nci.data.layout import CORPUS, QRELS_DIR, QUERIES, SPLITS, DataError, Dataset, check_id
from nci.data.rawfiles import RawFile, input_paths, source_files

log = logging.getLogger("nci.data")


def _records(file: RawFile) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in file.lines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"invalid JSON at column {e.colno}: {e.msg}", file=file.name, line=lineno) from e
        if not isinstance(obj, dict):
            raise DataError(
                f"expected a JSON object, found {type(obj).__name__}", file=file.name, line=lineno
            )
        yield lineno, obj


def _record_id(obj: dict[str, Any], kind: str, file: RawFile, lineno: int) -> str:
    key = "_id" if "_id" in obj else "id"
    value = obj.get(key)
    if value is None:
        raise DataError("missing field '_id' (or 'id')", file=file.name, line=lineno)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # some exports write numeric ids
    if not isinstance(value, str):
        raise DataError(
            f"field '{key}' must be a string or an integer, found {type(value).__name__}",
            file=file.name,
            line=lineno,
        )
    return check_id(value, kind, file=file.name, line=lineno)


def _text_field(obj: dict[str, Any], keys: tuple[str, ...], file: RawFile, lineno: int) -> str | None:
    """The first of ``keys`` present (None when none is); it must be a string."""
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(
                f"field '{key}' must be a string, found {type(value).__name__}", file=file.name, line=lineno
            )
        return value
    return None


def read_corpus_jsonl(file: RawFile) -> dict[str, dict[str, str]]:
    """Doc id -> {"title", "text"}, in file order."""
    corpus: dict[str, dict[str, str]] = {}
    for lineno, obj in tqdm(_records(file), desc="corpus", unit=" docs", disable=None):
        doc_id = _record_id(obj, "document", file, lineno)
        if doc_id in corpus:
            raise DataError(f"duplicate document id '{doc_id}'", file=file.name, line=lineno)
        text = _text_field(obj, ("text", "contents"), file, lineno)
        if text is None:
            raise DataError("missing field 'text'", file=file.name, line=lineno)
        corpus[doc_id] = {"title": _text_field(obj, ("title",), file, lineno) or "", "text": text}
    if not corpus:
        raise DataError("empty corpus: no documents", file=file.name)
    return corpus


def read_queries_jsonl(file: RawFile) -> dict[str, str]:
    """Query id -> text, in file order."""
    queries: dict[str, str] = {}
    for lineno, obj in _records(file):
        qid = _record_id(obj, "query", file, lineno)
        if qid in queries:
            raise DataError(f"duplicate query id '{qid}'", file=file.name, line=lineno)
        text = _text_field(obj, ("text",), file, lineno)
        if text is None:
            raise DataError("missing field 'text'", file=file.name, line=lineno)
        if not text.strip():
            raise DataError(f"query '{qid}' has an empty text", file=file.name, line=lineno)
        queries[qid] = text
    return queries


def _dataset_folder(files: list[RawFile], src: Path) -> str:
    """The folder of ``--src`` that holds ``corpus.jsonl``: its top, or its one subfolder."""
    folders = sorted({f.folder for f in files if f.basename == CORPUS and f.folder.count("/") < 1})
    if "" in folders:
        return ""
    if len(folders) == 1:
        return folders[0]
    if not folders:
        deeper = sorted({f.folder for f in files if f.basename == CORPUS})
        found = f" (found deeper: {', '.join(deeper[:5])})" if deeper else ""
        raise DataError(f"no {CORPUS} here, nor in a subfolder{found}", file=src)
    raise DataError(
        f"several datasets here ({', '.join(folders)}); pass the folder of one of them as --src "
        "(extract a zip first)",
        file=src,
    )


def read_jsonl_folder(src: Path, files: list[RawFile], *, require_queries: bool) -> Dataset:
    """``corpus.jsonl`` [+ ``queries.jsonl``, ``qrels/<split>.tsv``] of a folder or zip."""
    top = _dataset_folder(files, src)
    prefix = f"{top}/" if top else ""
    inside = {f.rel[len(prefix) :]: f for f in files if f.rel.startswith(prefix)}
    named = {rel.lower().removesuffix(".gz"): f for rel, f in inside.items()}
    corpus_file, queries_file = named[CORPUS], named.get(QUERIES)
    if queries_file is None and require_queries:
        raise DataError(
            f"missing {QUERIES} beside {CORPUS}; for a corpus without queries use the jsonl format",
            file=corpus_file.name,
        )
    qrels_files: dict[str, RawFile] = {}
    for rel, f in sorted(named.items()):
        if not rel.startswith(f"{QRELS_DIR}/") or "/" in rel.removeprefix(f"{QRELS_DIR}/"):
            continue
        split = split_of(f.basename.removesuffix(".tsv")) if f.basename.endswith(".tsv") else None
        if split is None:
            raise DataError(
                f"not a qrels split: name it {', '.join(f'{s}.tsv' for s in SPLITS)}", file=f.name
            )
        if split in qrels_files:
            raise DataError(f"a second {split} qrels file besides {qrels_files[split].name}", file=f.name)
        qrels_files[split] = f

    corpus = read_corpus_jsonl(corpus_file)
    queries = read_queries_jsonl(queries_file) if queries_file else {}
    where = queries_file.name if queries_file else f"the queries (no {QUERIES} beside {CORPUS})"
    qrels = {
        split: read_judgements(f, queries, corpus, queries_from=where, corpus_from=corpus_file.name)
        for split, f in qrels_files.items()
    }
    roles = {"corpus": corpus_file, "queries": queries_file} | {
        f"qrels_{s}": f for s, f in qrels_files.items()
    }
    return Dataset(corpus, queries, qrels, inputs=input_paths(src, roles))


def read_jsonl(src: str | Path) -> Dataset:
    """A JSON-lines corpus file alone, or a folder or zip with ``corpus.jsonl`` and optionally
    ``queries.jsonl`` and ``qrels/<split>.tsv``."""
    src = Path(src)
    files = source_files(src)
    if src.is_file() and not zipfile.is_zipfile(src):
        corpus = read_corpus_jsonl(files[0])
        return Dataset(corpus, {}, {}, inputs={"corpus": src})
    return read_jsonl_folder(src, files, require_queries=False)
