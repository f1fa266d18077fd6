"""The canonical dataset layout (BEIR's) that every later stage reads, its loaders and its writer.

::

    corpus.jsonl        {"_id", "title", "text"} per line, in corpus order
    queries.jsonl       {"_id", "text"} per line
    qrels/train.tsv     "query-id  corpus-id  score" (tab separated, with that header); absent
    qrels/dev.tsv       when a dataset has no such split (Cranfield has no train split, most
    qrels/test.tsv      have no dev split, a corpus alone has none)
    manifest.json       stage "data" (written by :func:`nci.data.prepare`)

Bad input raises :class:`DataError`, naming the file, the line or record, and the problem.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CORPUS = "corpus.jsonl"
QUERIES = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")
SPLITS = ("train", "dev", "test")  # training, tuning (BEIR's "dev"), evaluation
COUNTED_SPLITS = ("train", "test")  # counted (as 0) by check_dataset even when absent


class DataError(ValueError):
    """Bad dataset input. The message names the file, the line or record, and the problem."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        record: str | int | None = None,
    ) -> None:
        self.problem, self.file, self.line, self.record = problem, file, line, record
        where = [str(file)] if file is not None else []
        if line is not None:
            where.append(f"line {line}")
        if record is not None:
            where.append(f"record {record}")
        # One line, always: the CLI prints it as a single error line.
        message = f"{', '.join(where)}: {problem}" if where else problem
        super().__init__(message.replace("\n", " "))


@dataclass
class Dataset:
    """A dataset in memory, in the shape of the canonical layout."""

    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}, corpus order
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, dict[str, int]]]  # split -> query id -> doc id -> grade
    inputs: dict[str, Path] = field(default_factory=dict)  # files read, hashed into the manifest
    notes: dict[str, Any] = field(default_factory=dict)  # dataset-specific facts for the manifest
    counts: dict[str, int] = field(default_factory=dict)  # extra counts (e.g. dropped rows)


# --------------------------------------------------------------------------------------------
# Checks shared by the loaders and the source readers


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DataError(
            "missing; is this a prepared dataset directory? Create one with `nci data prepare`.",
            file=path,
        )
    with open(path, encoding="utf-8") as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(
                        f"invalid JSON at column {e.colno}: {e.msg}", file=path, line=lineno
                    ) from e
                if not isinstance(obj, dict):
                    raise DataError(
                        f"expected a JSON object, found {type(obj).__name__}", file=path, line=lineno
                    )
                yield lineno, obj
        except UnicodeDecodeError as e:
            raise DataError(f"not UTF-8 text ({e.reason})", file=path, line=lineno + 1) from e


