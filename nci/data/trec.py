"""TREC collections (SGML documents, topics, qrels), their files found by content: the ``trec`` format.

``--src`` is a documents file, or a folder (or zip) whose files, gzip-compressed or not, are
told apart by what they hold (files of none of the three kinds are skipped):

- documents: ``<DOC>`` lines, ``<DOC> <DOCNO> id </DOCNO> ... </DOC>`` (one file or many). The
  title is the first ``<HEADLINE>``, ``<TITLE>``, ``<HL>``, ``<TI>`` or ``<DOCTITLE>`` element;
  the text is everything else inside ``<DOC>`` except ``<DOCNO>``, ``<DOCID>`` (an internal
  number) and ``<DOCHDR>`` (web headers), with tags removed, entities decoded, whitespace
  collapsed.
- topics: ``<top>`` lines, ``<top> <num> Number: 401 <title> ... [<desc> Description: ...]
  [<narr> Narrative: ...] </top>``; the query text is the title (without a "Topic:" prefix).
- qrels: lines of 4 fields, ``topic iteration document relevance``, the last an integer
  (:mod:`nci.data.judgements`).

Topic numbers lose their leading zeros ("051" is 51), in topics and qrels alike. Every judged
topic goes to the test split.
"""

from __future__ import annotations

import bisect
import html
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from nci.data.judgements import numeric_id, read_judgements
from nci.data.layout import DataError, Dataset, check_id
from nci.data.rawfiles import RawFile, input_paths, source_files

log = logging.getLogger("nci.data")

