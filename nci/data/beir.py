"""BEIR datasets (folders or zips in the BEIR layout), and SciFact, as BEIR dataset or as its CSV
export.

SciFact's CSV export of allenai/scifact (``scifact.zip``) needs the BEIR qrels files next to it
(``qrels/train.tsv``, ``qrels/test.tsv``); BEIR's own ``scifact.zip``, extracted or not, is read
as a BEIR folder. Train queries are the train claims, test queries the validation claims, as in
BEIR.
"""

from __future__ import annotations

import ast
import csv
import io
import logging
import tokenize
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from nci.data.jsonl import read_jsonl_folder
from nci.data.layout import CORPUS, QRELS_DIR, DataError, Dataset, check_id, read_qrels_rows
from nci.data.rawfiles import source_files

log = logging.getLogger("nci.data")  # one logger for the whole package, as before it was split

# The CSV export's members: the corpus, and the claims of each split.
SCIFACT_CORPUS = "corpus_train.csv"
SCIFACT_CLAIMS = (("train", "claims_train.csv"), ("test", "claims_validation.csv"))


# --------------------------------------------------------------------------------------------
# BEIR datasets


def read_beir(src: str | Path) -> Dataset:
    """A BEIR dataset: a folder or zip (at its top or in its one subfolder) with ``corpus.jsonl``,
    ``queries.jsonl`` and ``qrels/<split>.tsv`` for the splits it has (train, dev, test)."""
    src = Path(src)
    return read_jsonl_folder(src, source_files(src), require_queries=True)


# --------------------------------------------------------------------------------------------
# SciFact's CSV export


def parse_sentence_list(value: str) -> list[str]:
    """Sentences from a printed numpy-style list of strings (``['s1'\\n 's2']``), without eval.

    Only string literals and brackets (and commas, as in a Python list) are accepted.
    """
    tokens = tokenize.generate_tokens(io.StringIO(value).readline)
    sentences: list[str] = []
    try:
        for tok in tokens:
            if tok.type == tokenize.STRING:
                text = ast.literal_eval(tok.string)
                if not isinstance(text, str):
                    raise ValueError(f"unexpected literal {tok.string[:40]!r}")
                sentences.append(text)
            elif tok.type == tokenize.OP and tok.string in "[],":
                continue
            elif tok.type in {
                tokenize.NL,
                tokenize.NEWLINE,
                tokenize.ENDMARKER,
                tokenize.INDENT,
                tokenize.DEDENT,
            }:
                continue
            else:
                raise ValueError(f"unexpected {tokenize.tok_name[tok.type]} token {tok.string[:40]!r}")
    except (tokenize.TokenError, SyntaxError) as e:
        raise ValueError(f"not a list of string literals ({e})") from e
    return sentences


def _csv_rows(
    z: zipfile.ZipFile, member: str, where: str, columns: tuple[str, ...]
) -> Iterator[tuple[int, int, dict]]:
    """(record number, first line, row) for each row of a CSV member; checks the header."""
    try:
        f = io.TextIOWrapper(z.open(member), encoding="utf-8", newline="")
    except KeyError:
        raise DataError(f"missing member '{member}' in the zip", file=where) from None
    name = f"{where} ({member})"
    with f:
        rows = csv.reader(f, strict=True)  # bad quoting is an error, not a silent mis-parse
        try:
            header = next(rows, [])
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"missing columns {missing} (found {header})", file=name, line=1)
            start = rows.line_num + 1
            for record, values in enumerate(rows, 1):
                if len(values) != len(header):
                    raise DataError(
                        f"{len(values)} fields, the header has {len(header)}",
                        file=name,
                        line=start,
                        record=record,
                    )
                yield record, start, dict(zip(header, values, strict=True))
                start = rows.line_num + 1
        except csv.Error as e:
            raise DataError(f"malformed CSV: {e}", file=name, line=rows.line_num) from e
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 text ({e.reason})", file=name, line=rows.line_num + 1) from e


