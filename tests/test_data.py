"""Dataset preparation (nci.data): each raw format on tiny samples, splits, errors, the CLI."""

from __future__ import annotations

import csv
import importlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from nci import data
from nci.data import (
    DataError,
    check_dataset,
    document_text,
    load_corpus,
    load_qrels,
    load_queries,
    parse_sentence_list,
    prepare,
    split_group,
    split_queries,
)
from nci.manifest import read_manifest
from nci.settings import get_settings

# ---------------------------------------------------------------------------------------------
# Tiny raw samples


def squad_json(question_counts: dict[str, list[int]]) -> dict:
    """A SQuAD v1.1 file: article title -> number of questions of each paragraph."""
    articles = []
    for title, counts in question_counts.items():
        paragraphs = []
        for p, n in enumerate(counts):
            qas = [
                {"id": f"{title}-{p}-{q}", "question": f"question {q} about {title} {p}?", "answers": []}
                for q in range(n)
            ]
            paragraphs.append({"context": f"Context {p} of {title}.", "qas": qas})
        articles.append({"title": title, "paragraphs": paragraphs})
    return {"version": "1.1", "data": articles}


SQUAD = {"Super_Bowl_50": [5, 2, 1], "Warsaw": [7, 3]}


def write_squad(folder: Path, content: dict | str = None, zipped: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content or squad_json(SQUAD), indent=1)
    if zipped:
        path = folder / "dev-v1.1.json.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("dev-v1.1.json", text)
        return path
    path = folder / "dev-v1.1.json"
    path.write_text(text)
    return path


def csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


# Abstracts as printed by numpy: a bracketed list of string literals without commas, one per line.
ABSTRACT_1 = "['First sentence of one.'\n 'It\\'s the second.'\n \"Third with 'quotes'.\"]"
ABSTRACT_2 = "['Only sentence of two.']"


def write_scifact(
    folder: Path,
    corpus_rows: list[list[str]] | None = None,
    train_qrels: str = "query-id\tcorpus-id\tscore\r\n1\t11\t1\r\n1\t22\t1\r\n3\t33\t1\r\n",
    test_qrels: str = "query-id\tcorpus-id\tscore\r\n5\t22\t1\r\n",
    corpus_text: str | None = None,
) -> Path:
    """A scifact.zip CSV export with BEIR qrels (CRLF, as in the real files) next to it."""
    folder.mkdir(parents=True, exist_ok=True)
    if corpus_rows is None:
        corpus_rows = [
            ["11", "Title one", ABSTRACT_1, "False"],
            ["22", "Title two", ABSTRACT_2, "False"],
            ["33", "Title three", "[]", "False"],
        ]
    claim_cols = ["id", "claim", "evidence_doc_id", "evidence_label", "evidence_sentences", "cited_doc_ids"]
    with zipfile.ZipFile(folder / "scifact.zip", "w") as z:
        z.writestr(
            "corpus_train.csv",
            corpus_text or csv_text(["doc_id", "title", "abstract", "structured"], corpus_rows),
        )
        z.writestr(
            "claims_train.csv",
            csv_text(
                claim_cols,
                [  # claim 1 has two evidence rows: one query
                    ["1", "Claim one.", "11", "SUPPORT", "[0]", "[11, 22]"],
                    ["1", "Claim one.", "22", "SUPPORT", "[1]", "[11, 22]"],
                    ["3", "Claim three.", "", "", "[]", "[33]"],
                ],
            ),
        )
        z.writestr(
            "claims_validation.csv", csv_text(claim_cols, [["5", "Claim five.", "", "", "[]", "[22]"]])
        )
    (folder / "qrels").mkdir(exist_ok=True)
    (folder / "qrels" / "train.tsv").write_bytes(train_qrels.encode())
    (folder / "qrels" / "test.tsv").write_bytes(test_qrels.encode())
    return folder


