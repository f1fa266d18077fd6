"""SQuAD v1.1 as passage retrieval: one document per paragraph, a seeded per-paragraph split.

Document ids are ``<title>_<paragraph index>``; each question is relevant to its own paragraph.
The JSON may be given as a file, a zip holding it, or a folder holding one of the two.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path
from typing import Any

from tqdm import tqdm

from nci.data.layout import DataError, Dataset, check_id

DEFAULT_TEST_FRACTION = 0.2


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


def _load_json(file: Path, member: str | None, name: str) -> Any:
    """The parsed JSON of ``file`` (or of its zip ``member``); ``name`` is how errors cite it."""
    try:
        if member:
            with zipfile.ZipFile(file) as z:
                raw = z.read(member)
        else:
            raw = file.read_bytes()
        return json.loads(raw.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON at column {e.colno}: {e.msg}", file=name, line=e.lineno) from e
    except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8 text ({e.reason} at byte {e.start})", file=name) from e


def _paragraphs(
    data: Any, name: str
) -> tuple[dict[str, dict[str, str]], dict[str, str], dict[str, list[str]]]:
    """(corpus, queries, doc id -> its question ids) of a parsed SQuAD file, checked."""

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
            doc_id = check_id(f"{title}_{p}", "document", file=name, record=where)
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
                qid = check_id(need(qa, "id", str, qwhere), "query", file=name, record=qwhere)
                if qid in queries:
                    raise DataError(f"duplicate question id '{qid}'", file=name, record=qwhere)
                text = need(qa, "question", str, qwhere).strip()
                if not text:
                    raise DataError("empty question", file=name, record=qwhere)
                queries[qid] = text
                groups[doc_id].append(qid)
    if not corpus:
        raise DataError("empty corpus: no paragraphs", file=name)
    return corpus, queries, groups


def read_squad(src: str | Path, seed: int = 0, test_fraction: float = DEFAULT_TEST_FRACTION) -> Dataset:
    """SQuAD v1.x JSON as passage retrieval with a seeded per-paragraph train/test split."""
    if not 0 < test_fraction < 1:
        raise DataError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    file, member = _squad_json_source(Path(src))
    name = f"{file} ({member})" if member else str(file)
    corpus, queries, groups = _paragraphs(_load_json(file, member, name), name)

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
