"""The Glasgow IR test collections' ``.I/.T/.A/.B/.W`` format (Cranfield).

Cranfield grades run from 1 (complete answer) to 4 (minimum interest); they are stored as gains
``5 - grade`` so that higher is better. Each query also has one row of grade -1, which marks the
most relevant document of all (see ``GLASGOW_GAIN``); it counts as a complete answer, gain 4.
Every query goes to the test split.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from nci.data.layout import DataError, Dataset, check_id

log = logging.getLogger("nci.data")  # one logger for the whole package, as before it was split

# Cranfield relevance codes (Cleverdon): 1 = complete answer ... 4 = minimum interest,
# 5 = no interest (never present, dropped). Gains make higher = better. The readme is silent on
# -1, which marks exactly one document per query; BM25 and dense search rank that document
# higher than any graded one (median rank 2 and 4, against 9 and 10 for grade 1), as one would
# expect of the paper each question was written from. It counts as a complete answer.
GLASGOW_GAIN = {-1: 4, 1: 4, 2: 3, 3: 2, 4: 1}

_MARKER = re.compile(r"^\.([A-Z])(?:\s+(\S+))?\s*$")


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("%s: not UTF-8; reading it as Latin-1", path)
        return raw.decode("latin-1")


def parse_glasgow(path: str | Path) -> list[tuple[str, int, dict[str, str]]]:
    """Records of a ``.I/.T/.A/.B/.W`` file: (.I value, line, {field letter: text}).

    Field text has its whitespace collapsed. A field marker repeated inside one record (the
    Cranfield file has a few such stray lines in its text) is dropped, and the lines after it
    stay in the current field.
    """
    path = Path(path)
    records: list[tuple[str, int, dict[str, list[str]]]] = []
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):  # CRLF or LF
        m = _MARKER.match(line)
        if m and m.group(1) == "I":
            if not m.group(2):
                raise DataError("'.I' without an id", file=path, line=lineno)
            fields, current = {}, None
            records.append((m.group(2), lineno, fields))
        elif m and not m.group(2) and m.group(1) not in fields:
            current = m.group(1)
            fields[current] = []
        elif m and not m.group(2):
            log.warning(
                "%s:%d: repeated '.%s' marker inside a record; kept its lines in '.%s'",
                path,
                lineno,
                m.group(1),
                current,
            )
        elif current is not None:
            fields[current].append(line)
        elif line.strip():
            raise DataError(
                "text outside a field: a record must start with '.I <id>' and a field marker",
                file=path,
                line=lineno,
            )
    return [(rid, line, {k: " ".join(" ".join(v).split()) for k, v in f.items()}) for rid, line, f in records]


def _glasgow_files(folder: Path) -> tuple[Path, Path, Path]:
    """(documents, queries, qrels) files of a Glasgow collection folder."""

    def one(patterns: tuple[str, ...], what: str) -> Path:
        def matches(glob) -> list[Path]:
            return sorted(
                {p for pat in patterns for p in glob(pat) if p.is_file() and "readme" not in p.name.lower()}
            )

        found = matches(folder.glob) or matches(folder.rglob)  # archives may extract into a subfolder
        if len(found) != 1:
            raise DataError(
                f"expected one {what} file matching {list(patterns)}, found {[p.name for p in found]}",
                file=folder,
            )
        return found[0]

    return (
        one(("*.all.*", "*.ALL"), "documents"),
        one(("*.qry", "*.QRY"), "queries"),
        one(("*qrel", "*qrels", "*.REL", "*.rel"), "relevance"),
    )


def _numeric_id(value: str) -> str:
    # Cranfield writes "001" in some places and "1" in others.
    return str(int(value)) if value.isdigit() else value


def _glasgow_corpus(docs_path: Path) -> dict[str, dict[str, str]]:
    """Doc id -> {"title": .T, "text": .W} of the documents file."""
    corpus: dict[str, dict[str, str]] = {}
    for rid, line, f in parse_glasgow(docs_path):
        doc_id = check_id(_numeric_id(rid), "document", file=docs_path, line=line)
        if doc_id in corpus:
            raise DataError(f"duplicate document id '{doc_id}'", file=docs_path, line=line)
        corpus[doc_id] = {"title": f.get("T", ""), "text": f.get("W", "")}
        if not corpus[doc_id]["title"] and not corpus[doc_id]["text"]:
            log.warning("%s:%d: document %s has neither title nor text", docs_path, line, doc_id)
    if not corpus:
        raise DataError("empty corpus: no '.I' records", file=docs_path)
    return corpus


def _glasgow_queries(qry_path: Path) -> dict[str, str]:
    """Query id -> .W text; query k is the k-th record of the queries file."""
    # The qrels number queries 1..n in file order; the .I numbers in cran.qry skip values.
    queries: dict[str, str] = {}
    for k, (_, line, f) in enumerate(parse_glasgow(qry_path), 1):
        if not f.get("W"):
            raise DataError(f"query {k} has no '.W' text", file=qry_path, line=line)
        queries[str(k)] = f["W"]
    return queries


def _glasgow_qrels(
    rel_path: Path,
    queries: dict[str, str],
    qry_path: Path,
    corpus: dict[str, dict[str, str]],
    docs_path: Path,
) -> tuple[dict[str, dict[str, int]], int]:
    """(query id -> doc id -> gain, in query order; number of grade-5 rows dropped)."""
    test: dict[str, dict[str, int]] = {}
    dropped = 0
    for lineno, line in enumerate(_read_text(rel_path).splitlines(), 1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != 3:
            raise DataError(
                f"expected 3 columns 'query document grade', found {len(cols)}", file=rel_path, line=lineno
            )
        qid, doc_id = _numeric_id(cols[0]), _numeric_id(cols[1])
        try:
            grade = int(cols[2])
        except ValueError:
            raise DataError(f"grade '{cols[2]}' is not an integer", file=rel_path, line=lineno) from None
        if qid not in queries:
            raise DataError(
                f"query '{qid}' is not in {qry_path.name} ({len(queries)} queries)",
                file=rel_path,
                line=lineno,
            )
        if doc_id not in corpus:
            raise DataError(f"document '{doc_id}' is not in {docs_path.name}", file=rel_path, line=lineno)
        if grade == 5:  # "of no interest"
            dropped += 1
            continue
        if grade not in GLASGOW_GAIN:
            raise DataError(
                f"grade {grade} is not a Cranfield relevance code (1-5 or -1)", file=rel_path, line=lineno
            )
        if doc_id in test.get(qid, {}):
            raise DataError(
                f"duplicate judgement for query '{qid}', document '{doc_id}'", file=rel_path, line=lineno
            )
        test.setdefault(qid, {})[doc_id] = GLASGOW_GAIN[grade]
    return {q: test[q] for q in queries if q in test}, dropped


def read_glasgow(src: str | Path) -> Dataset:
    """A Glasgow-format collection (Cranfield): every query in the test split, gains 5 - grade
    (grade -1 counts as 1, a complete answer)."""
    folder = Path(src)
    if not folder.is_dir():
        problem = "not a folder" if folder.exists() else "missing source: no such folder"
        raise DataError(
            f"{problem}; expected a folder with cran.all.1400, cran.qry and cranqrel", file=folder
        )
    docs_path, qry_path, rel_path = _glasgow_files(folder)
    corpus = _glasgow_corpus(docs_path)
    queries = _glasgow_queries(qry_path)
    test, dropped = _glasgow_qrels(rel_path, queries, qry_path, corpus, docs_path)
    return Dataset(
        corpus,
        queries,
        {"test": test},
        inputs={"documents": docs_path, "queries": qry_path, "qrels": rel_path},
        notes={
            "relevance": {
                "gain_from_grade": {str(g): v for g, v in GLASGOW_GAIN.items()},
                "rule": "gain = 5 - grade (Cranfield 1 = complete answer .. 4 = minimum interest); "
                "grade -1 (one document per query, ranked above all graded ones by BM25 and dense "
                "search) counts as a complete answer, gain 4; grade 5 (no interest) is dropped",
            },
            "query_ids": "query k is the k-th query of the queries file, as numbered in the qrels",
        },
        counts={"qrels_dropped": dropped},
    )