def _scifact_corpus(z: zipfile.ZipFile, src: Path) -> dict[str, dict[str, str]]:
    """Doc id -> {"title", "text"} from ``corpus_train.csv``; the abstract's sentences joined."""
    corpus: dict[str, dict[str, str]] = {}
    name = f"{src} ({SCIFACT_CORPUS})"
    for record, line, row in tqdm(
        _csv_rows(z, SCIFACT_CORPUS, str(src), ("doc_id", "title", "abstract")),
        desc="scifact corpus",
        disable=None,
    ):
        doc_id = check_id(row["doc_id"].strip(), "document", file=name, line=line, record=record)
        if doc_id in corpus:
            raise DataError(f"duplicate document id '{doc_id}'", file=name, line=line, record=record)
        try:
            sentences = parse_sentence_list(row["abstract"])
        except ValueError as e:
            raise DataError(f"field 'abstract': {e}", file=name, line=line, record=record) from None
        corpus[doc_id] = {"title": row["title"].strip(), "text": " ".join(s.strip() for s in sentences)}
    if not corpus:
        raise DataError("empty corpus: no documents", file=name)
    return corpus


def _scifact_claims(z: zipfile.ZipFile, src: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(claim id -> text, claim id -> split) from the claims files of each split."""
    queries: dict[str, str] = {}
    split_of: dict[str, str] = {}
    for split, member in SCIFACT_CLAIMS:
        mname = f"{src} ({member})"
        # One row per evidence entry: a claim repeats once per cited document.
        for record, line, row in _csv_rows(z, member, str(src), ("id", "claim")):
            qid = check_id(row["id"].strip(), "query", file=mname, line=line, record=record)
            text = row["claim"].strip()
            if qid in queries and (queries[qid] != text or split_of[qid] != split):
                raise DataError(
                    f"claim id '{qid}' appears again with a different claim or split",
                    file=mname,
                    line=line,
                    record=record,
                )
            queries[qid], split_of[qid] = text, split
    return queries, split_of


def _scifact_qrels(
    path: Path, split: str, split_of: dict[str, str], corpus: dict[str, dict[str, str]]
) -> dict[str, dict[str, int]]:
    """The BEIR qrels file of ``split``, checked against the claims and corpus of the zip."""
    if not path.is_file():
        raise DataError(f"missing BEIR qrels file; SciFact's {split} judgements are read from it", file=path)
    rels: dict[str, dict[str, int]] = {}
    for lineno, qid, doc_id, grade in read_qrels_rows(path):
        if split_of.get(qid) != split:
            found = f"a {split_of[qid]} claim" if qid in split_of else "not a claim in the zip"
            raise DataError(f"query '{qid}' is {found}, expected a {split} claim", file=path, line=lineno)
        if doc_id not in corpus:
            raise DataError(f"document '{doc_id}' is not in {SCIFACT_CORPUS}", file=path, line=lineno)
        rels.setdefault(qid, {})[doc_id] = grade
    return rels


def read_scifact(src: str | Path) -> Dataset:
    """SciFact from its CSV export (``scifact.zip`` with ``qrels/`` beside it) or a BEIR folder."""
    src = Path(src)
    if not src.exists():
        raise DataError("missing source: no such file or folder", file=src)
    if src.is_dir():
        if (src / CORPUS).is_file() or any((p / CORPUS).is_file() for p in src.iterdir() if p.is_dir()):
            return read_beir(src)
        src = src / "scifact.zip"
        if not src.is_file():
            raise DataError(
                "missing source: neither a BEIR folder (corpus.jsonl) nor scifact.zip here", file=src.parent
            )
    if not zipfile.is_zipfile(src):
        raise DataError("not a zip file", file=src)
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        if SCIFACT_CORPUS not in names and any(n.endswith(CORPUS) for n in names):
            return read_beir(src)
        corpus = _scifact_corpus(z, src)
        queries, split_of = _scifact_claims(z, src)

    qrels: dict[str, dict[str, dict[str, int]]] = {}
    inputs: dict[str, Path] = {"source": src}
    for split, _ in SCIFACT_CLAIMS:
        path = src.parent / QRELS_DIR / f"{split}.tsv"
        qrels[split] = _scifact_qrels(path, split, split_of, corpus)
        inputs[f"qrels_{split}"] = path
    without = [q for q in queries if not any(q in r for r in qrels.values())]
    if without:
        log.warning("%d claims have no judgements (kept in queries.jsonl): %s", len(without), without[:5])
    return Dataset(corpus, queries, qrels, inputs=inputs)
