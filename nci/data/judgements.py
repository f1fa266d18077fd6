"""Relevance judgement (qrels) files of the raw formats, read and checked, and their split names.

A row is whitespace separated, ``query document score`` (BEIR, MS MARCO's short form) or
``query iteration document score`` (TREC, MS MARCO); every row of a file has the same number of
columns. A first row whose score is not a number is a header and is skipped. Scores are
integers; a score of 0 or less is kept: the document was judged and found not relevant.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from nci.data.layout import DataError, check_id
from nci.data.rawfiles import RawFile

# What a qrels file's name says about its split (BEIR's qrels/<split>.tsv, MS MARCO's
# qrels.<split>.tsv); "validation" and the like are BEIR's "dev".
SPLIT_NAMES = {
    "train": "train",
    "dev": "dev",
    "validation": "dev",
    "valid": "dev",
    "val": "dev",
    "test": "test",
    "eval": "test",
}


def split_of(name: str) -> str | None:
    """The split a qrels file name names (``dev`` for ``qrels.dev.small.tsv``), or None."""
    words = [w for w in re.split(r"[^a-z]+", name.lower()) if w]
    found = {SPLIT_NAMES[w] for w in words if w in SPLIT_NAMES}
    # MS MARCO's document task writes "docdev", "doctrain"
    found |= {SPLIT_NAMES[s] for w in words for s in ("train", "dev") if w.endswith(s) and w != s}
    return found.pop() if len(found) == 1 else None


def numeric_id(value: str) -> str:
    """``value`` without leading zeros when it is a number ("051" -> "51"), else unchanged."""
    return str(int(value)) if value.isascii() and value.isdigit() else value


def _is_int(value: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", value) is not None


def read_judgements(
    file: RawFile,
    queries: Mapping[str, str],
    corpus: Mapping[str, object],
    *,
    queries_from: str,
    corpus_from: str,
    query_id: Callable[[str], str] = str,
) -> dict[str, dict[str, int]]:
    """Query id -> doc id -> score of one qrels file, each row checked against the queries
    and the corpus (``queries_from``, ``corpus_from``: how errors name where they came from).

    ``query_id`` normalises the query column (TREC writes topic 51 as "051" in places).
    """
    rels: dict[str, dict[str, int]] = {}
    columns = first = 0
    for lineno, line in file.lines():
        cols = line.split()
        if not cols:
            continue
        if not columns:
            if len(cols) not in (3, 4):
                raise DataError(
                    f"expected 3 columns 'query document score' or 4 'query 0 document score', "
                    f"found {len(cols)}",
                    file=file.name,
                    line=lineno,
                )
            if not _is_int(cols[-1]) and not first:
                first = lineno  # a header: "query-id corpus-id score"
                continue
            columns, first = len(cols), lineno
        elif len(cols) != columns:
            raise DataError(
                f"expected {columns} columns, as on line {first}, found {len(cols)}",
                file=file.name,
                line=lineno,
            )
        qid, doc_id, score = (cols[0], cols[1], cols[2]) if columns == 3 else (cols[0], cols[2], cols[3])
        if not _is_int(score):
            raise DataError(f"score '{score}' is not an integer", file=file.name, line=lineno)
        qid = check_id(query_id(qid), "query", file=file.name, line=lineno)
        if qid not in queries:
            raise DataError(f"query '{qid}' is not in {queries_from}", file=file.name, line=lineno)
        if doc_id not in corpus:
            raise DataError(f"document '{doc_id}' is not in {corpus_from}", file=file.name, line=lineno)
        if doc_id in rels.get(qid, {}):
            raise DataError(
                f"duplicate judgement for query '{qid}', document '{doc_id}'", file=file.name, line=lineno
            )
        rels.setdefault(qid, {})[doc_id] = int(score)
    if not rels:
        raise DataError("no judgements in the file; delete it if the split has none", file=file.name)
    return rels
