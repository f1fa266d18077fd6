"""Live additions and deletions (nci.live): every method sees them at once, ids follow the
centroid rule, and updates survive restarts and kills."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from nci.live import DocumentExists, DocumentNotFound, IdSpaceFull, open_live_index
from nci.live.store import SQLITE_FILE
from nci.manifest import ArtifactError
from nci.retrieval.hits import Hit, merge_fallback
from nci.retrieval.id_space import IdSpace

METHODS = ("nci", "dense", "pq", "bm25")


@pytest.fixture(scope="module")
def index_dir(tiny_index) -> Path:
    return tiny_index


@pytest.fixture
def live(index_dir, tmp_path):
    """A live index with its own, empty updates directory."""
    live = open_live_index(index_dir, tmp_path / "updates")
    yield live
    live.close()


def everything(live, queries, method):
    """Ids returned by ``method`` for ``queries`` when asking for every document."""
    k = len(live) + 10
    opts = {"beam": k} if method.startswith("nci") else {}
    return {h.doc_id for hits in live.search(method, queries, k, **opts) for h in hits}


def test_delete_removes_the_document_from_every_method_at_once(live):
    doc = live.store["d7"]
    queries = [doc["title"], doc["text"]]
    for method in METHODS:
        assert "d7" in everything(live, queries, method), method
    trie_path = live.trie.path("d7")
    live.delete("d7")
    for method in METHODS:
        found = everything(live, queries, method)
        assert "d7" not in found, method
        assert found, method  # the others are still there
    # its leaf is pruned from the trie beam search walks, and the id is gone from the live trie
    node = 0
    for digit in trie_path:
        node = int(live.trie.decode_child[node, digit])
        if node < 0:
            break
    assert node < 0 or live.trie.decode_doc[node] < 0
    assert live.trie.path("d7") is None
    with pytest.raises(DocumentNotFound):
        live.get("d7")
    with pytest.raises(DocumentNotFound):
        live.delete("d7")


def test_deleting_a_whole_leaf_group_prunes_its_ancestor(live):
    trie = live.trie
    # a leaf group: a node whose children are all documents
    group = next(
        n
        for n in range(trie.n_built)
        if (trie.child[n] >= 0).any() and trie.is_leaf[trie.child[n][trie.child[n] >= 0]].all()
    )
    docs = [trie.leaf_doc[int(c)] for c in trie.child[group] if c >= 0]
    for d in docs:
        live.delete(d)
    parent, digit = int(trie.parent[group]), int(trie.digit[group])
    assert trie.decode_child[parent, digit] == -1
    assert everything(live, ["topic"], "nci").isdisjoint(docs)


def test_added_document_gets_a_centroid_id_and_is_found_at_once(live):
    doc = {
        "_id": "fresh-1",
        "title": "zyxwv report",
        "text": "qqqzebra tokens appear only in this new document",
    }
    [added] = live.add([doc])
    assert added["id"] == "fresh-1" and added["semantic_id"]
    digits = tuple(int(d) for d in added["semantic_id"].split("-"))
    assert live.trie.path("fresh-1") == digits
    assert len(digits) <= live.trie.depth_limit
    # the first digit leads to the root child whose centroid is nearest to the document's vector
    x = live.added["fresh-1"]
    kids = live.trie.child[0][live.trie.child[0] >= 0]
    kids = kids[kids < live.trie.n_built]
    nearest = int(kids[np.argmin(((live.trie.centroids[kids] - x) ** 2).sum(1))])
    assert digits[0] == int(live.trie.digit[nearest])
    # findable by every method, right away
    text = "zyxwv report. qqqzebra tokens appear only in this new document"
    assert live.search("bm25", ["qqqzebra"], 3)[0][0].doc_id == "fresh-1"
    assert live.search("dense", [text], 1)[0][0].doc_id == "fresh-1"
    assert "fresh-1" in everything(live, [text], "pq")  # 4-bit codes of tiny random vectors: rank is rough
    nci = live.search("nci", [text], 5)[0]
    assert [h.source for h in nci if h.doc_id == "fresh-1"] == ["dense"]  # from the dense fallback
    assert all(h.source == "nci" for h in nci if h.doc_id != "fresh-1")
    assert [h.score for h in nci] == sorted((h.score for h in nci), reverse=True)
    got = live.get("fresh-1")
    assert got["added"] and not got["trained"] and got["semantic_id"] == added["semantic_id"]


def test_add_rejects_live_ids_and_adds_nothing_on_failure(live):
    n = len(live)
    with pytest.raises(DocumentExists):
        live.add([{"_id": "ok-1", "text": "fine"}, {"_id": "d3", "text": "d3 is live"}])
    with pytest.raises(DocumentExists):
        live.add([{"_id": "twice", "text": "a"}, {"_id": "twice", "text": "b"}])
    assert len(live) == n and "ok-1" not in live and live.seq == 0
    # a deleted id can come back, as a new (untrained) document
    live.delete("d3")
    live.add([{"_id": "d3", "text": "d3 again, rewritten"}])
    assert live.get("d3")["text"] == "d3 again, rewritten" and not live.get("d3")["trained"]


def test_batch_add_gives_distinct_ids(live):
    docs = [{"_id": f"b{i}", "text": "same text for all"} for i in range(12)]
    added = live.add(docs)
    ids = [a["semantic_id"] for a in added]
    assert len(set(ids)) == 12
    assert all(live.trie.path(a["id"]) == tuple(map(int, a["semantic_id"].split("-"))) for a in added)


def test_live_trie_fills_every_free_digit_before_refusing(index_dir):
    """Property: repeated additions never repeat an id, never make one id a prefix of another,
    never exceed the depth limit and never reuse a deleted document's digits; when no digit is
    left anywhere the trie says so."""
    from nci.semantic_ids import load_semantic_ids
    from nci.trie import Trie

    sem = load_semantic_ids(index_dir / "ids")
    trie = IdSpace(sem)
    retired = sem.ids[0]
    trie.remove(sem.doc_ids[0], None)
    rng = np.random.default_rng(0)
    ids = {d: i for d, i in zip(sem.doc_ids[1:], sem.ids[1:], strict=True)}
    added = 0
    with pytest.raises(IdSpaceFull):
        for i in range(10_000):
            x = rng.standard_normal(sem.centroids.shape[1]).astype(np.float32)
            sid = trie.assign(x)
            assert len(sid) <= trie.depth_limit
            assert sid != retired and sid not in ids.values()
            trie.insert(f"n{i}", sid, x)
            ids[f"n{i}"] = sid
            added += 1
    assert added > 0
    Trie.build(list(ids.values()) + [retired], sem.k)  # raises on a duplicate or a prefix


def _scan_assign(space, x):
    """The id rule's full-group step as first written: scan every node of the trie for room, then
    take the nearest one below ever higher ancestors (the reference for IdSpace.assign)."""
    node = 0
    while True:
        kids = space.child[node]
        kids = kids[kids >= 0]
        internal = kids[~space.is_leaf[kids]]
        if internal.size == 0:
            break
        node = int(internal[np.argmin(((space.centroids[internal] - x) ** 2).sum(1))])
    free = np.flatnonzero(space.child[node] < 0)
    if free.size and space.depth[node] + 1 <= space.depth_limit:
        return (*space._digits(node), int(free[0]))
    nodes = np.arange(space.n)
    open_ = (space.child[: space.n] < 0).any(1) & ~space.is_leaf[: space.n]
    group = space._is_group(nodes)
    fits = np.where(group, space.depth[: space.n] + 1, space.depth[: space.n] + 2) <= space.depth_limit
    cand = nodes[open_ & fits]
    if cand.size == 0:
        return None
    dist = ((space.centroids[cand] - x) ** 2).sum(1)
    anc = int(space.parent[node]) if node > 0 else 0
    while True:
        up = cand.copy()
        for _ in range(int(space.depth[: space.n].max()) + 1):
            deeper = space.depth[up] > space.depth[anc]
            if not deeper.any():
                break
            up[deeper] = space.parent[up[deeper]]
        inside = up == anc
        if inside.any():
            best = int(cand[inside][np.argmin(dist[inside])])
            digit = int(np.flatnonzero(space.child[best] < 0)[0])
            if space._is_group(np.array([best]))[0]:
                return (*space._digits(best), digit)
            return (*space._digits(best), digit, 0)
        anc = int(space.parent[anc])


def test_assign_reads_only_the_neighbourhood_and_picks_what_a_whole_trie_scan_picks(index_dir):
    from nci.semantic_ids import load_semantic_ids

    sem = load_semantic_ids(index_dir / "ids")
    space = IdSpace(sem)
    rng = np.random.default_rng(1)
    for i in range(10_000):
        x = rng.standard_normal(sem.centroids.shape[1]).astype(np.float32)
        expected = _scan_assign(space, x)
        if expected is None:
            with pytest.raises(IdSpaceFull):
                space.assign(x)
            break
        assert space.assign(x) == expected
        space.insert(f"n{i}", expected, x)
    else:
        pytest.fail("the trie never filled up")


def test_a_trial_undoes_its_inserts_exactly(index_dir):
    from nci.semantic_ids import load_semantic_ids

    sem = load_semantic_ids(index_dir / "ids")
    space = IdSpace(sem)
    rng = np.random.default_rng(2)
    for i in range(5):  # some live documents first
        x = rng.standard_normal(sem.centroids.shape[1]).astype(np.float32)
        space.insert(f"a{i}", space.assign(x), x)
    arrays = ("child", "parent", "digit", "depth", "is_leaf", "centroids", "count")
    before = {name: getattr(space, name)[: space.n + 200].copy() for name in arrays}
    n, leaves = space.n, dict(space.leaf_doc)
    with space.trial():
        for i in range(40):  # enough to open new groups and fill full ones
            x = rng.standard_normal(sem.centroids.shape[1]).astype(np.float32)
            space.insert(f"t{i}", space.assign(x), x)
        assert space.n > n
    assert space.n == n and space.leaf_doc == leaves and set(space.doc_leaf) == set(leaves.values())
    for name in arrays:
        np.testing.assert_array_equal(getattr(space, name)[: n + 200], before[name], err_msg=name)


def test_merge_fallback_places_added_documents_where_dense_would():
    hits = [Hit("a", -0.1, "nci"), Hit("b", -0.5, "nci"), Hit("c", -2.0, "nci")]
    sims = [0.9, 0.5, 0.7]  # dense similarity of a, b, c
    merged = merge_fallback(hits, sims, [("x", 0.6), ("y", 0.95), ("z", 0.1)], k=10)
    assert [h.doc_id for h in merged] == ["y", "a", "x", "b", "c", "z"]
    assert [h.source for h in merged] == ["dense", "nci", "dense", "nci", "nci", "dense"]
    scores = [h.score for h in merged]
    assert scores == sorted(scores, reverse=True)
    assert [h.doc_id for h in merge_fallback([], [], [("x", 0.2), ("y", 0.3)], k=1)] == ["y"]


# --- durability ---------------------------------------------------------------------------------


def state_of(live):
    return (
        dict(live.store),
        live.trie.live_ids(),
        sorted(live.deleted_built),
        live.loaded("dense").live_ids(),
        live.loaded("pq").live_ids(),
        {d: v.tolist() for d, v in live.added.items()},
    )


def test_restart_loads_the_committed_state(index_dir, tmp_path):
    updates = tmp_path / "updates"
    live = open_live_index(index_dir, updates)
    live.add([{"_id": "n1", "title": "t", "text": "first new"}])
    live.delete("d1")
    live.add([{"_id": "n2", "text": "second new"}, {"_id": "n3", "text": "third new"}])
    live.delete("n1")
    live.add([{"_id": "d1", "text": "d1 is back"}])
    before = state_of(live)
    assert live.seq == 5
    live.close()
    again = open_live_index(index_dir, updates)
    assert state_of(again) == before and again.seq == 5
    assert again.search("bm25", ["d1 is back"], 1)[0][0].doc_id == "d1"
    again.close()
    reader = open_live_index(index_dir, updates, read_only=True)
    assert state_of(reader) == before
    reader.close()


def test_a_torn_write_ahead_log_tail_loses_nothing_committed(index_dir, tmp_path):
    """A kill while SQLite appends to its write-ahead log leaves a partial frame: SQLite ignores
    it (frames carry checksums), and every committed update is there."""
    updates = tmp_path / "updates"
    live = open_live_index(index_dir, updates)
    live.add([{"_id": "n1", "text": "kept"}])
    live.delete("d2")
    wal = updates / (SQLITE_FILE + "-wal")
    assert wal.stat().st_size > 0  # the commits are in the write-ahead log (no checkpoint yet)
    with open(wal, "ab") as f:
        f.write(os.urandom(3000))  # a frame cut short
    again = open_live_index(index_dir, updates, read_only=True)
    assert "n1" in again and "d2" not in again and again.seq == 2
    again.close()
    live.close()


def test_a_corrupt_record_stops_the_start_with_a_message(index_dir, tmp_path):
    import sqlite3

    updates = tmp_path / "updates"
    live = open_live_index(index_dir, updates)
    live.add([{"_id": "n1", "text": "kept"}])
    live.close()
    with sqlite3.connect(updates / SQLITE_FILE) as db:  # a record changed by hand or a bad disk
        db.execute("UPDATE nci_documents SET record = replace(record, 'kept', 'kepT')")
    with pytest.raises(ArtifactError, match="corrupt live-update record"):
        open_live_index(index_dir, updates)


def test_updates_of_another_index_build_are_refused(index_dir, tmp_path):
    import sqlite3

    updates = tmp_path / "updates"
    open_live_index(index_dir, updates).close()
    with sqlite3.connect(updates / SQLITE_FILE) as db:
        db.execute("UPDATE nci_meta SET index_key = 'another build'")
    with pytest.raises(ArtifactError, match="another build of the index"):
        open_live_index(index_dir, updates)


def test_updates_of_the_earlier_log_format_are_imported_once(index_dir, tmp_path):
    """An updates directory written by the earlier version (log.jsonl + snapshots) is imported
    into the database at the first start, its files moved to legacy/."""
    import zlib

    from nci.live.store import vec_to_text
    from nci.manifest import fingerprint

    updates = tmp_path / "updates"
    updates.mkdir()
    (updates / "INDEX.json").write_text(json.dumps({"version": 1, "index": fingerprint(index_dir)}))
    vec = vec_to_text(np.ones(32, dtype=np.float32) / np.sqrt(32))
    records = [
        {
            "seq": 1,
            "op": "add",
            "docs": [{"_id": "old-1", "title": "", "text": "from the old log", "vec": vec}],
        },
        {"seq": 2, "op": "delete", "id": "d4"},
    ]
    with open(updates / "log.jsonl", "wb") as f:
        for r in records:
            body = json.dumps(r).encode()
            f.write(b"%08x\t%s\n" % (zlib.crc32(body), body))
    live = open_live_index(index_dir, updates)
    assert "old-1" in live and "d4" not in live and live.seq == 2
    assert (updates / "legacy" / "log.jsonl").is_file() and not (updates / "log.jsonl").exists()
    live.close()
    again = open_live_index(index_dir, updates)  # not imported twice
    assert again.seq == 2
    again.close()


WRITER = textwrap.dedent("""
    import sys
    import faiss
    faiss.omp_set_num_threads(1)
    from nci.live import open_live_index
    live = open_live_index(sys.argv[1], sys.argv[2])
    print("ready", flush=True)
    i = 0
    while True:
        live.add([{"_id": f"k{i}", "text": f"kill test document number {i}"}])
        print(f"add k{i}", flush=True)
        if i % 3 == 2:
            live.delete(f"k{i - 1}")
            print(f"delete k{i - 1}", flush=True)
        i += 1
