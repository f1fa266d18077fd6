"""Dataset preparation: raw collections into one canonical layout, and the loaders for it.

The canonical layout is BEIR's, plus a manifest::

    corpus.jsonl        {"_id", "title", "text"} per line, in corpus order
    queries.jsonl       {"_id", "text"} per line
    qrels/train.tsv     "query-id  corpus-id  score" (tab separated, with that header); absent
    qrels/test.tsv      when a dataset has no such split (Cranfield has no train split)
    manifest.json       stage "data": config (dataset, source, seed, ...), counts, input hashes

``nci data prepare NAME --out DIR`` writes it for:

- ``squad``: SQuAD v1.1 as passage retrieval. One document per paragraph (id
  ``<title>_<paragraph index>``); each question is relevant to its own paragraph. Questions are
  split into train/test per paragraph with a seeded rule (see :func:`split_group`).
- ``scifact``: the CSV export of allenai/scifact (``scifact.zip``) with the BEIR qrels files next
  to it, or a folder already in the BEIR layout (BEIR's own ``scifact.zip``, extracted).
  Train queries are the train claims, test queries the validation claims, as in BEIR.
- ``glasgow`` (alias ``cranfield``): the ``.I/.T/.A/.B/.W`` format of the Glasgow IR test
  collections. Cranfield grades run from 1 (complete answer) to 4 (minimum interest); they are
  stored as gains ``5 - grade`` so that higher is better. Each query also has one row of grade
  -1, which marks the most relevant document of all (see ``GLASGOW_GAIN``); it counts as a
  complete answer, gain 4. Every query goes to the test split.

Bad input raises :class:`DataError`, naming the file, the line or record, and the problem.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import io
import json
import logging
import math
import re
import shutil
import sys
import tarfile
import tempfile
import time
import tokenize
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nci.manifest import ArtifactError, atomic_output_dir, read_manifest, write_manifest
from nci.settings import get_settings

log = logging.getLogger("nci.data")  # not "__main__" under python -m

CORPUS = "corpus.jsonl"
QUERIES = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")
SPLITS = ("train", "test")
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Source:
    folder: str  # folder name under $NCI_DATASETS (and under the download cache)
    url: str  # public location, used when no local copy is found


SOURCES: dict[str, Source] = {
    "squad": Source("squad-v1.1-dev", "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"),
    "scifact": Source(
        "scifact", "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip"
    ),
    "glasgow": Source("cranfield", "http://ir.dcs.gla.ac.uk/resources/test_collections/cran/cran.tar.gz"),
}
ALIASES = {"cranfield": "glasgow"}

# Cranfield relevance codes (Cleverdon): 1 = complete answer ... 4 = minimum interest,
# 5 = no interest (never present, dropped). Gains make higher = better. The readme is silent on
# -1, which marks exactly one document per query; BM25 and dense search rank that document
# higher than any graded one (median rank 2 and 4, against 9 and 10 for grade 1), as one would
# expect of the paper each question was written from. It counts as a complete answer.
GLASGOW_GAIN = {-1: 4, 1: 4, 2: 3, 3: 2, 4: 1}


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


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str  # canonical name: squad, scifact or glasgow
    source: str  # the file or folder read
    seed: int = 0  # squad split seed
    test_fraction: float | None = None  # squad only: share of each paragraph's questions in test


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
# Loading the canonical layout


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


def _check_id(value: str, kind: str, *, file: Path | str, line: int | None = None, record: Any = None) -> str:
    # Ids end up in TSV qrels and TREC run files, which split on whitespace.
    if not value or any(c.isspace() for c in value):
        raise DataError(
            f"{kind} id {value!r} is empty or contains whitespace; ids must be single tokens",
            file=file,
            line=line,
            record=record,
        )
    return value


def load_corpus(data_dir: str | Path) -> dict[str, dict[str, str]]:
    """Doc id -> {"title", "text"}, in file order, from ``corpus.jsonl``."""
    path = Path(data_dir) / CORPUS
    corpus: dict[str, dict[str, str]] = {}
    for lineno, obj in _read_jsonl(path):
        doc_id = _check_id(_string_field(obj, "_id", path, lineno), "document", file=path, line=lineno)
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
        qid = _check_id(_string_field(obj, "_id", path, lineno), "query", file=path, line=lineno)
        if qid in queries:
            raise DataError(f"duplicate query id '{qid}'", file=path, line=lineno)
        queries[qid] = _string_field(obj, "text", path, lineno)
    return queries


def _read_qrels_rows(path: Path) -> Iterator[tuple[int, str, str, int]]:
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


def _qrels_path(data_dir: str | Path, split: str) -> Path:
    if not re.fullmatch(r"\w+", split):
        raise ValueError(f"bad split name {split!r}; use 'train' or 'test'")
    return Path(data_dir) / QRELS_DIR / f"{split}.tsv"


def load_qrels(data_dir: str | Path, split: str) -> dict[str, dict[str, int]]:
    """Query id -> doc id -> grade for ``split``; {} when the dataset has no such split."""
    path = _qrels_path(data_dir, split)
    if not path.is_file():
        return {}
    qrels: dict[str, dict[str, int]] = {}
    for _, qid, doc_id, grade in _read_qrels_rows(path):
        qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def split_queries(data_dir: str | Path, split: str) -> dict[str, str]:
    """The queries (id -> text, file order) that have judgements in ``split``."""
    queries = load_queries(data_dir)
    path = _qrels_path(data_dir, split)
    if not path.is_file():
        return {}
    wanted: set[str] = set()
    for lineno, qid, _, _ in _read_qrels_rows(path):
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
    """Load and cross-check a dataset directory; return its counts.

    Raises DataError for any malformed file, duplicate id, or judgement naming a document or
    query that does not exist.
    """
    data_dir = Path(data_dir)
    corpus = load_corpus(data_dir)
    queries = load_queries(data_dir)
    counts = {"documents": len(corpus), "queries": len(queries)}
    for split in SPLITS:
        path = _qrels_path(data_dir, split)
        qids: set[str] = set()
        lines = 0
        if path.is_file():
            for lineno, qid, doc_id, _ in _read_qrels_rows(path):
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
            _check_id(doc_id, "document", file=CORPUS)
            row = {"_id": doc_id, "title": doc.get("title", ""), "text": doc["text"]}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(out / QUERIES, "w", encoding="utf-8") as f:
        for qid, text in data.queries.items():
            _check_id(qid, "query", file=QUERIES)
            f.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    (out / QRELS_DIR).mkdir(exist_ok=True)
    for split, rels in data.qrels.items():
        if not rels:
            continue
        with open(out / QRELS_DIR / f"{split}.tsv", "w", encoding="utf-8") as f:
            f.write("\t".join(QRELS_HEADER) + "\n")
            for qid, docs in rels.items():
                for doc_id, grade in docs.items():
                    f.write(f"{qid}\t{doc_id}\t{grade}\n")


# --------------------------------------------------------------------------------------------
# SQuAD


def split_group(doc_id: str, query_ids: list[str], seed: int, test_fraction: float) -> set[str]:
    """The test queries of one paragraph's questions.

    Questions are shuffled by sorting on sha256("<seed>/<doc id>/<query id>"), a permutation
    seeded by (seed, doc id) that never changes across Python or NumPy versions, and the first
    round(test_fraction * n) go to test (rounding half up). A group of two or more questions
    always keeps at least one question on each side.
    """
    n = len(query_ids)
    n_test = math.floor(test_fraction * n + 0.5)
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    order = sorted(query_ids, key=lambda q: hashlib.sha256(f"{seed}/{doc_id}/{q}".encode()).hexdigest())
    return set(order[:n_test])


def _squad_json_source(src: Path) -> tuple[Path, str | None]:
    """(file, zip member or None) holding the SQuAD JSON in ``src`` (folder, .zip or .json)."""
    if src.is_dir():
        found = sorted(p for p in src.iterdir() if p.suffix in {".json", ".zip"} and p.is_file())
        if len(found) != 1:
            raise DataError(
                f"expected exactly one .json or .zip file, found {[p.name for p in found]}; "
                "pass the file itself with --src",
                file=src,
            )
        src = found[0]
    if not src.is_file():
        raise DataError("missing source: no such file or folder", file=src)
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as z:
            members = [n for n in z.namelist() if n.endswith(".json") and not n.startswith("__MACOSX")]
        if len(members) != 1:
            raise DataError(f"expected exactly one .json file inside the zip, found {members}", file=src)
        return src, members[0]
    return src, None


def read_squad(src: str | Path, seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION) -> Dataset:
    """SQuAD v1.x JSON as passage retrieval with a seeded per-paragraph train/test split."""
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    file, member = _squad_json_source(Path(src))
    name = f"{file} ({member})" if member else str(file)
    try:
        if member:
            with zipfile.ZipFile(file) as z:
                raw = z.read(member)
        else:
            raw = file.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON at column {e.colno}: {e.msg}", file=name, line=e.lineno) from e
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=name) from e

    def need(obj: Any, key: str, kind: type, where: str) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind):
            raise DataError(
                f"missing or bad field '{key}' (expected {kind.__name__})", file=name, record=where
            )
        return value

    corpus: dict[str, dict[str, str]] = {}
    queries: dict[str, str] = {}
    groups: dict[str, list[str]] = {}
    for a, article in enumerate(tqdm(need(data, "data", list, "top level"), desc="squad", disable=None)):
        title = need(article, "title", str, f"data[{a}]")
        for p, paragraph in enumerate(need(article, "paragraphs", list, f"data[{a}]")):
            where = f"data[{a}].paragraphs[{p}]"
            doc_id = _check_id(f"{title}_{p}", "document", file=name, record=where)
            if doc_id in corpus:
                raise DataError(
                    f"duplicate document id '{doc_id}' (two articles titled '{title}'?)",
                    file=name,
                    record=where,
                )
            corpus[doc_id] = {"title": title, "text": need(paragraph, "context", str, where)}
            groups[doc_id] = []
            for q, qa in enumerate(need(paragraph, "qas", list, where)):
                qwhere = f"{where}.qas[{q}]"
                qid = _check_id(need(qa, "id", str, qwhere), "query", file=name, record=qwhere)
                if qid in queries:
                    raise DataError(f"duplicate question id '{qid}'", file=name, record=qwhere)
                text = need(qa, "question", str, qwhere).strip()
                if not text:
                    raise DataError("empty question", file=name, record=qwhere)
                queries[qid] = text
                groups[doc_id].append(qid)
    if not corpus:
        raise DataError("empty corpus: no paragraphs", file=name)

    test: set[str] = set()
    for doc_id, qids in groups.items():
        test |= split_group(doc_id, qids, seed, test_fraction)
    qrels: dict[str, dict[str, dict[str, int]]] = {"train": {}, "test": {}}
    for doc_id, qids in groups.items():  # file order
        for qid in qids:
            qrels["test" if qid in test else "train"][qid] = {doc_id: 1}
    return Dataset(
        corpus,
        queries,
        qrels,
        inputs={"source": file},
        notes={
            "split_rule": (
                "per paragraph: questions sorted by sha256('<seed>/<doc id>/<question id>'); the first "
                "round(test_fraction * n) go to test, at least one each side when n >= 2"
            )
        },
    )


# --------------------------------------------------------------------------------------------
# SciFact


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


def _find_beir(folder: Path) -> Path | None:
    """``folder`` or its single subfolder holding a BEIR ``corpus.jsonl`` (as BEIR zips extract)."""
    if (folder / CORPUS).is_file():
        return folder
    found = [p for p in folder.iterdir() if p.is_dir() and (p / CORPUS).is_file()]
    return found[0] if len(found) == 1 else None


def read_beir(folder: str | Path) -> Dataset:
    """A folder already in the BEIR layout, checked."""
    folder = Path(folder)
    check_dataset(folder)
    qrels = {s: load_qrels(folder, s) for s in SPLITS}
    inputs = {name: folder / name for name in (CORPUS, QUERIES)}
    inputs |= {f"qrels_{s}": _qrels_path(folder, s) for s in SPLITS if qrels[s]}
    return Dataset(load_corpus(folder), load_queries(folder), qrels, inputs=inputs)


def read_scifact(src: str | Path) -> Dataset:
    """SciFact from its CSV export (``scifact.zip`` with ``qrels/`` beside it) or a BEIR folder."""
    src = Path(src)
    if not src.exists():
        raise DataError("missing source: no such file or folder", file=src)
    if src.is_dir():
        beir = _find_beir(src)
        if beir is not None:
            return read_beir(beir)
        src = src / "scifact.zip"
        if not src.is_file():
            raise DataError(
                "missing source: neither a BEIR folder (corpus.jsonl) nor scifact.zip here", file=src.parent
            )
    if not zipfile.is_zipfile(src):
        raise DataError("not a zip file", file=src)
    with zipfile.ZipFile(src) as z:
        names = z.namelist()
        if "corpus_train.csv" not in names and any(n.endswith(CORPUS) for n in names):
            with tempfile.TemporaryDirectory() as tmp:  # BEIR's own zip
                z.extractall(tmp)
                beir = _find_beir(Path(tmp))
                if beir is None:
                    raise DataError("zip holds no BEIR folder with corpus.jsonl", file=src)
                data = read_beir(beir)
                data.inputs = {"source": src}
                return data
        corpus: dict[str, dict[str, str]] = {}
        name = f"{src} (corpus_train.csv)"
        for record, line, row in tqdm(
            _csv_rows(z, "corpus_train.csv", str(src), ("doc_id", "title", "abstract")),
            desc="scifact corpus",
            disable=None,
        ):
            doc_id = _check_id(row["doc_id"].strip(), "document", file=name, line=line, record=record)
            if doc_id in corpus:
                raise DataError(f"duplicate document id '{doc_id}'", file=name, line=line, record=record)
            try:
                sentences = parse_sentence_list(row["abstract"])
            except ValueError as e:
                raise DataError(f"field 'abstract': {e}", file=name, line=line, record=record) from None
            corpus[doc_id] = {"title": row["title"].strip(), "text": " ".join(s.strip() for s in sentences)}
        if not corpus:
            raise DataError("empty corpus: no documents", file=name)

        queries: dict[str, str] = {}
        split_of: dict[str, str] = {}
        for split, member in (("train", "claims_train.csv"), ("test", "claims_validation.csv")):
            mname = f"{src} ({member})"
            # One row per evidence entry: a claim repeats once per cited document.
            for record, line, row in _csv_rows(z, member, str(src), ("id", "claim")):
                qid = _check_id(row["id"].strip(), "query", file=mname, line=line, record=record)
                text = row["claim"].strip()
                if qid in queries and (queries[qid] != text or split_of[qid] != split):
                    raise DataError(
                        f"claim id '{qid}' appears again with a different claim or split",
                        file=mname,
                        line=line,
                        record=record,
                    )
                queries[qid], split_of[qid] = text, split

    qrels: dict[str, dict[str, dict[str, int]]] = {}
    inputs: dict[str, Path] = {"source": src}
    for split in SPLITS:
        path = src.parent / QRELS_DIR / f"{split}.tsv"
        if not path.is_file():
            raise DataError(
                f"missing BEIR qrels file; SciFact's {split} judgements are read from it", file=path
            )
        inputs[f"qrels_{split}"] = path
        rels: dict[str, dict[str, int]] = {}
        for lineno, qid, doc_id, grade in _read_qrels_rows(path):
            if split_of.get(qid) != split:
                found = f"a {split_of[qid]} claim" if qid in split_of else "not a claim in the zip"
                raise DataError(f"query '{qid}' is {found}, expected a {split} claim", file=path, line=lineno)
            if doc_id not in corpus:
                raise DataError(f"document '{doc_id}' is not in corpus_train.csv", file=path, line=lineno)
            rels.setdefault(qid, {})[doc_id] = grade
        qrels[split] = rels
    without = [q for q in queries if not any(q in r for r in qrels.values())]
    if without:
        log.warning("%d claims have no judgements (kept in queries.jsonl): %s", len(without), without[:5])
    return Dataset(corpus, queries, qrels, inputs=inputs)


# --------------------------------------------------------------------------------------------
# Glasgow test collections (Cranfield)

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

    corpus: dict[str, dict[str, str]] = {}
    for rid, line, f in parse_glasgow(docs_path):
        doc_id = _check_id(_numeric_id(rid), "document", file=docs_path, line=line)
        if doc_id in corpus:
            raise DataError(f"duplicate document id '{doc_id}'", file=docs_path, line=line)
        corpus[doc_id] = {"title": f.get("T", ""), "text": f.get("W", "")}
        if not corpus[doc_id]["title"] and not corpus[doc_id]["text"]:
            log.warning("%s:%d: document %s has neither title nor text", docs_path, line, doc_id)
    if not corpus:
        raise DataError("empty corpus: no '.I' records", file=docs_path)

    # The qrels number queries 1..n in file order; the .I numbers in cran.qry skip values.
    queries: dict[str, str] = {}
    for k, (_, line, f) in enumerate(parse_glasgow(qry_path), 1):
        if not f.get("W"):
            raise DataError(f"query {k} has no '.W' text", file=qry_path, line=line)
        queries[str(k)] = f["W"]

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
    test = {q: test[q] for q in queries if q in test}
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


# --------------------------------------------------------------------------------------------
# Sources and preparation


def canonical_name(name: str) -> str:
    name = ALIASES.get(name.lower(), name.lower())
    if name not in SOURCES:
        raise DataError(f"unknown dataset '{name}'; choose one of {sorted([*SOURCES, *ALIASES])}")
    return name


def _download(name: str) -> Path:
    """Fetch a dataset's public copy into the cache (once) and return the folder."""
    source = SOURCES[name]
    dest = get_settings().home / "datasets" / source.folder
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    log.info("downloading %s from %s", name, source.url)
    with atomic_output_dir(dest, overwrite=True) as tmp:
        file = tmp / source.url.rsplit("/", 1)[1]
        try:
            with urllib.request.urlopen(source.url, timeout=60) as r, open(file, "wb") as f:
                shutil.copyfileobj(r, f)
        except (urllib.error.URLError, OSError) as e:
            raise DataError(
                f"could not download {source.url} ({e}); without network, pass --src PATH or set "
                f"NCI_DATASETS to a folder holding '{source.folder}/'"
            ) from e
        if file.name.endswith(".tar.gz"):
            with tarfile.open(file) as t:
                t.extractall(tmp, filter="data")
            file.unlink()
        elif file.suffix == ".zip":
            with zipfile.ZipFile(file) as z:
                z.extractall(tmp)
            file.unlink()
    return dest


