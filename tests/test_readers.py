"""The source-format readers (beir, jsonl, trec, tsv, glasgow) on files each test writes itself:
the happy path field by field, and malformed input naming its file and line."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest

from nci import data
from nci.data import DataError, check_dataset, load_corpus, load_qrels, load_queries, prepare, split_queries
from nci.manifest import read_manifest
from nci.settings import get_settings


def write(path: Path, text: str | list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if isinstance(text, str) else "\n".join(text) + "\n")
    return path


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def raises(name: str, src: Path, out: Path, *parts: str) -> str:
    """Prepare ``src`` as ``name``, expect a DataError whose message holds every part, and
    check nothing is left behind; return the message."""
    with pytest.raises(DataError) as e:
        prepare(name, out, src=src)
    message = str(e.value)
    for part in parts:
        assert part in message, message
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]  # no temp dirs
    return message


# ---------------------------------------------------------------------------------------------
# beir

CORPUS = [
    {"_id": "d1", "title": "First", "text": "one text"},
    {"_id": 2, "title": "Second", "text": "two text", "metadata": {}},  # numeric id, extra field
    {"_id": "d3", "text": "three text"},  # no title
]
QUERIES = [
    {"_id": "q1", "text": "first query"},
    {"_id": "q2", "text": "second query"},
    {"_id": "q3", "text": "x"},
]
QRELS = {
    "train": "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t2\t2\n",
    "dev": "query-id\tcorpus-id\tscore\nq2\td3\t1\n",
    "test": "query-id\tcorpus-id\tscore\nq3\td1\t1\nq3\td3\t0\n",
}


def write_beir_folder(folder: Path, *, corpus: str | None = None, qrels: dict[str, str] = QRELS) -> Path:
    write(folder / "corpus.jsonl", jsonl(CORPUS) if corpus is None else corpus)
    write(folder / "queries.jsonl", jsonl(QUERIES))
    for split, text in qrels.items():
        write(folder / "qrels" / f"{split}.tsv", text)
    return folder


def test_beir_folder_keeps_the_dev_split(tmp_path, capsys):
    src = write_beir_folder(tmp_path / "mini")
    out = tmp_path / "out"
    assert data.main(["prepare", "beir", "--src", str(src), "--out", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"{out}: 3 documents, 3 queries (train 1, dev 1, test 1), qrels lines train 2, dev 1, test 2\n"
    )
    assert load_corpus(out) == {
        "d1": {"title": "First", "text": "one text"},
        "2": {"title": "Second", "text": "two text"},
        "d3": {"title": "", "text": "three text"},
    }
    assert load_queries(out) == {"q1": "first query", "q2": "second query", "q3": "x"}
    assert load_qrels(out, "train") == {"q1": {"d1": 1, "2": 2}}
    assert load_qrels(out, "dev") == {"q2": {"d3": 1}}
    assert load_qrels(out, "test") == {"q3": {"d1": 1, "d3": 0}}  # a judged non-relevant row is kept
    assert split_queries(out, "dev") == {"q2": "second query"}
    manifest = read_manifest(out, stage="data")
    assert manifest["config"]["dataset"] == "beir"
    assert manifest["counts"]["dev_qrels"] == 1 and check_dataset(out)["dev_queries"] == 1
    assert set(manifest["inputs"]) == {"corpus", "queries", "qrels_train", "qrels_dev", "qrels_test"}


def test_beir_zip_with_one_top_folder(tmp_path):
    folder = write_beir_folder(tmp_path / "raw" / "mini")
    zipped = tmp_path / "mini.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        for p in sorted(folder.rglob("*")):
            z.write(p, p.relative_to(folder.parent).as_posix())
    from_zip, from_folder = data.read_beir(zipped), data.read_beir(folder)
    assert (from_zip.corpus, from_zip.queries, from_zip.qrels) == (
        from_folder.corpus,
        from_folder.queries,
        from_folder.qrels,
    )
    assert from_zip.inputs == {"source": zipped}
    # errors name the member inside the zip
    with zipfile.ZipFile(zipped, "a") as z:
        z.writestr("mini/qrels/validation.tsv", "q1\td9\t1\n")  # validation = dev: a second dev file
    with pytest.raises(DataError, match=r"mini\.zip \(mini/qrels/validation\.tsv\).*second dev qrels file"):
        data.read_beir(zipped)


def test_scifact_name_still_reads_a_beir_folder(tmp_path):
    src = write_beir_folder(tmp_path / "raw", qrels={"train": QRELS["train"], "test": QRELS["test"]})
    manifest = prepare("scifact", tmp_path / "out", src=src)
    assert manifest["counts"]["train_qrels"] == 2 and "dev_qrels" not in manifest["counts"]


BEIR_BAD = [
    # (what to break, file named, line named, problem)
    ("corpus_json", "corpus.jsonl", "line 2", "invalid JSON"),
    ("corpus_text", "corpus.jsonl", "line 2", "missing field 'text'"),
    ("corpus_id", "corpus.jsonl", "line 2", "missing field '_id'"),
    ("corpus_empty", "corpus.jsonl", "", "empty corpus"),
    ("qrels_doc", "test.tsv", "line 3", "document 'd9' is not in"),
    ("qrels_query", "test.tsv", "line 2", "query 'q9' is not in"),
    ("qrels_columns", "test.tsv", "line 3", "expected 3 columns, as on line 2, found 2"),
    ("qrels_empty", "test.tsv", "", "no judgements"),
    ("qrels_name", "qrels/other.tsv", "", "not a qrels split"),
    ("no_queries", "corpus.jsonl", "", "missing queries.jsonl"),
]


@pytest.mark.parametrize("broken, file, where, problem", BEIR_BAD)
def test_beir_bad_input(tmp_path, broken, file, where, problem):
    rows = [json.dumps(r) for r in CORPUS]
    corpus = {
        "corpus_json": [rows[0], '{"_id": "d2", "text": "x"', rows[2]],
        "corpus_text": [rows[0], '{"_id": "d2", "title": "t"}', rows[2]],
        "corpus_id": [rows[0], '{"title": "t", "text": "x"}', rows[2]],
        "corpus_empty": ["", ""],
    }.get(broken)
    qrels = dict(QRELS)
    qrels["test"] = {
        "qrels_doc": "query-id\tcorpus-id\tscore\nq3\td1\t1\nq3\td9\t1\n",
        "qrels_query": "query-id\tcorpus-id\tscore\nq9\td1\t1\n",
        "qrels_columns": "query-id\tcorpus-id\tscore\nq3\td1\t1\nq3\td3\n",
        "qrels_empty": "",
    }.get(broken, QRELS["test"])
    if broken == "qrels_name":
        qrels["other"] = "q1\td1\t1\n"
    src = write_beir_folder(
        tmp_path / "raw", corpus="\n".join(corpus) + "\n" if corpus else None, qrels=qrels
    )
    if broken == "no_queries":
        (src / "queries.jsonl").unlink()
    raises("beir", src, tmp_path / "out", file, where, problem)


def test_formats_need_a_source(tmp_path):
    for name in ("beir", "jsonl", "trec", "tsv"):
        assert name in data.sources.dataset_names()
        raises(name, None, tmp_path / "out", f"{name} is a format", "--src")


# ---------------------------------------------------------------------------------------------
# jsonl


def test_jsonl_corpus_alone(tmp_path, capsys):
    src = write(
        tmp_path / "docs.jsonl", jsonl([{"id": "a", "text": "alpha"}, {"id": 7, "contents": "seven"}])
    )
    out = tmp_path / "out"
    assert data.main(["prepare", "jsonl", "--src", str(src), "--out", str(out)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"{out}: 2 documents, 0 queries (train 0, test 0), qrels lines train 0, test 0")
    assert "no judged queries" in line
    assert load_corpus(out) == {"a": {"title": "", "text": "alpha"}, "7": {"title": "", "text": "seven"}}
    assert load_queries(out) == {} and not list((out / "qrels").iterdir())
    assert check_dataset(out) == {
        "documents": 2,
        "queries": 0,
        "train_queries": 0,
        "train_qrels": 0,
        "test_queries": 0,
        "test_qrels": 0,
    }
    assert data.main(["check", str(out)]) == 0


def test_jsonl_folder_with_test_queries_only(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    with gzip.open(src / "corpus.jsonl.gz", "wt") as f:  # gzip works too
        f.write(jsonl([{"_id": "a", "title": "A", "text": "alpha"}, {"_id": "b", "text": "beta"}]))
    write(src / "queries.jsonl", jsonl([{"id": "1", "text": "which one?"}, {"id": "2", "text": "unjudged"}]))
    write(src / "qrels" / "test.tsv", ["1 a 1", "1 b 0"])  # no header, spaces
    manifest = prepare("jsonl", tmp_path / "out", src=src)
    out = tmp_path / "out"
    assert load_corpus(out) == {"a": {"title": "A", "text": "alpha"}, "b": {"title": "", "text": "beta"}}
    assert load_queries(out) == {"1": "which one?", "2": "unjudged"}
    assert load_qrels(out, "test") == {"1": {"a": 1, "b": 0}} and load_qrels(out, "train") == {}
    assert manifest["counts"]["test_queries"] == 1 and manifest["counts"]["train_queries"] == 0


@pytest.mark.parametrize(
    "corpus, qrels, file, where, problem",
    [
        (
            ['{"id": "a", "text": "x"}', '["a", "x"]', '{"id": "c", "text": "x"}'],
            None,
            "c.jsonl",
            "line 2",
            "JSON object",
        ),
        (['{"id": "a", "text": "x"}', '{"id": "a b", "text": "x"}'], None, "c.jsonl", "line 2", "whitespace"),
        (
            ['{"id": "a", "text": "x"}', "", '{"id": "a", "text": "y"}'],
            None,
            "c.jsonl",
            "line 3",
            "duplicate",
        ),
        (['{"id": "a", "text": 3}'], None, "c.jsonl", "line 1", "field 'text' must be a string"),
        ([""], None, "c.jsonl", "", "empty corpus"),
        (['{"id": "a", "text": "x"}'], ["1 a 1", "2 a"], "test.tsv", "line 2", "expected 3 columns"),
        (['{"id": "a", "text": "x"}'], ["1 a 1", "1 zz 1"], "test.tsv", "line 2", "document 'zz'"),
        (['{"id": "a", "text": "x"}'], ["1 a 1", "7 a 1"], "test.tsv", "line 2", "query '7' is not in"),
        (
            ['{"id": "a", "text": "x"}'],
            ["1 a 1", "1 a high"],
            "test.tsv",
            "line 2",
            "score 'high' is not an integer",
        ),
    ],
)
def test_jsonl_bad_input(tmp_path, corpus, qrels, file, where, problem):
    if qrels is None:
        src = write(tmp_path / "c.jsonl", corpus)
    else:
        src = tmp_path / "raw"
        write(src / "corpus.jsonl", corpus)
        write(src / "queries.jsonl", jsonl([{"_id": "1", "text": "q"}]))
        write(src / "qrels" / "test.tsv", qrels)
    raises("jsonl", src, tmp_path / "out", file, where, problem)


def test_jsonl_bad_utf8_names_the_line(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_bytes(b'{"id": "a", "text": "x"}\n{"id": "b", "text": "caf\xe9"}\n')
    raises("jsonl", src, tmp_path / "out", "c.jsonl", "line 2", "not UTF-8")


def test_jsonl_folder_without_corpus(tmp_path):
    write(tmp_path / "raw" / "queries.jsonl", jsonl(QUERIES))
    raises("jsonl", tmp_path / "raw", tmp_path / "out", "raw", "no corpus.jsonl here")


# ---------------------------------------------------------------------------------------------
# trec

TREC_DOCS = [
    "<DOC>",
    "<DOCNO> FT911-1 </DOCNO>",
    "<DOCID>17</DOCID>",
    "<HEADLINE>",
    "FT  14 MAY 91 / Markets &amp; prices",
    "</HEADLINE>",
    "<TEXT>",
    "Shares rose",
    "on Monday.",
    "</TEXT>",
    "</DOC>",
    "",
    "<DOC>",
    "<DOCNO>FT911-2</DOCNO>",
    "<TEXT>No headline here.</TEXT>",
    "</DOC>",
]
TREC_TOPICS = [
    "<top>",
    "<num> Number: 051",
    "<title> Topic: markets prices",
    "",
    "<desc> Description:",
    "What moves markets?",
    "",
    "<narr> Narrative:",
    "A relevant document names a price.",
    "</top>",
    "",
    "<top>",
    "<num> Number: 402 <title> headlines",
    "</top>",
]
TREC_QRELS = ["51 0 FT911-1 1", "51 0 FT911-2 0", "402 0 LA-1 2"]


def write_trec(folder: Path, docs=TREC_DOCS, topics=TREC_TOPICS, qrels=TREC_QRELS) -> Path:
    write(folder / "ft" / "ft911_1", docs)
    (folder / "la").mkdir()
    with gzip.open(folder / "la" / "la010189.gz", "wt") as f:
        f.write("<DOC>\n<DOCNO>LA-1</DOCNO>\n<TITLE>A title</TITLE>\n<P>Body &lt;b&gt;</P>\n</DOC>\n")
    write(folder / "topics.txt", topics)
    write(folder / "qrels.txt", qrels)
    write(folder / "README", "TREC sample; <DOC> files under ft/ and la/\n")  # skipped: not a <DOC> line
    return folder


def test_trec_folder(tmp_path):
    manifest = prepare("trec", tmp_path / "out", src=write_trec(tmp_path / "raw"))
    out = tmp_path / "out"
    assert load_corpus(out) == {
        "FT911-1": {"title": "FT 14 MAY 91 / Markets & prices", "text": "Shares rose on Monday."},
        "FT911-2": {"title": "", "text": "No headline here."},
        "LA-1": {"title": "A title", "text": "Body <b>"},
    }
    assert load_queries(out) == {"51": "markets prices", "402": "headlines"}
    assert load_qrels(out, "test") == {"51": {"FT911-1": 1, "FT911-2": 0}, "402": {"LA-1": 2}}
    assert manifest["counts"]["test_queries"] == 2 and manifest["counts"]["train_queries"] == 0


def test_trec_one_documents_file(tmp_path):
    src = write(tmp_path / "docs.sgml", TREC_DOCS)
    data_ = data.read_trec(src)
    assert list(data_.corpus) == ["FT911-1", "FT911-2"] and data_.queries == {} and data_.qrels == {}


@pytest.mark.parametrize(
    "docs, topics, qrels, file, where, problem",
    [
        (TREC_DOCS[:10] + TREC_DOCS[11:], None, None, "ft911_1", "line 1", "<DOC> without </DOC>"),
        (TREC_DOCS[:1] + TREC_DOCS[2:], None, None, "ft911_1", "line 1", "no <DOCNO>"),
        (TREC_DOCS[:12] + ["stray"] + TREC_DOCS[12:], None, None, "ft911_1", "line 13", "text outside <DOC>"),
        (
            TREC_DOCS[:12] + TREC_DOCS[:11],
            None,
            None,
            "ft911_1",
            "line 13",
            "duplicate document id 'FT911-1'",
        ),
        (TREC_DOCS + ["</DOC>"], None, None, "ft911_1", "line 17", "</DOC> without <DOC>"),
        (None, TREC_TOPICS[:2] + TREC_TOPICS[3:], None, "topics.txt", "line 1", "topic 51 has no <title>"),
        (None, ["<top>", "<title> x", "</top>"], None, "topics.txt", "line 1", "topic without a <num>"),
        (None, TREC_TOPICS + TREC_TOPICS[11:], None, "topics.txt", "line 15", "duplicate topic 402"),
        (None, None, ["51 0 FT911-1 1", "51 0 FT911-9 1"], "qrels.txt", "line 2", "document 'FT911-9'"),
        (None, None, ["51 0 FT911-1 1", "77 0 FT911-1 1"], "qrels.txt", "line 2", "query '77' is not in"),
        (None, None, ["51 0 FT911-1 1", "51 0 FT911-2 x"], "qrels.txt", "line 2", "not an integer"),
        (
            None,
            None,
            ["51 0 FT911-1 1", "51 0 FT911-2 0", "51 FT911-2 1"],
            "qrels.txt",
            "line 3",
            "4 columns",
        ),
    ],
)
def test_trec_bad_input(tmp_path, docs, topics, qrels, file, where, problem):
    src = write_trec(tmp_path / "raw", docs or TREC_DOCS, topics or TREC_TOPICS, qrels or TREC_QRELS)
    raises("trec", src, tmp_path / "out", file, where, problem)


def test_trec_empty_and_compressed_files(tmp_path):
    raises("trec", write(tmp_path / "empty.txt", ""), tmp_path / "out", "empty.txt", "no documents")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "fr940104.Z").write_bytes(b"\x1f\x9d\x90<DOC>")
    raises("trec", tmp_path / "raw", tmp_path / "out", "fr940104.Z", "Unix compress")


# ---------------------------------------------------------------------------------------------
# tsv


def write_marco(folder: Path, **files: list[str]) -> Path:
    default = {
        "collection.tsv": ["id\ttext", "0\tThe first passage.", "1\tThe second one. ", "2\t"],
        "queries.train.tsv": ["10\twhat is first?"],
        "queries.dev.tsv": ["20\twhat is second?", "21\tunjudged"],
        "qrels.train.tsv": ["10 0 0 1"],  # MS MARCO: qid 0 pid rel
        "qrels.dev.small.tsv": ["20\t1\t1"],  # qid<TAB>pid<TAB>rel
    }
    for name, lines in (default | files).items():
        if lines is not None:
            write(folder / name, lines)
    return folder


def test_tsv_marco_folder(tmp_path):
    manifest = prepare("tsv", tmp_path / "out", src=write_marco(tmp_path / "raw"))
    out = tmp_path / "out"
    assert load_corpus(out) == {
        "0": {"title": "", "text": "The first passage."},
        "1": {"title": "", "text": "The second one."},
        "2": {"title": "", "text": ""},
    }
    assert load_queries(out) == {"10": "what is first?", "20": "what is second?", "21": "unjudged"}
    assert load_qrels(out, "train") == {"10": {"0": 1}}
    assert load_qrels(out, "dev") == {"20": {"1": 1}}
    assert load_qrels(out, "test") == {}
    assert manifest["counts"]["dev_queries"] == 1 and manifest["counts"]["test_queries"] == 0


def test_tsv_collection_alone(tmp_path):
    src = write(tmp_path / "passages.tsv", ["p1\tone", "p2\ttwo"])
    got = data.read_tsv(src)
    assert got.corpus == {"p1": {"title": "", "text": "one"}, "p2": {"title": "", "text": "two"}}
    assert got.queries == {} and got.qrels == {}


@pytest.mark.parametrize(
    "files, file, where, problem",
    [
        ({"collection.tsv": ["0\tok", "1\ttoo\tmany", "2\tok"]}, "collection.tsv", "line 2", "found 3"),
        ({"collection.tsv": ["0\tok", "1"]}, "collection.tsv", "line 2", "2 tab-separated fields"),
        ({"collection.tsv": ["0\tok", "0\tagain"]}, "collection.tsv", "line 2", "duplicate document id '0'"),
        ({"collection.tsv": [""]}, "collection.tsv", "", "empty corpus"),
        ({"queries.dev.tsv": ["20\tok", "21\t "]}, "queries.dev.tsv", "line 2", "empty text"),
        ({"queries.dev.tsv": ["10\tother text"]}, "queries.train.tsv", "line 1", "duplicate query id '10'"),
        ({"qrels.train.tsv": ["10 0 0 1", "10 0 9 1"]}, "qrels.train.tsv", "line 2", "document '9'"),
        ({"qrels.train.tsv": ["10 0 0 1", "99 0 0 1"]}, "qrels.train.tsv", "line 2", "query '99' is not in"),
        ({"qrels.train.tsv": []}, "qrels.train.tsv", "", "no judgements"),
        ({"qrels.dev.tsv": ["20 0 1 1"]}, "qrels.dev.tsv", "", "a second dev qrels file"),
    ],
)
def test_tsv_bad_input(tmp_path, files, file, where, problem):
    raises("tsv", write_marco(tmp_path / "raw", **files), tmp_path / "out", file, where, problem)


# ---------------------------------------------------------------------------------------------
# glasgow: the family beyond Cranfield (Cranfield itself is tested in test_data.py)

CACM_DOCS = [
    ".I 1",
    ".T",
    "Preliminary Report-International Algebraic Language",
    ".B",
    "CACM December, 1958",
    ".A",
    "Perlis, A. J.",
    ".N",
    "CA581203 JB March 22, 1978  8:28 PM",
    ".X",
    "100\t5\t1",
    ".I 2",
    ".T",
    "Extraction of Roots by Repeated Subtractions",
    ".W",
    "A method of extracting roots",
    "by repeated subtractions.",
    ".K",
    "roots, subtraction",
    ".I 3",
    ".T",
    "Techniques for solving equations",
]
CACM_QUERIES = [
    ".I 1",
    ".W",
    " What articles exist which deal with TSS (Time Sharing System)?",
    ".N",
    " 1. Richard Alexander, Comp Serv, Langmuir Lab (TSS)",
    ".I 2",
    ".W",
    " I am interested in roots.",
]


def write_glasgow(
    folder: Path, names=("cacm.all", "query.text", "qrels.text"), qrels=None, queries=None
) -> Path:
    write(folder / names[0], CACM_DOCS)
    write(folder / names[1], CACM_QUERIES if queries is None else queries)
    write(folder / names[2], ["01 0001  0 0", "02 0002 0 0", "02 0003 0 0"] if qrels is None else qrels)
    return folder


def test_glasgow_cacm(tmp_path):
    manifest = prepare("glasgow", tmp_path / "out", src=write_glasgow(tmp_path / "raw"))
    out = tmp_path / "out"
    assert load_corpus(out) == {
        "1": {"title": "Preliminary Report-International Algebraic Language", "text": ""},
        "2": {
            "title": "Extraction of Roots by Repeated Subtractions",
            "text": "A method of extracting roots by repeated subtractions.",
        },
        "3": {"title": "Techniques for solving equations", "text": ""},
    }
    assert load_queries(out) == {
        "1": "What articles exist which deal with TSS (Time Sharing System)?",
        "2": "I am interested in roots.",
    }
    # 'query document 0 0': binary, leading zeros dropped
    assert load_qrels(out, "test") == {"1": {"1": 1}, "2": {"2": 1, "3": 1}}
    assert manifest["relevance"]["rule"] == "binary: every listed pair has gain 1"
    assert manifest["counts"]["test_qrels"] == 3 and manifest["counts"]["qrels_dropped"] == 0


@pytest.mark.parametrize(
    "names, qrels, expected, rule",
    [
        # CISI: 'query document 0 0.000000', binary
        (
            ("CISI.ALL", "CISI.QRY", "CISI.REL"),
            ["1 1 0 0.000000", "2 3 0 0.000000"],
            {"1": {"1": 1}, "2": {"3": 1}},
            "binary",
        ),
        # MED: 'query 0 document relevance'
        (
            ("MED.ALL", "MED.QRY", "MED.REL"),
            ["1 0 2 1", "2 0 3 1"],
            {"1": {"2": 1}, "2": {"3": 1}},
            "gain = relevance",
        ),
        # grades in the 3rd column (a zero is a judged non-relevant document)
        (("a.all", "a.qry", "a.rel"), ["1 1 2 0.5", "1 2 0 0.1"], {"1": {"1": 2, "2": 0}}, "3rd column"),
        # grades in the 4th column
        (
            ("a.all", "a.qry", "a.rel"),
            ["1 1 0 3", "2 2 0 1.000"],
            {"1": {"1": 3}, "2": {"2": 1}},
            "4th column",
        ),
        # two columns
        (("a.all", "a.qry", "a.rel"), ["1 1", "2 2"], {"1": {"1": 1}, "2": {"2": 1}}, "gain 1"),
        # no names to go by: the big .I file is the documents, the other the queries
        (("x.txt", "y.txt", "z.txt"), ["1 3 0 0"], {"1": {"3": 1}}, "binary"),
    ],
)
def test_glasgow_family(tmp_path, names, qrels, expected, rule):
    got = data.read_glasgow(write_glasgow(tmp_path / "raw", names=names, qrels=qrels))
    assert len(got.corpus) == 3 and len(got.queries) == 2
    assert got.qrels == {"test": expected}
    assert rule in got.notes["relevance"]["rule"]
    assert got.inputs["documents"].name == names[0] and got.inputs["qrels"].name == names[2]


def test_glasgow_query_ids_follow_the_I_numbers_when_the_qrels_do(tmp_path):
    queries = [".I 7", ".W", "seven", ".I 9", ".W", "nine"]
    got = data.read_glasgow(write_glasgow(tmp_path / "raw", qrels=["9 2 0 0"], queries=queries))
    assert got.queries == {"7": "seven", "9": "nine"} and got.qrels == {"test": {"9": {"2": 1}}}
    got = data.read_glasgow(write_glasgow(tmp_path / "pos", qrels=["2 2 0 0"], queries=queries))
    assert got.queries == {"1": "seven", "2": "nine"}  # within 1..n: positions, as Cranfield's


def test_glasgow_documents_alone(tmp_path):
    got = data.read_glasgow(write(tmp_path / "cacm.all", CACM_DOCS))
    assert len(got.corpus) == 3 and got.queries == {} and got.qrels == {}


@pytest.mark.parametrize(
    "qrels, queries, file, where, problem",
    [
        (
            ["1 1 0 0", "1 2 0", "2 3 0 0"],
            None,
            "qrels.text",
            "line 2",
            "expected 4 columns, as on line 1, found 3",
        ),
        (["1 1 0 0", "1 9 0 0"], None, "qrels.text", "line 2", "document '9' is not in cacm.all"),
        (["1 1 0 0", "1 2 0 0", "3 1 0 0"], None, "qrels.text", "line 3", "query '3' is not in query.text"),
        (["1 1 0 0", "1 2 x 0"], None, "qrels.text", "line 2", "3rd column 'x' is not a number"),
        (["1 1 0 0 0"], None, "qrels.text", "line 1", "found 5"),
        (["1 1 0 0", "1 1 0 0"], None, "qrels.text", "line 2", "duplicate judgement"),
        ([], None, "qrels.text", "", "no judgements"),
        (
            None,
            [".I 1", ".W", "ok", ".I 2", ".A", "nobody"],
            "query.text",
            "line 4",
            "query 2 has no '.W' text",
        ),
        (None, ["words before", ".I 1", ".W", "x"], "query.text", "line 1", "text outside a field"),
        (None, [], "query.text", "", "no queries"),
    ],
)
def test_glasgow_bad_input(tmp_path, qrels, queries, file, where, problem):
    raises(
        "glasgow",
        write_glasgow(tmp_path / "raw", qrels=qrels, queries=queries),
        tmp_path / "out",
        file,
        where,
        problem,
    )


def test_glasgow_ambiguous_files(tmp_path):
    src = write_glasgow(tmp_path / "raw")
    write(src / "copy.rel", ["1 1 0 0"])
    raises("glasgow", src, tmp_path / "out", "several relevance files")
    (src / "copy.rel").unlink()
    write(src / "more.qry", CACM_QUERIES)
    raises("glasgow", src, tmp_path / "out", "several queries files")


# ---------------------------------------------------------------------------------------------
# Real data


@pytest.mark.slow
def test_real_cranfield_through_glasgow(tmp_path):
    get_settings.cache_clear()
    datasets = get_settings().datasets
    if datasets is None:
        pytest.skip("set NCI_DATASETS to the folder holding cranfield/")
    manifest = prepare("glasgow", tmp_path / "out", src=Path(datasets) / "cranfield")
    counts = manifest["counts"]
    # the README's counts: 1,400 documents, 225 queries, 1,837 qrels lines
    assert (counts["documents"], counts["queries"], counts["test_queries"]) == (1400, 225, 225)
    assert counts["test_qrels"] == 1837 and counts["train_qrels"] == 0 and counts["qrels_dropped"] == 0
    assert set(manifest["inputs"]) == {"documents", "queries", "qrels"}
    assert Path(manifest["inputs"]["documents"]["path"]).name == "cran.all.1400"
    assert "5 - grade" in manifest["relevance"]["rule"]