""")


@pytest.mark.slow  # two process starts: about 20 s
def test_kill_during_a_stream_of_updates_loses_nothing_acknowledged(index_dir, tmp_path):
    updates = tmp_path / "updates"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(index_dir), str(updates)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    acked: list[str] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while len(acked) < 25 and time.monotonic() < deadline:
            acked.append(proc.stdout.readline().strip())
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-stream: the writer never stops on its own
        proc.wait()
    acked += [line.strip() for line in proc.stdout if line.strip()]  # acknowledged before the kill
    assert len(acked) >= 25
    ops = list(writer_ops(len(acked) + 1))
    assert acked == [f"{op} {doc_id}" for op, doc_id in ops[: len(acked)]]
    live = open_live_index(index_dir, updates)  # loads: no corrupt state
    present = {d for d in live.store if d.startswith("k")}
    # every acknowledged update is there; the one in flight at the kill may or may not be
    assert present in (live_after(ops[: len(acked)]), live_after(ops[: len(acked) + 1]))
    assert live.search("bm25", ["kill test document"], 5)[0]
    assert live.seq >= len(acked)


def writer_ops(n):
    """The writer's first ``n`` operations."""
    i = 0
    while True:
        for op in [("add", f"k{i}")] + ([("delete", f"k{i - 1}")] if i % 3 == 2 else []):
            if n == 0:
                return
            yield op
            n -= 1
        i += 1