def resolve_source(name: str, src: str | Path | None = None) -> Path:
    """``src`` if given, else ``$NCI_DATASETS/<folder>``, else a cached or fresh download."""
    name = canonical_name(name)
    if src is not None:
        return Path(src).expanduser()
    datasets = get_settings().datasets
    if datasets is not None and (Path(datasets) / SOURCES[name].folder).exists():
        return Path(datasets) / SOURCES[name].folder
    return _download(name)


def read_dataset(name: str, src: str | Path, seed: int = 0, test_fraction: float | None = None) -> Dataset:
    """Parse a raw dataset into memory (nothing written)."""
    name = canonical_name(name)
    if name != "squad" and test_fraction is not None:
        raise DataError(f"--test-fraction applies to squad only; {name} has a fixed split")
    if name == "squad":
        return read_squad(src, seed, DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction)
    if name == "scifact":
        return read_scifact(src)
    return read_glasgow(src)


def prepare(
    name: str,
    out: str | Path,
    *,
    src: str | Path | None = None,
    seed: int = 0,
    test_fraction: float | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Prepare dataset ``name`` into ``out`` (canonical layout + manifest); return the manifest."""
    name = canonical_name(name)
    if name == "squad" and test_fraction is None:
        test_fraction = DEFAULT_TEST_FRACTION
    start = time.perf_counter()
    source = resolve_source(name, src)
    data = read_dataset(name, source, seed, test_fraction)
    config = PrepareConfig(dataset=name, source=str(source), seed=seed, test_fraction=test_fraction)
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        write_dataset(data, tmp)
        counts = check_dataset(tmp)  # what is written must load back
        counts |= data.counts
        manifest = write_manifest(
            tmp,
            stage="data",
            config=config,
            inputs=data.inputs,
            counts=counts,
            wall_seconds=time.perf_counter() - start,
            extra={"format": "beir", **data.notes},
        )
    return manifest


# --------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser(
        "prepare",
        help="prepare a raw dataset in the BEIR layout",
        description="Parse a raw dataset and write corpus.jsonl, queries.jsonl, qrels/ and manifest.json.",
    )
    p.add_argument("name", choices=sorted([*SOURCES, *ALIASES]), help="dataset (cranfield = glasgow)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument(
        "--src",
        type=Path,
        help="raw dataset file or folder (default: $NCI_DATASETS/<folder>, else download into the cache)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the squad train/test split (default 0)")
    p.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help=f"squad: share of each paragraph's questions put in test (default {DEFAULT_TEST_FRACTION})",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    c = sub.add_parser("check", help="validate a prepared dataset directory and print its counts")
    c.add_argument("dir", type=Path, help="a directory written by `prepare`")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "nci data", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if args.action == "prepare":
            manifest = prepare(
                args.name,
                args.out,
                src=args.src,
                seed=args.seed,
                test_fraction=args.test_fraction,
                overwrite=args.overwrite,
            )
            n = manifest["counts"]
            print(
                f"{args.out}: {n['documents']} documents, {n['queries']} queries "
                f"(train {n['train_queries']}, test {n['test_queries']}), "
                f"qrels lines train {n['train_qrels']}, test {n['test_qrels']}"
            )
        else:
            read_manifest(args.dir, stage="data")
            print(json.dumps(check_dataset(args.dir)))
    except (DataError, ArtifactError, OSError) as e:  # OSError: --out exists, unreadable files
        message = " ".join(str(e).split()) or type(e).__name__
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from nci.cli import setup_logging

    setup_logging()
    sys.exit(main())