_DOC_LINE = re.compile(r"^[ \t]*<DOC>", re.I | re.M)
_TOP_LINE = re.compile(r"^[ \t]*<top>", re.I | re.M)
_DOCNO = re.compile(r"<DOCNO>(.*?)</DOCNO>", re.I | re.S)
_NOT_TEXT = re.compile(r"<(DOCNO|DOCID|DOCHDR)>.*?</\1>", re.I | re.S)
_TITLE = re.compile(r"<(HEADLINE|TITLE|HL|TI|DOCTITLE)>(.*?)</\1>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_TOPIC_FIELD = re.compile(r"<(num|title|desc|narr|dom|smry|con|fac|def|nat)>", re.I)
MANY_FILES = 10  # more input files than this: the manifest hashes --src as a whole


def _kind(file: RawFile) -> str | None:
    """ "documents", "topics", "qrels" or None, from the first 64 KiB of the file."""
    head = file.head()
    if _DOC_LINE.search(head):
        return "documents"
    if _TOP_LINE.search(head):
        return "topics"
    first = next((line.split() for line in head.splitlines() if line.strip()), [])
    if len(first) == 4 and re.fullmatch(r"-?\d+", first[3]):  # the reader checks every line
        return "qrels"
    return None


def _clean(sgml: str) -> str:
    return " ".join(html.unescape(_TAG.sub(" ", sgml)).split())


def _elements(file: RawFile, tag: str) -> Iterator[tuple[int, str]]:
    """(line of the opening tag, body) of each ``<tag> ... </tag>`` element of the file; only
    blank text may lie outside them."""
    text = file.text()
    starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def line_of(pos: int) -> int:
        return bisect.bisect_right(starts, pos)

    def check_outside(begin: int, end: int) -> None:
        gap = text[begin:end]
        if gap.strip():
            at = begin + len(gap) - len(gap.lstrip())
            raise DataError(
                f"text outside <{tag}> ... </{tag}>: {gap.strip()[:40]!r}", file=file.name, line=line_of(at)
            )

    opened: int | None = None  # end of the open tag
    outside = 0  # where the text outside elements resumes
    for m in re.finditer(rf"<(/?){tag}>", text, re.I):
        if m.group(1) and opened is None:
            raise DataError(f"</{tag}> without <{tag}>", file=file.name, line=line_of(m.start()))
        if m.group(1):
            yield line_of(opened), text[opened : m.start()]
            opened, outside = None, m.end()
        elif opened is not None:
            raise DataError(
                f"<{tag}> without </{tag}> (the next <{tag}> is on line {line_of(m.start())})",
                file=file.name,
                line=line_of(opened),
            )
        else:
            check_outside(outside, m.start())
            opened = m.end()
    if opened is not None:
        raise DataError(
            f"<{tag}> without </{tag}> (the file ends first)", file=file.name, line=line_of(opened)
        )
    check_outside(outside, len(text))


def _read_documents(file: RawFile, corpus: dict[str, dict[str, str]], seen: dict[str, str]) -> None:
    """Add the documents of one file to ``corpus`` (``seen``: doc id -> where it was read)."""
    for line, body in _elements(file, "DOC"):
        docnos = _DOCNO.findall(body)
        if len(docnos) != 1:
            problem = "no <DOCNO>" if not docnos else f"{len(docnos)} <DOCNO> elements"
            raise DataError(f"document with {problem}; each <DOC> needs one", file=file.name, line=line)
        doc_id = check_id(_clean(docnos[0]), "document", file=file.name, line=line)
        if doc_id in corpus:
            raise DataError(
                f"duplicate document id '{doc_id}' (first at {seen[doc_id]})", file=file.name, line=line
            )
        title = _TITLE.search(body)
        rest = body[: title.start()] + " " + body[title.end() :] if title else body
        corpus[doc_id] = {
            "title": _clean(title.group(2)) if title else "",
            "text": _clean(_NOT_TEXT.sub(" ", rest)),
        }
        seen[doc_id] = f"{file.name}, line {line}"


def _read_topics(file: RawFile, queries: dict[str, str], seen: dict[str, str]) -> None:
    """Add the topics of one file to ``queries`` (id -> title)."""
    for line, body in _elements(file, "top"):
        parts = _TOPIC_FIELD.split(body)  # [before, tag, content, tag, content, ...]
        fields: dict[str, str] = {}
        for tag, content in zip(parts[1::2], parts[2::2], strict=True):
            fields.setdefault(tag.lower(), _clean(content))
        num = re.sub(r"^number\s*:\s*", "", fields.get("num", ""), flags=re.I).split()
        if not num:
            raise DataError("topic without a <num>", file=file.name, line=line)
        qid = check_id(numeric_id(num[0]), "query", file=file.name, line=line)
        title = re.sub(r"^topic\s*:\s*", "", fields.get("title", ""), flags=re.I)
        if not title:
            raise DataError(f"topic {qid} has no <title> text", file=file.name, line=line)
        if qid in queries:
            raise DataError(f"duplicate topic {qid} (first at {seen[qid]})", file=file.name, line=line)
        queries[qid], seen[qid] = title, f"{file.name}, line {line}"


def read_trec(src: str | Path) -> Dataset:
    """A TREC collection: documents, and optionally topics and qrels (see the module doc)."""
    src = Path(src)
    files: dict[str, list[RawFile]] = {"documents": [], "topics": [], "qrels": []}
    skipped = []
    for f in source_files(src):
        kind = _kind(f)
        if kind is None:
            log.log(
                logging.WARNING if f.size == 0 else logging.INFO, "%s: not documents, topics or qrels", f.name
            )
            skipped.append(f.rel)
        else:
            files[kind].append(f)
    if not files["documents"]:
        found = (
            f" (found only {', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else ""
        )
        raise DataError(f"no documents: no file here has <DOC> lines{found}", file=src)

    corpus: dict[str, dict[str, str]] = {}
    seen: dict[str, str] = {}
    for f in tqdm(files["documents"], desc="trec documents", unit=" files", disable=None):
        _read_documents(f, corpus, seen)
    empty = sum(not d["title"] and not d["text"] for d in corpus.values())
    if empty:
        log.warning("%s: %d documents have neither title nor text (kept)", src, empty)
    queries: dict[str, str] = {}
    topic_seen: dict[str, str] = {}
    for f in files["topics"]:
        _read_topics(f, queries, topic_seen)
    where = " or ".join(f.name for f in files["topics"]) or "the topics (no topics file found)"
    test: dict[str, dict[str, int]] = {}
    for f in files["qrels"]:
        rels = read_judgements(
            f, queries, corpus, queries_from=where, corpus_from="the documents", query_id=numeric_id
        )
        for qid, docs in rels.items():
            again = set(docs) & set(test.get(qid, {}))
            if again:
                raise DataError(
                    f"query {qid}, document {min(again)} judged again (also in another qrels file)",
                    file=f.name,
                )
            test.setdefault(qid, {}).update(docs)

    roles = {f"{kind}_{n}": f for kind, group in files.items() for n, f in enumerate(group, 1)}
    inputs = input_paths(src, roles) if len(roles) <= MANY_FILES else {"source": src}
    return Dataset(
        corpus,
        queries,
        {"test": test} if test else {},
        inputs=inputs,
        notes={"query_text": "the topic's <title>", "query_ids": "topic numbers without leading zeros"},
    )
