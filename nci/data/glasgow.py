"""The Glasgow IR test collections' ``.I/.T/.A/.B/.W/.X/.K/.N`` format: Cranfield, CACM, CISI,
MED, ADI and the others written that way.

``--src`` is a folder (or zip, or the documents file alone). Its files are told apart by
content, not by name (names containing "readme" are skipped):

- the ``.I`` files are the documents and the queries. The queries file is the one named like
  one (``*.qry``, ``query.text``, ``*queries*``); without such a name, the ``.I`` file other
  than the largest whose records cover the query numbers of the relevance file. The documents
  file is the largest remaining ``.I`` file. Title is ``.T``, text ``.W``; a query's text is
  its ``.W`` (or ``.T``). Other fields (``.A``, ``.B``, ``.X``, ``.K``, ``.N``) are dropped.
- the relevance file is the one whose lines are 2 to 4 fields starting with a number (several
  such files: the one whose name contains "rel"). Its layout is read from the whole file:

  - 3 columns, ``query document grade`` (Cranfield): grades 1 (complete answer) to 4 (minimum
    interest) are stored as gains ``5 - grade`` so that higher is better; grade 5 (no
    interest) is dropped; each query's one row of grade -1 marks the most relevant document
    of all (see ``GLASGOW_GAIN``) and counts as a complete answer, gain 4.
  - 4 columns whose 2nd is always 0, ``query 0 document relevance`` (MED): gain = relevance.
  - 4 columns ``query document a b`` (CACM ``0 0``, CISI ``0 0.000000``): every listed pair
    is relevant, gain 1 -- unless the 3rd column carries grades (a non-zero value somewhere;
    then gain = 3rd column), or else the 4th does (non-zero integers; then gain = 4th).
  - 2 columns ``query document``: gain 1.

- Empty files are placed by name: "rel" is the relevance file, "qry"/"query" the queries,
  anything else a (then empty) documents file.

Numbers lose their leading zeros (CACM writes document "0756"). A query's id is its position
in the queries file (query k is the k-th record: the qrels number Cranfield's queries 1..225
while its ``.I`` numbers skip values), unless the relevance file names a number beyond the
count of queries; then ids are the ``.I`` numbers. Every judged query goes to the test split.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from nci.data.judgements import numeric_id
from nci.data.layout import DataError, Dataset, check_id
from nci.data.rawfiles import RawFile, input_paths, source_files

log = logging.getLogger("nci.data")  # one logger for the whole package, as before it was split

# Cranfield relevance codes (Cleverdon): 1 = complete answer ... 4 = minimum interest,
# 5 = no interest (never present, dropped). Gains make higher = better. The readme is silent on
# -1, which marks exactly one document per query; BM25 and dense search rank that document
# higher than any graded one (median rank 2 and 4, against 9 and 10 for grade 1), as one would
# expect of the paper each question was written from. It counts as a complete answer.
GLASGOW_GAIN = {-1: 4, 1: 4, 2: 3, 3: 2, 4: 1}

_MARKER = re.compile(r"^\.([A-Z])(?:\s+(\S+))?\s*$")
_RECORD_START = re.compile(r"^\.I[ \t]+\S+[ \t]*\r?$", re.M)
_NUMBER = re.compile(r"[+-]?\d+(\.\d*)?")
_QUERY_NAME = re.compile(r"qry|quer")  # cran.qry, CISI.QRY, query.text, queries.txt


# --------------------------------------------------------------------------------------------
# The .I record format


def _parse(file: RawFile) -> list[tuple[str, int, dict[str, str]]]:
    records: list[tuple[str, int, dict[str, list[str]]]] = []
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for lineno, line in enumerate(file.text().splitlines(), 1):  # CRLF or LF
        m = _MARKER.match(line)
        if m and m.group(1) == "I":
            if not m.group(2):
                raise DataError("'.I' without an id", file=file.name, line=lineno)
            fields, current = {}, None
            records.append((m.group(2), lineno, fields))
        elif m and not m.group(2) and m.group(1) not in fields:
            current = m.group(1)
            fields[current] = []
        elif m and not m.group(2):
            log.warning(
                "%s:%d: repeated '.%s' marker inside a record; kept its lines in '.%s'",
                file.name,
                lineno,
                m.group(1),
                current,
            )
        elif current is not None:
            fields[current].append(line)
        elif line.strip():
            raise DataError(
                "text outside a field: a record must start with '.I <id>' and a field marker",
                file=file.name,
                line=lineno,
            )
    return [(rid, line, {k: " ".join(" ".join(v).split()) for k, v in f.items()}) for rid, line, f in records]


def parse_glasgow(path: str | Path) -> list[tuple[str, int, dict[str, str]]]:
    """Records of a ``.I/.T/.A/.B/.W`` file: (.I value, line, {field letter: text}).

    Field text has its whitespace collapsed. A field marker repeated inside one record (the
    Cranfield file has a few such stray lines in its text) is dropped, and the lines after it
    stay in the current field.
    """
    path = Path(path)
    return _parse(RawFile(path, path.name))


# --------------------------------------------------------------------------------------------
# Telling the files apart


def _relevance_shaped(head: str) -> bool:
    rows = [line.split() for line in head.splitlines() if line.strip()][:20]
    return bool(rows) and all(len(r) >= 2 and _NUMBER.fullmatch(r[0]) for r in rows)


def _classify(files: list[RawFile]) -> tuple[list[RawFile], list[RawFile], list[RawFile]]:
    """(.I files, relevance files, empty files) among ``files``; the rest is skipped."""
    records, relevance, empty = [], [], []
    for f in files:
        if "readme" in f.basename:
            continue
        head = f.head(1 << 20)
        if not head.strip():
            empty.append(f)
        elif _RECORD_START.search(head):
            records.append(f)
        elif _relevance_shaped(head):
            relevance.append(f)
        else:
            log.info("%s: neither '.I' records nor relevance judgements; skipped", f.name)
    return records, relevance, empty


def _pick_relevance(relevance: list[RawFile], empty: list[RawFile], src: Path) -> RawFile | None:
    candidates = relevance or [f for f in empty if "rel" in f.basename]
    if len(candidates) > 1:
        candidates = [f for f in candidates if "rel" in f.basename] or candidates
    if len(candidates) > 1:
        names = [f.rel for f in candidates]
        raise DataError(f"several relevance files {names}; keep one of them here", file=src)
    return candidates[0] if candidates else None


def _pick_queries(
    records: list[RawFile], empty: list[RawFile], judged: set[str], src: Path
) -> RawFile | None:
    """The queries file: named like one, or the one .I file besides the documents covering ``judged``."""
    named = [f for f in records + empty if _QUERY_NAME.search(f.basename)]
    if len(named) > 1:
        raise DataError(f"several queries files {[f.rel for f in named]}; keep one of them here", file=src)
    if named:
        return named[0]
    others = sorted(records, key=lambda f: -f.size)[1:]  # the largest is the documents
    if len(others) > 1:
        others = [f for f in others if _covers(f, judged)]
    if len(others) > 1:
        names = [f.rel for f in others]
        raise DataError(f"cannot tell the queries file among {names}; name it *.qry", file=src)
    return others[0] if others else None


def _covers(file: RawFile, judged: set[str]) -> bool:
    records = _parse(file)
    ids = {numeric_id(rid) for rid, _, _ in records}
    return judged <= ids or judged <= {str(k) for k in range(1, len(records) + 1)}


def _glasgow_files(src: Path) -> tuple[RawFile, RawFile | None, RawFile | None]:
    """(documents, queries, relevance) files of a collection; see the module doc."""
    records, relevance, empty = _classify(source_files(src))
    rel = _pick_relevance(relevance, empty, src)
    judged = (
        {numeric_id(line.split()[0]) for line in rel.text().splitlines() if line.strip()} if rel else set()
    )
    qry = _pick_queries(records, empty, judged, src)
    docs = sorted((f for f in records + empty if f not in (qry, rel)), key=lambda f: -f.size)
    if not docs:
        raise DataError("no documents file: no file here holds '.I' records", file=src)
    if rel is not None and qry is None:
        raise DataError("relevance judgements but no queries file (name it *.qry)", file=rel.name)
    return docs[0], qry, rel


# --------------------------------------------------------------------------------------------
# Documents, queries, judgements


def _glasgow_corpus(docs: RawFile) -> dict[str, dict[str, str]]:
    """Doc id -> {"title": .T, "text": .W} of the documents file."""
    corpus: dict[str, dict[str, str]] = {}
    for rid, line, f in _parse(docs):
        doc_id = check_id(numeric_id(rid), "document", file=docs.name, line=line)
        if doc_id in corpus:
            raise DataError(f"duplicate document id '{doc_id}'", file=docs.name, line=line)
        corpus[doc_id] = {"title": f.get("T", ""), "text": f.get("W", "")}
        if not corpus[doc_id]["title"] and not corpus[doc_id]["text"]:
            log.warning("%s:%d: document %s has neither title nor text", docs.name, line, doc_id)
    if not corpus:
        raise DataError("empty corpus: no '.I' records", file=docs.name)
    return corpus


def _glasgow_queries(qry: RawFile, judged: set[str]) -> tuple[dict[str, str], str]:
    """(query id -> .W text, how ids were given); ids are positions unless ``judged`` names a
    number beyond the count of queries (see the module doc)."""
    records = _parse(qry)
    if not records:
        raise DataError("no queries: no '.I' records", file=qry.name)
    by_position = judged <= {str(k) for k in range(1, len(records) + 1)}
    queries: dict[str, str] = {}
    for k, (rid, line, f) in enumerate(records, 1):
        qid = str(k) if by_position else check_id(numeric_id(rid), "query", file=qry.name, line=line)
        if qid in queries:
            raise DataError(f"duplicate query id '{qid}'", file=qry.name, line=line)
        text = f.get("W") or f.get("T")
        if not text:
            raise DataError(f"query {qid} has no '.W' text", file=qry.name, line=line)
        queries[qid] = text
    if by_position:
        return queries, "query k is the k-th query of the queries file, as numbered in the qrels"
    return queries, "a query's id is its '.I' number"


def _relevance_rows(rel: RawFile) -> list[tuple[int, list[str]]]:
    """(line, columns) of each row; every row has the first row's 2 to 4 columns."""
    rows: list[tuple[int, list[str]]] = []
    for lineno, line in enumerate(rel.text().splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if not rows and not 2 <= len(cols) <= 4:
            raise DataError(
                f"expected 3 columns 'query document grade' (or 2 or 4), found {len(cols)}",
                file=rel.name,
                line=lineno,
            )
        if rows and len(cols) != len(rows[0][1]):
            raise DataError(
                f"expected {len(rows[0][1])} columns, as on line {rows[0][0]}, found {len(cols)}",
                file=rel.name,
                line=lineno,
            )
        rows.append((lineno, cols))
    if not rows:
        raise DataError("no judgements in the relevance file", file=rel.name)
    return rows


def _number(value: str, what: str, rel: RawFile, lineno: int, *, integer: bool) -> float:
    if not _NUMBER.fullmatch(value) or (integer and not float(value).is_integer()):
        kind = "an integer" if integer else "a number"
        raise DataError(f"{what} '{value}' is not {kind}", file=rel.name, line=lineno)
    return float(value)


def _gains(
    rows: list[tuple[int, list[str]]], rel: RawFile
) -> tuple[list[tuple[int, str, str, int | None]], dict]:
    """((line, query, document, gain or None to drop), relevance notes) for the file's layout."""
    width = len(rows[0][1])
    if width == 3:  # Cranfield: 'query document grade'
        out = []
        for lineno, (q, d, g) in rows:
            grade = int(_number(g, "grade", rel, lineno, integer=True))
            if grade != 5 and grade not in GLASGOW_GAIN:
                raise DataError(
                    f"grade {grade} is not a Cranfield relevance code (1-5 or -1)", file=rel.name, line=lineno
                )
            out.append((lineno, q, d, GLASGOW_GAIN.get(grade)))  # 5, "no interest": dropped
        return out, {
            "gain_from_grade": {str(g): v for g, v in GLASGOW_GAIN.items()},
            "rule": "gain = 5 - grade (Cranfield 1 = complete answer .. 4 = minimum interest); "
            "grade -1 (one document per query, ranked above all graded ones by BM25 and dense "
            "search) counts as a complete answer, gain 4; grade 5 (no interest) is dropped",
        }
    if width == 2:
        return [(n, q, d, 1) for n, (q, d) in rows], {"layout": "query document", "rule": "gain 1"}
    if all(cols[1] == "0" for _, cols in rows):  # MED: 'query 0 document relevance'
        out = [(n, c[0], c[2], int(_number(c[3], "relevance", rel, n, integer=True))) for n, c in rows]
        return out, {"layout": "query 0 document relevance", "rule": "gain = relevance"}
    third = [_number(c[2], "3rd column", rel, n, integer=False) for n, c in rows]
    fourth = [_number(c[3], "4th column", rel, n, integer=False) for n, c in rows]
    layout = "query document a b"
    if any(third):
        bad = next((n for (n, _), v in zip(rows, third, strict=True) if not v.is_integer()), None)
        if bad is not None:
            raise DataError("3rd column grades must be integers", file=rel.name, line=bad)
        return [(n, c[0], c[1], int(v)) for (n, c), v in zip(rows, third, strict=True)], {
            "layout": layout,
            "rule": "gain = a (the 3rd column carries grades)",
        }
    if any(fourth) and all(v.is_integer() for v in fourth):
        return [(n, c[0], c[1], int(v)) for (n, c), v in zip(rows, fourth, strict=True)], {
            "layout": layout,
            "rule": "gain = b (the 4th column carries grades)",
        }
    if any(fourth):
        log.warning("%s: 4th column holds non-integer scores, not grades; ignored", rel.name)
    return [(n, c[0], c[1], 1) for n, c in rows], {
        "layout": layout,
        "rule": "binary: every listed pair has gain 1",
    }


def _glasgow_qrels(
    rel: RawFile, queries: dict[str, str], qry: RawFile, corpus: dict[str, dict[str, str]], docs: RawFile
) -> tuple[dict[str, dict[str, int]], int, dict[str, Any]]:
    """(query id -> doc id -> gain, in query order; number of rows dropped; relevance notes)."""
    rows, notes = _gains(_relevance_rows(rel), rel)
    test: dict[str, dict[str, int]] = {}
    dropped = 0
    for lineno, q, d, gain in rows:
        qid, doc_id = numeric_id(q), numeric_id(d)
        if qid not in queries:
            raise DataError(
                f"query '{qid}' is not in {Path(qry.rel).name} ({len(queries)} queries)",
                file=rel.name,
                line=lineno,
            )
        if doc_id not in corpus:
            raise DataError(
                f"document '{doc_id}' is not in {Path(docs.rel).name}", file=rel.name, line=lineno
            )
        if gain is None:
            dropped += 1
            continue
        if doc_id in test.get(qid, {}):
            raise DataError(
                f"duplicate judgement for query '{qid}', document '{doc_id}'", file=rel.name, line=lineno
            )
        test.setdefault(qid, {})[doc_id] = gain
    return {q: test[q] for q in queries if q in test}, dropped, notes


def read_glasgow(src: str | Path) -> Dataset:
    """A Glasgow-format collection (Cranfield, CACM, CISI, MED, ...): every judged query in the
    test split; relevance as the module doc says."""
    src = Path(src)
    docs, qry, rel = _glasgow_files(src)
    corpus = _glasgow_corpus(docs)
    judged = {numeric_id(cols[0]) for _, cols in _relevance_rows(rel)} if rel else set()
    queries, query_ids = _glasgow_queries(qry, judged) if qry else ({}, "no queries file")
    notes: dict[str, Any] = {"query_ids": query_ids}
    qrels, dropped = {}, 0
    if rel is not None and qry is not None:
        qrels["test"], dropped, notes["relevance"] = _glasgow_qrels(rel, queries, qry, corpus, docs)
    return Dataset(
        corpus,
        queries,
        qrels,
        inputs=input_paths(src, {"documents": docs, "queries": qry, "qrels": rel}),
        notes=notes,
        counts={"qrels_dropped": dropped},
    )