def live_after(ops):
    docs = set()
    for op, doc_id in ops:
        (docs.add if op == "add" else docs.discard)(doc_id)
    return docs


def test_export_writes_the_live_corpus_and_ids_for_training(index_dir, tmp_path, capsys):
    from nci.data import load_corpus
    from nci.live.cli import main
    from nci.semantic_ids import load_semantic_ids

    updates = tmp_path / "updates"
    live = open_live_index(index_dir, updates)
    doc = {"_id": "exp-1", "title": "Exported", "text": "a document for the next training run"}
    [added] = live.add([doc])
    live.delete("d11")
    live.close()
    args = ["--index", str(index_dir), "--updates", str(updates)]
    assert main(["export", *args, "--out", str(tmp_path / "out")]) == 0
    corpus = load_corpus(tmp_path / "out")
    sem = load_semantic_ids(tmp_path / "out" / "ids")
    assert "exp-1" in corpus and "d11" not in corpus and len(corpus) == 60
    assert set(sem.doc_ids) == set(corpus)
    ids = dict(zip(sem.doc_ids, sem.ids, strict=True))
    assert "-".join(map(str, ids["exp-1"])) == added["semantic_id"]
    assert ids["d12"] == live.trie.path("d12")  # trained documents keep their ids
    assert main(["info", *args]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["added"] == 1