def _string_field(obj: dict[str, Any], key: str, path: Path, lineno: int, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        if required:
            raise DataError(f"missing field '{key}'", file=path, line=lineno)
        return ""
    if isinstance(value, int) and not isinstance(value, bool) and key == "_id":
        return str(value)  # some BEIR exports write numeric ids
    if not isinstance(value, str):
        raise DataError(
            f"field '{key}' must be a string, found {type(value).__name__}", file=path, line=lineno
        )
    return value


def check_id(value: str, kind: str, *, file: Path | str, line: int | None = None, record: Any = None) -> str:
    """``value`` if it is a usable document or query id, else a DataError naming where it came from."""
    # Ids end up in TSV qrels and TREC run files, which split on whitespace.
    if not value or any(c.isspace() for c in value):
        raise DataError(
            f"{kind} id {value!r} is empty or contains whitespace; ids must be single tokens",
            file=file,
            line=line,
            record=record,
        )
    return value


def read_qrels_rows(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """(line, query id, doc id, grade) rows of a BEIR qrels file; the header line is optional."""
    seen: set[tuple[str, str]] = set()
    with open(path, encoding="utf-8") as f:  # universal newlines: CRLF files read the same
        for lineno, line in enumerate(f, 1):
            cols = line.split()
            if not cols:
                continue
            if len(cols) != 3:
                raise DataError(
                    f"expected 3 columns 'query-id corpus-id score', found {len(cols)}",
                    file=path,
                    line=lineno,
                )
            try:
                grade = int(cols[2])
            except ValueError:
                if lineno == 1:  # the header
                    continue
                raise DataError(f"score '{cols[2]}' is not an integer", file=path, line=lineno) from None
            if (cols[0], cols[1]) in seen:
                raise DataError(
                    f"duplicate judgement for query '{cols[0]}', document '{cols[1]}'", file=path, line=lineno
                )
            seen.add((cols[0], cols[1]))
            yield lineno, cols[0], cols[1], grade


def qrels_path(data_dir: str | Path, split: str) -> Path:
    """``qrels/<split>.tsv`` of a dataset directory (which may not exist)."""
    if not re.fullmatch(r"\w+", split):
        raise ValueError(f"bad split name {split!r}; use one of {', '.join(SPLITS)}")
    return Path(data_dir) / QRELS_DIR / f"{split}.tsv"


# --------------------------------------------------------------------------------------------
# Loading


def load_corpus(data_dir: str | Path) -> dict[str, dict[str, str]]:
    """Doc id -> {"title", "text"}, in file order, from ``corpus.jsonl``."""
    path = Path(data_dir) / CORPUS
    corpus: dict[str, dict[str, str]] = {}
    for lineno, obj in _read_jsonl(path):
        doc_id = check_id(_string_field(obj, "_id", path, lineno), "document", file=path, line=lineno)
        if doc_id in corpus:
            raise DataError(f"duplicate document id '{doc_id}'", file=path, line=lineno)
        corpus[doc_id] = {
            "title": _string_field(obj, "title", path, lineno, required=False),
            "text": _string_field(obj, "text", path, lineno),
        }
    if not corpus:
        raise DataError("empty corpus: no documents", file=path)
    return corpus


def load_queries(data_dir: str | Path) -> dict[str, str]:
    """Query id -> text, in file order, from ``queries.jsonl``."""
    path = Path(data_dir) / QUERIES
    queries: dict[str, str] = {}
    for lineno, obj in _read_jsonl(path):
        qid = check_id(_string_field(obj, "_id", path, lineno), "query", file=path, line=lineno)
        if qid in queries:
            raise DataError(f"duplicate query id '{qid}'", file=path, line=lineno)
        queries[qid] = _string_field(obj, "text", path, lineno)
    return queries


def load_qrels(data_dir: str | Path, split: str) -> dict[str, dict[str, int]]:
    """Query id -> doc id -> grade for ``split``; {} when the dataset has no such split."""
    path = qrels_path(data_dir, split)
    if not path.is_file():
        return {}
    qrels: dict[str, dict[str, int]] = {}
    for _, qid, doc_id, grade in read_qrels_rows(path):
        qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def split_queries(data_dir: str | Path, split: str) -> dict[str, str]:
    """The queries (id -> text, file order) that have judgements in ``split``."""
    queries = load_queries(data_dir)
    path = qrels_path(data_dir, split)
    if not path.is_file():
        return {}
    wanted: set[str] = set()
    for lineno, qid, _, _ in read_qrels_rows(path):
        if qid not in queries:
            raise DataError(f"query '{qid}' is not in {QUERIES}", file=path, line=lineno)
        wanted.add(qid)
    return {qid: text for qid, text in queries.items() if qid in wanted}


def document_text(doc: dict[str, str]) -> str:
    """The text a model sees for a document: "title. text", or whichever of the two there is."""
    title = (doc.get("title") or "").strip()
    text = (doc.get("text") or "").strip()
    if title and text:
        # Titles that already end a sentence (Cranfield's end in " .") need no extra period.
        return f"{title} {text}" if title[-1] in ".?!" else f"{title}. {text}"
    return title or text


def check_dataset(data_dir: str | Path) -> dict[str, int]:
    """Load and cross-check a dataset directory; return its counts (``<split>_queries`` and
    ``<split>_qrels`` for train and test, 0 when absent, and for dev when it is there).

    Raises DataError for any malformed file, duplicate id, or judgement naming a document or
    query that does not exist.
    """
    data_dir = Path(data_dir)
    corpus = load_corpus(data_dir)
    queries = load_queries(data_dir)
    counts = {"documents": len(corpus), "queries": len(queries)}
    for split in SPLITS:
        path = qrels_path(data_dir, split)
        if split not in COUNTED_SPLITS and not path.is_file():
            continue
        qids: set[str] = set()
        lines = 0
        if path.is_file():
            for lineno, qid, doc_id, _ in read_qrels_rows(path):
                if qid not in queries:
                    raise DataError(f"query '{qid}' is not in {QUERIES}", file=path, line=lineno)
                if doc_id not in corpus:
                    raise DataError(f"document '{doc_id}' is not in {CORPUS}", file=path, line=lineno)
                qids.add(qid)
                lines += 1
        counts[f"{split}_queries"] = len(qids)
        counts[f"{split}_qrels"] = lines
    return counts


# --------------------------------------------------------------------------------------------
# Writing


def write_dataset(data: Dataset, out: str | Path) -> None:
    """Write ``data`` in the canonical layout (no manifest) into the existing folder ``out``."""
    out = Path(out)
    with open(out / CORPUS, "w", encoding="utf-8") as f:
        for doc_id, doc in data.corpus.items():
            check_id(doc_id, "document", file=CORPUS)
            row = {"_id": doc_id, "title": doc.get("title", ""), "text": doc["text"]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out / QUERIES, "w", encoding="utf-8") as f:
        for qid, text in data.queries.items():
            check_id(qid, "query", file=QUERIES)
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    (out / QRELS_DIR).mkdir(exist_ok=True)
    for split, rels in data.qrels.items():
        if split not in SPLITS:  # a reader's bug: check_dataset would not read it back
            raise ValueError(f"unknown split {split!r}; the layout's splits are {SPLITS}")
        if not rels:
            continue
        with open(out / QRELS_DIR / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("\t".join(QRELS_HEADER) + "\n")
            for qid, docs in rels.items():
                for doc_id, grade in docs.items():
                    f.write(f"{qid}\t{doc_id}\t{grade}\n")


# a sentence ends at . ! or ? (and any closing quotes or brackets) before a space and a capital,
# a digit or an opening quote
_SENTENCE_END = re.compile(r"""(?:(?<=[.!?])|(?<=[.!?]["')\]]))\s+(?=["'(\[]?[A-Z0-9])""")


def split_sentences(text: str, min_words: int = 1) -> list[str]:
    """The sentences of ``text``, pieces under ``min_words`` words joined to the next."""
    out, carry = [], ""
    for piece in _SENTENCE_END.split(" ".join(text.split())):
        carry = f"{carry} {piece}".strip()
        if len(carry.split()) >= min_words:
            out.append(carry)
            carry = ""
    if carry:
        if out:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out