CRAN_DOCS = [
    ".I 1",
    ".T",
    "experimental investigation of the",
    "aerodynamics of a wing .",
    ".A",
    "brenckman,m.",
    ".B",
    "j. ae. scs. 25, 1958, 324.",
    ".W",
    "experimental investigation .",
    "  an experimental study of a wing",
    "in a slipstream .",
    ".I 2",
    ".T",
    "simple shear flow .",
    ".A",
    ".B",
    ".W",
    ".I 3",
    ".T",
    "boundary layers .",
    ".A",
    "ting-yi li",
    ".B",
    ".W",
    "the boundary layer",
    ".A",  # a stray marker inside the text, as in Cranfield document 240
    "in simple shear flow .",
]
CRAN_QUERIES = [
    ".I 001",
    ".W",
    "what similarity laws",
    "must be obeyed .",
    ".I 004",
    ".W",
    "what is shear flow .",
]
CRAN_QRELS = ["1 1 2 ", "1 3 4", "1 2 -1", "2  2  1", "2 3 -1", "2 1 5"]


def write_cranfield(folder: Path, qrels: list[str] = CRAN_QRELS, docs: list[str] = CRAN_DOCS) -> Path:
    """A Cranfield-style collection with CRLF line endings and non-sequential query numbers."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("cran.all.1400", docs), ("cran.qry", CRAN_QUERIES), ("cranqrel", qrels)):
        (folder / name).write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (folder / "cranqrel.readme").write_text("relevance codes 1-4\n")
    return folder


def read_tsv(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# SQuAD


def test_squad_documents_queries_and_manifest(tmp_path):
    src = write_squad(tmp_path / "raw")
    manifest = prepare("squad", tmp_path / "out", src=src, seed=3)
    out = tmp_path / "out"

    corpus = load_corpus(out)
    assert list(corpus) == ["Super_Bowl_50_0", "Super_Bowl_50_1", "Super_Bowl_50_2", "Warsaw_0", "Warsaw_1"]
    assert corpus["Warsaw_1"] == {"title": "Warsaw", "text": "Context 1 of Warsaw."}
    queries = load_queries(out)
    assert len(queries) == 5 + 2 + 1 + 7 + 3
    assert queries["Warsaw-0-6"] == "question 6 about Warsaw 0?"

    train, test = load_qrels(out, "train"), load_qrels(out, "test")
    assert not set(train) & set(test)
    assert set(train) | set(test) == set(queries)
    for qid in queries:  # each question is relevant to exactly its own paragraph
        title, p, _ = qid.split("-")
        assert (train.get(qid) or test.get(qid)) == {f"{title}_{p}": 1}
    assert read_tsv(out / "qrels" / "test.tsv")[0] == ["query-id", "corpus-id", "score"]

    assert read_manifest(out, stage="data") == manifest
    assert manifest["config"]["seed"] == 3 and manifest["config"]["test_fraction"] == 0.2
    assert manifest["config"]["source"] == str(src)
    assert manifest["counts"] == {
        "documents": 5,
        "queries": 18,
        "train_queries": len(train),
        "train_qrels": len(train),
        "test_queries": len(test),
        "test_qrels": len(test),
    }
    assert manifest["inputs"]["source"]["path"] == str(src)


@pytest.mark.parametrize("form", ["json", "zip", "folder"])
def test_squad_source_forms_give_the_same_dataset(tmp_path, form):
    reference = data.read_squad(write_squad(tmp_path / "plain"))
    path = write_squad(tmp_path / form, zipped=form != "json")
    got = data.read_squad(path.parent if form == "folder" else path)
    assert (got.corpus, got.queries, got.qrels) == (reference.corpus, reference.queries, reference.qrels)


def test_squad_split_partitions_every_paragraph(tmp_path):
    raw = squad_json({"A": [1, 2, 3, 4, 5, 6, 10, 23]})
    got = data.read_squad(write_squad(tmp_path, raw))
    for p, n in enumerate([1, 2, 3, 4, 5, 6, 10, 23]):
        qids = {f"A-{p}-{q}" for q in range(n)}
        train = {q for q in qids if q in got.qrels["train"]}
        test = {q for q in qids if q in got.qrels["test"]}
        assert train | test == qids and not train & test  # none lost, none twice
        assert len(test) == (0 if n == 1 else max(1, round(0.2 * n)))
        if n >= 2:
            assert train and test


def test_squad_split_is_seeded(tmp_path):
    src = write_squad(tmp_path / "raw", squad_json({"A": [20, 20, 20]}))
    first = prepare("squad", tmp_path / "s0", src=src, seed=0)
    again = prepare("squad", tmp_path / "s0b", src=src, seed=0)
    other = prepare("squad", tmp_path / "s1", src=src, seed=1)
    assert first["counts"] == again["counts"] == other["counts"]
    for split in ("train", "test"):
        assert (tmp_path / "s0/qrels" / f"{split}.tsv").read_bytes() == (
            tmp_path / "s0b/qrels" / f"{split}.tsv"
        ).read_bytes()
    assert load_qrels(tmp_path / "s0", "test") != load_qrels(tmp_path / "s1", "test")


def test_split_group_does_not_depend_on_question_order():
    qids = [f"q{i}" for i in range(9)]
    assert split_group("d", qids, 7, 0.2) == split_group("d", qids[::-1], 7, 0.2)
    assert len(split_group("d", qids, 7, 0.5)) == 5  # 4.5 rounds half up


def test_squad_test_fraction(tmp_path):
    src = write_squad(tmp_path / "raw", squad_json({"A": [10]}))
    manifest = prepare("squad", tmp_path / "out", src=src, test_fraction=0.5)
    assert manifest["counts"]["test_queries"] == 5
    with pytest.raises(DataError, match="test-fraction"):
        data.read_squad(src, test_fraction=1.0)


# ---------------------------------------------------------------------------------------------
# SciFact


def test_scifact_csv_export(tmp_path):
    src = write_scifact(tmp_path / "raw")
    manifest = prepare("scifact", tmp_path / "out", src=src)
    out = tmp_path / "out"
    corpus = load_corpus(out)
    assert list(corpus) == ["11", "22", "33"]
    assert corpus["11"] == {
        "title": "Title one",
        "text": "First sentence of one. It's the second. Third with 'quotes'.",
    }
    assert corpus["33"]["text"] == ""
    assert load_queries(out) == {"1": "Claim one.", "3": "Claim three.", "5": "Claim five."}
    assert load_qrels(out, "train") == {"1": {"11": 1, "22": 1}, "3": {"33": 1}}
    assert load_qrels(out, "test") == {"5": {"22": 1}}
    assert split_queries(out, "test") == {"5": "Claim five."}
    assert manifest["counts"]["train_qrels"] == 3 and manifest["counts"]["test_queries"] == 1
    # the zip itself works as --src too
    assert data.read_scifact(src / "scifact.zip").corpus == corpus


def test_scifact_beir_folder(tmp_path, synthetic_data):
    prepare("scifact", tmp_path / "out", src=synthetic_data)
    for split in ("train", "test"):
        assert load_qrels(tmp_path / "out", split) == load_qrels(synthetic_data, split)
    assert load_corpus(tmp_path / "out") == load_corpus(synthetic_data)
    assert load_queries(tmp_path / "out") == load_queries(synthetic_data)


def test_parse_sentence_list_never_evaluates_code():
    assert parse_sentence_list("['a b'\n 'c']") == ["a b", "c"]
    assert parse_sentence_list("['a', 'b']") == ["a", "b"]
    for bad in ["[__import__('os').system('true')]", "['a' + 'b']", "[1]", "['unterminated]"]:
        with pytest.raises(ValueError):
            parse_sentence_list(bad)


# ---------------------------------------------------------------------------------------------
# Glasgow / Cranfield


@pytest.mark.parametrize("name", ["glasgow", "cranfield"])
def test_cranfield(tmp_path, name):
    src = write_cranfield(tmp_path / "raw")
    manifest = prepare(name, tmp_path / "out", src=src)
    out = tmp_path / "out"
    corpus = load_corpus(out)
    assert corpus["1"] == {
        "title": "experimental investigation of the aerodynamics of a wing .",
        "text": "experimental investigation . an experimental study of a wing in a slipstream .",
    }
    assert corpus["2"] == {"title": "simple shear flow .", "text": ""}  # kept, title only
    assert corpus["3"]["text"] == "the boundary layer in simple shear flow ."  # stray '.A' dropped
    assert "\r" not in (out / "corpus.jsonl").read_text()
    # the k-th query is query k, whatever its .I number
    assert load_queries(out) == {"1": "what similarity laws must be obeyed .", "2": "what is shear flow ."}
    # gain = 5 - grade; grade -1 counts as a complete answer
    assert load_qrels(out, "test") == {"1": {"1": 3, "3": 1, "2": 4}, "2": {"2": 4, "3": 4}}
    assert load_qrels(out, "train") == {} and not (out / "qrels" / "train.tsv").exists()
    assert split_queries(out, "train") == {}
    assert manifest["config"]["dataset"] == "glasgow"
    assert manifest["counts"]["qrels_dropped"] == 1 and manifest["counts"]["test_qrels"] == 5  # grade 5
    assert manifest["relevance"]["gain_from_grade"] == {"-1": 4, "1": 4, "2": 3, "3": 2, "4": 1}


def test_source_from_nci_datasets(tmp_path, monkeypatch):
    write_cranfield(tmp_path / "datasets" / "cranfield")
    monkeypatch.setenv("NCI_DATASETS", str(tmp_path / "datasets"))
    monkeypatch.setattr(data.sources, "_download", lambda name: pytest.fail("must not download"))
    get_settings.cache_clear()
    try:
        manifest = prepare("cranfield", tmp_path / "out")
    finally:
        get_settings.cache_clear()
    assert manifest["config"]["source"] == str(tmp_path / "datasets" / "cranfield")


# ---------------------------------------------------------------------------------------------
# Loaders


def test_document_text():
    assert document_text({"title": "Warsaw", "text": "A city."}) == "Warsaw. A city."
    assert document_text({"title": "a wing .", "text": "text"}) == "a wing . text"
    assert document_text({"title": "", "text": "only text"}) == "only text"
    assert document_text({"title": "only title", "text": ""}) == "only title"


def test_loaders_on_synthetic(synthetic_data):
    counts = check_dataset(synthetic_data)
    assert counts["documents"] == len(load_corpus(synthetic_data))
    train = split_queries(synthetic_data, "train")
    assert set(train) == set(load_qrels(synthetic_data, "train"))
    assert counts["train_queries"] == len(train)


def write_beir(
    folder: Path, corpus: str, queries: str = '{"_id": "q1", "text": "x"}\n', qrels: str = ""
) -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(corpus)
    (folder / "queries.jsonl").write_text(queries)
    if qrels:
        (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return folder


DOC = '{"_id": "d1", "title": "", "text": "x"}\n'


@pytest.mark.parametrize(
    "corpus, queries, qrels, file, where, problem",
    [
        (DOC + '{"_id": "d2", "text": "x"\n', None, "", "corpus.jsonl", "line 2", "invalid JSON"),
        (DOC + "\n" + DOC, None, "", "corpus.jsonl", "line 3", "duplicate document id 'd1'"),
        ('{"_id": "d 1", "text": "x"}\n', None, "", "corpus.jsonl", "line 1", "whitespace"),
        ('{"_id": "d1"}\n', None, "", "corpus.jsonl", "line 1", "missing field 'text'"),
        ("\n", None, "", "corpus.jsonl", "", "empty corpus"),
        (
            DOC,
            '{"_id": "q1", "text": "x"}\n{"_id": "q1", "text": "y"}\n',
            "",
            "queries.jsonl",
            "line 2",
            "duplicate",
        ),
        (DOC, None, "q1\td1\t1\nq1\td9\t1\n", "test.tsv", "line 3", "document 'd9' is not in corpus.jsonl"),
        (DOC, None, "q9\td1\t1\n", "test.tsv", "line 2", "query 'q9' is not in queries.jsonl"),
        (DOC, None, "q1\td1\tyes\n", "test.tsv", "line 2", "not an integer"),
        (DOC, None, "q1\td1\n", "test.tsv", "line 2", "expected 3 columns"),
        (DOC, None, "q1\td1\t1\nq1\td1\t2\n", "test.tsv", "line 3", "duplicate judgement"),
    ],
)
def test_bad_prepared_dataset(tmp_path, corpus, queries, qrels, file, where, problem):
    folder = write_beir(tmp_path / "d", corpus, *([queries] if queries else []), qrels=qrels)
    with pytest.raises(DataError) as e:
        check_dataset(folder)
    assert file in str(e.value) and where in str(e.value) and problem in str(e.value)
    assert Path(e.value.file).name == file


def test_missing_prepared_file(tmp_path):
    with pytest.raises(DataError, match=r"corpus\.jsonl: missing"):
        load_corpus(tmp_path)


# ---------------------------------------------------------------------------------------------
# Bad raw input


def bad_squad_titles(tmp_path: Path) -> Path:
    raw = squad_json({"A": [1], "B": [1]})
    raw["data"][1]["title"] = "A"
    return write_squad(tmp_path / "raw", raw)


def bad_squad_context(tmp_path: Path) -> Path:
    raw = squad_json({"A": [1, 2]})
    del raw["data"][0]["paragraphs"][1]["context"]
    return write_squad(tmp_path / "raw", raw)


def bad_scifact_abstract(tmp_path: Path) -> Path:
    rows = [["11", "t", ABSTRACT_1, "False"], ["22", "t", "[__import__('os')]", "False"]]
    return write_scifact(tmp_path / "raw", corpus_rows=rows)


def bad_scifact_csv(tmp_path: Path) -> Path:
    text = "doc_id,title,abstract,structured\n11,t,\"['a']\",False\n22,t,\"['b']\"x,False\n"
    return write_scifact(tmp_path / "raw", corpus_text=text)


def bad_scifact_duplicate(tmp_path: Path) -> Path:
    return write_scifact(tmp_path / "raw", corpus_rows=[["11", "t", "['a']", ""], ["11", "t", "['b']", ""]])


BAD_RAW = [
    # (dataset, make source, file named, line or record named, problem)
    (
        "squad",
        lambda p: write_squad(p / "raw", '{"data": [\n  {"title": "A",\n  "paragraphs": [}\n]}'),
        "dev-v1.1.json",
        "line 3",
        "invalid JSON",
    ),
    (
        "squad",
        bad_squad_titles,
        "dev-v1.1.json",
        "record data[1].paragraphs[0]",
        "duplicate document id 'A_0'",
    ),
    ("squad", bad_squad_context, "dev-v1.1.json", "record data[0].paragraphs[1]", "'context'"),
    ("squad", lambda p: write_squad(p / "raw", squad_json({})), "dev-v1.1.json", "", "empty corpus"),
    ("squad", lambda p: p / "nowhere", "nowhere", "", "missing source"),
    ("scifact", bad_scifact_abstract, "corpus_train.csv", "line 5, record 2", "NAME token"),
    ("scifact", bad_scifact_csv, "corpus_train.csv", "line 3", "malformed CSV"),
    ("scifact", bad_scifact_duplicate, "corpus_train.csv", "line 3, record 2", "duplicate document id '11'"),
    (
        "scifact",
        lambda p: write_scifact(p / "raw", corpus_text="doc_id,title,abstract\n11,t\n"),
        "corpus_train.csv",
        "line 2, record 1",
        "2 fields, the header has 3",
    ),
    (
        "scifact",
        lambda p: write_scifact(p / "raw", corpus_text="doc_id,title,abstract,structured\n"),
        "corpus_train.csv",
        "",
        "empty corpus",
    ),
    (
        "scifact",
        lambda p: write_scifact(p / "raw", test_qrels="query-id\tcorpus-id\tscore\r\n5\t99\t1\r\n"),
        "test.tsv",
        "line 2",
        "document '99' is not in corpus_train.csv",
    ),
    (
        "scifact",
        lambda p: write_scifact(p / "raw", test_qrels="query-id\tcorpus-id\tscore\r\n1\t11\t1\r\n"),
        "test.tsv",
        "line 2",
        "query '1' is a train claim",
    ),
    (
        "scifact",
        lambda p: write_scifact(p / "raw", test_qrels="query-id\tcorpus-id\tscore\r\n7\t11\t1\r\n"),
        "test.tsv",
        "line 2",
        "query '7' is not a claim",
    ),
    (
        "glasgow",
        lambda p: write_cranfield(p / "raw", qrels=["1 1 2", "1 77 1"]),
        "cranqrel",
        "line 2",
        "document '77' is not in cran.all.1400",
    ),
    (
        "glasgow",
        lambda p: write_cranfield(p / "raw", qrels=["1 1 2", "", "3 1 1"]),
        "cranqrel",
        "line 3",
        "query '3' is not in cran.qry",
    ),
    (
        "glasgow",
        lambda p: write_cranfield(p / "raw", qrels=["1 1 x"]),
        "cranqrel",
        "line 1",
        "not an integer",
    ),
    (
        "glasgow",
        lambda p: write_cranfield(p / "raw", docs=CRAN_DOCS + [".I 2", ".W", "again"]),
        "cran.all.1400",
        "line 29",
        "duplicate document id '2'",
    ),
    (
        "glasgow",
        lambda p: write_cranfield(p / "raw", docs=["stray text"] + CRAN_DOCS),
        "cran.all.1400",
        "line 1",
        "text outside a field",
    ),
    ("glasgow", lambda p: write_cranfield(p / "raw", docs=[""]), "cran.all.1400", "", "empty corpus"),
]


@pytest.mark.parametrize("name, make, file, where, problem", BAD_RAW)
def test_bad_raw_input(tmp_path, name, make, file, where, problem):
    src = make(tmp_path)
    with pytest.raises(DataError) as e:
        prepare(name, tmp_path / "out", src=src)
    message = str(e.value)
    assert file in message and where in message and problem in message, message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dirs left


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch):
    src = write_cranfield(tmp_path / "raw")

    def broken(folder):
        assert (Path(folder) / "corpus.jsonl").is_file()  # already partly written
        raise DataError("boom", file=Path(folder) / "corpus.jsonl", line=1)

    # the module, not the function nci.data.prepare that the package re-exports under its name
    monkeypatch.setattr(importlib.import_module("nci.data.prepare"), "check_dataset", broken)
    with pytest.raises(DataError, match="boom"):
        prepare("glasgow", tmp_path / "out", src=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_prepare_and_check(tmp_path, capsys):
    src = write_cranfield(tmp_path / "raw")
    out = tmp_path / "out"
    assert data.main(["prepare", "cranfield", "--out", str(out), "--src", str(src)], prog="nci data") == 0
    assert "3 documents" in capsys.readouterr().out
    assert data.main(["check", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["test_qrels"] == 5

    # an existing output needs --overwrite
    before = (out / "manifest.json").read_text()
    assert data.main(["prepare", "glasgow", "--out", str(out), "--src", str(src)], prog="nci data") == 2
    err = capsys.readouterr().err
    assert err.startswith("nci data: error: ") and "--overwrite" in err and err.count("\n") == 1
    assert (out / "manifest.json").read_text() == before
    args = ["prepare", "glasgow", "--out", str(out), "--src", str(src), "--overwrite"]
    assert data.main(args, prog="nci data") == 0


@pytest.mark.parametrize(
    "args, problem",
    [
        (["prepare", "squad", "--src", "{tmp}/missing.json"], "missing source"),
        (["prepare", "glasgow", "--src", "{tmp}/raw", "--test-fraction", "0.3"], "squad only"),
        (["prepare", "scifact", "--src", "{tmp}/raw"], "scifact.zip"),
    ],
)
def test_cli_errors_are_one_line(tmp_path, capsys, args, problem):
    write_cranfield(tmp_path / "raw")
    argv = [a.format(tmp=tmp_path) for a in args] + ["--out", str(tmp_path / "out")]
    assert data.main(argv, prog="nci data") == 2
    err = capsys.readouterr().err
    assert err.startswith("nci data: error: ") and problem in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_runs_as_python_m(tmp_path):
    src = write_cranfield(tmp_path / "raw")
    argv = ["prepare", "cranfield", "--src", str(src), "--out", str(tmp_path / "out")]
    run = subprocess.run([sys.executable, "-m", "nci.data", *argv], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (
        run.stdout
        == f"{tmp_path / 'out'}: 3 documents, 2 queries (train 0, test 2), qrels lines train 0, test 5\n"
    )


# ---------------------------------------------------------------------------------------------
# The source registry


def test_a_new_source_format_is_one_reader_and_one_registration(tmp_path, monkeypatch):
    def read_toy(src):
        corpus = {"d1": {"title": "Toy", "text": Path(src).read_text()}}
        return data.Dataset(corpus, {"q1": "which toy?"}, {"test": {"q1": {"d1": 1}}}, inputs={"source": src})

    (tmp_path / "toy.txt").write_text("a toy document")
    toy = data.DatasetSource(read_toy, "toy", "https://example.invalid/toy.txt")
    monkeypatch.setitem(data.DATASET_SOURCES, "toy", toy)
    out = tmp_path / "out"
    assert data.main(["prepare", "toy", "--src", str(tmp_path / "toy.txt"), "--out", str(out)]) == 0
    assert load_corpus(out) == {"d1": {"title": "Toy", "text": "a toy document"}}
    assert split_queries(out, "test") == {"q1": "which toy?"}
    assert read_manifest(out, stage="data")["config"] == {
        "dataset": "toy",
        "source": str(tmp_path / "toy.txt"),
        "seed": 0,
        "test_fraction": None,
    }
    with pytest.raises(DataError, match="applies to squad only; toy has a fixed split"):
        prepare("toy", tmp_path / "again", src=tmp_path / "toy.txt", test_fraction=0.5)


# ---------------------------------------------------------------------------------------------
# Real datasets

EXPECTED = {
    "squad": {"documents": 2067, "queries": 10570},
    "scifact": {
        "documents": 5183,
        "queries": 1109,
        "train_queries": 809,
        "train_qrels": 919,
        "test_queries": 300,
        "test_qrels": 339,
    },
    "glasgow": {"documents": 1400, "queries": 225, "train_queries": 0, "train_qrels": 0, "test_queries": 225},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXPECTED))
def test_real_datasets(tmp_path, name):
    if not os.environ.get("NCI_DATASETS"):
        pytest.skip("set NCI_DATASETS to the folder holding squad-v1.1-dev/, scifact/ and cranfield/")
    get_settings.cache_clear()
    manifest = prepare(name, tmp_path / name)
    counts = manifest["counts"]
    assert {k: counts[k] for k in EXPECTED[name]} == EXPECTED[name]
    assert counts == {**counts, **check_dataset(tmp_path / name)}
    if name == "squad":
        assert counts["train_queries"] + counts["test_queries"] == 10570
        assert (
            counts["train_qrels"] == counts["train_queries"] and 0.18 < counts["test_queries"] / 10570 < 0.25
        )
    if name == "glasgow":
        # every row is kept; grade -1 (one per query) counts as a complete answer
        assert counts["qrels_dropped"] == 0 and counts["test_qrels"] == 1837
