"""``nci index build``: assemble one self-contained index directory.

The directory (layout in :mod:`nci.retrieval`) holds the document store, the document vectors,
the query encoder, an exact FAISS index, a 4-bit PQ fast-scan FAISS index, a BM25 index and,
when given, the semantic ids with their trie and the trained NCI model. ``nci search``,
``nci evaluate``, ``nci bench`` and the service all load it from its path alone.

Large inputs (vectors, model weights) are hard-linked when the input is on the same file system,
and copied otherwise; artifacts are never modified in place, so a link is as safe as a copy.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nci.manifest import ArtifactError, atomic_output_dir, fingerprint, read_manifest, write_manifest
from nci.retrieval import index as R
from nci.retrieval.dense import default_pq_m
from nci.retrieval.encoder import QueryEncoder
from nci.retrieval.registry import BuildContext, get_method, method_names

log = logging.getLogger(__name__)


# What the index keeps of an NCI model directory (nci.model's checkpoint format, plus provenance).
MODEL_FILES = ("config.json", "model.safetensors", "encoder", "manifest.json", "train_config.json")


@dataclass(frozen=True)
class IndexConfig:
    # Sub-quantizers of the 4-bit PQ; None picks dim // 4 (4 dimensions per 4-bit code: 48 bytes
    # per 384-d vector, 32x smaller than float32).
    pq_m: int | None = None
    bm25_k1: float = 1.5
    bm25_b: float = 0.75
    bm25_method: str = "lucene"
    stemmer: str = "english"
    stopwords: str = "en"
    link: bool = True
    # dense-sentences and bm25-sentences hold one vector / one BM25 row per sentence (five to ten
    # a document): built only for corpora up to this size.
    sentence_max_docs: int = 200_000

    def __post_init__(self) -> None:
        if self.pq_m is not None and self.pq_m < 1:
            raise ValueError(f"pq_m must be >= 1, got {self.pq_m}")


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _place(src: Path, dst: Path, link: bool) -> None:
    """Hard-link (or copy) a file or a directory tree, following symlinks."""
    copy = _link_or_copy if link else shutil.copy2
    if src.is_dir():
        shutil.copytree(src, dst, copy_function=copy)
    else:
        copy(str(src), str(dst))


def _same_weights(a: Path, b: Path) -> bool:
    """True when two model directories hold the same tensors (safetensors files compared by value)."""
    from safetensors.numpy import load_file

    fa, fb = sorted(a.glob("*.safetensors")), sorted(b.glob("*.safetensors"))
    if not fa or not fb:
        return False
    ta = {k: v for f in fa for k, v in load_file(f).items()}
    tb = {k: v for f in fb for k, v in load_file(f).items()}
    return ta.keys() == tb.keys() and all(np.array_equal(ta[k], tb[k]) for k in ta)


def build_index(
    data: Path,
    embeddings: Path,
    out: Path,
    ids: Path | None = None,
    model: Path | None = None,
    config: IndexConfig = IndexConfig(),
    overwrite: bool = False,
    fusion: Path | None = None,
) -> Path:
    """Assemble an index directory from a dataset, its embeddings, and optionally ids and a model;
    with ``fusion`` (a dataset with validation queries), fit the fusion method too."""
    from nci.data import document_text, load_corpus

    data, embeddings, out = Path(data), Path(embeddings), Path(out)
    corpus = load_corpus(data)
    doc_ids = list(corpus)

    vectors, emb_manifest = _read_embeddings(embeddings, doc_ids, data)
    emb_cfg = emb_manifest.get("config") or {}
    encoder_source = emb_manifest.get("model_source") or emb_cfg.get("model")
    _check_ids_and_model(ids, model, doc_ids, data)
    methods: dict[str, dict[str, Any]] = {}

    vectors = np.ascontiguousarray(vectors)
    dim = int(vectors.shape[1])
    pq_m = config.pq_m or default_pq_m(dim)
    if dim % pq_m:
        raise ValueError(f"pq_m {pq_m} does not divide the embedding dimension {dim}")

    start = time.perf_counter()
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        _write_documents(tmp, corpus, doc_ids)
        _place(embeddings / "embeddings.npy", tmp / R.EMBEDDINGS, config.link)
        if ids is not None:
            _place(ids, tmp / R.IDS, config.link)
        if model is not None:
            # inference files only: a training directory also holds caches and checkpoints
            (tmp / R.MODEL).mkdir()
            for name in MODEL_FILES:
                if (model / name).exists():
                    _place(model / name, tmp / R.MODEL / name, config.link)
        query_encoder = _place_query_encoder(tmp, encoder_source, emb_cfg, has_model=model is not None)

        ctx = BuildContext(
            out=tmp,
            doc_ids=doc_ids,
            texts=lambda: [document_text(corpus[d]) for d in doc_ids],
            vectors=vectors,
            config=config,
            encoder_dir=query_encoder["path"],
            has_ids=ids is not None,
            has_model=model is not None,
            data=data,
            encoder=lambda: QueryEncoder(
                tmp / query_encoder["path"],
                pooling=query_encoder["pooling"],
                max_length=query_encoder["max_length"],
            ),
        )
        for name in method_names():  # registration order is build order
            spec = get_method(name)
            if spec.build is not None:
                methods[name] = spec.build(ctx)

        inputs = {"data": data, "embeddings": embeddings, "ids": ids, "model": model}
        counts = {
            "documents": len(doc_ids),
            "dimension": dim,
            "pq_m": pq_m if "files" in methods.get("pq", {}) else None,
            "bm25_vocabulary": methods.get("bm25", {}).get("vocabulary"),
        }
        _write_index_manifest(
            tmp, config, inputs, counts, methods, query_encoder, time.perf_counter() - start
        )
        if fusion is not None:  # fitted on the written index: it searches with the other methods
            from nci.fusion import fit_fusion

            methods["fusion"] = fit_fusion(tmp, fusion)
            inputs["fusion"] = fusion
            _write_index_manifest(
                tmp, config, inputs, counts, methods, query_encoder, time.perf_counter() - start
            )
    available = [m for m, info in methods.items() if "unavailable" not in info]
    log.info("index with %s -> %s", ", ".join(sorted(available)), out)
    return out


def _write_index_manifest(
    out: Path,
    config: IndexConfig,
    inputs: dict[str, Path | None],
    counts: dict[str, Any],
    methods: dict[str, dict[str, Any]],
    query_encoder: dict[str, Any],
    wall_seconds: float,
) -> None:
    """manifest.json with every file's size (``load_index`` checks them), the methods' entries
    and the query encoder."""
    own = {"manifest.json", "config.json"}  # written by write_manifest itself
    files = {
        str(p.relative_to(out)): {"bytes": p.stat().st_size}
        for p in sorted(out.rglob("*"))
        if p.is_file() and str(p.relative_to(out)) not in own
    }
    write_manifest(
        out,
        stage=R.STAGE,
        config=config,
        inputs={name: path for name, path in inputs.items() if path is not None},
        counts=counts,
        wall_seconds=wall_seconds,
        extra={"files": files, "methods": methods, "query_encoder": query_encoder},
    )


def _read_embeddings(embeddings: Path, doc_ids: list[str], data: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """The document vectors (memory-mapped) and the embed manifest, checked against the corpus."""
    emb_manifest = read_manifest(embeddings, stage="embed")
    emb_ids = (embeddings / "doc_ids.txt").read_text().splitlines()
    if emb_ids != doc_ids:
        raise ArtifactError(
            f"{embeddings / 'doc_ids.txt'}: its {len(emb_ids)} ids are not the {len(doc_ids)} documents of "
            f"{data / 'corpus.jsonl'} in corpus order; embed this dataset again (nci embed)"
        )
    vectors = np.load(embeddings / "embeddings.npy", mmap_mode="r")
    if vectors.shape[0] != len(doc_ids) or vectors.dtype != np.float32:
        raise ArtifactError(
            f"{embeddings / 'embeddings.npy'}: shape {vectors.shape} {vectors.dtype}, "
            f"expected ({len(doc_ids)}, dim) float32"
        )
    return vectors, emb_manifest


def _check_ids_and_model(ids: Path | None, model: Path | None, doc_ids: list[str], data: Path) -> None:
    """The ids cover exactly the corpus; a model comes with the ids it was trained on."""
    sem = None
    if ids is not None:
        from nci.semantic_ids import load_semantic_ids

        read_manifest(ids, stage="ids")
        sem = load_semantic_ids(ids)
        if set(sem.doc_ids) != set(doc_ids):
            missing = sorted(set(doc_ids) - set(sem.doc_ids))[:5]
            raise ArtifactError(
                f"{ids / 'docids.tsv'}: its documents differ from {data / 'corpus.jsonl'} "
                f"(e.g. no id for {missing}); build the ids from these embeddings"
            )
    if model is not None:
        if ids is None:
            raise ArtifactError("--model needs --ids: the NCI model decodes the ids it was trained on")
        if not (model / "encoder").is_dir():
            raise ArtifactError(
                f"{model}: not an NCI model directory (no encoder/); train one with `nci train`"
            )
        _check_model_matches_ids(model, ids, sem)


def _write_documents(out: Path, corpus: dict[str, dict[str, str]], doc_ids: list[str]) -> None:
    with open(out / R.DOCUMENTS, "w") as f:
        for doc_id, doc in corpus.items():
            f.write(json.dumps({"_id": doc_id, "title": doc["title"], "text": doc["text"]}) + "\n")
    (out / R.DOC_IDS).write_text("\n".join(doc_ids) + "\n")


def _place_query_encoder(out: Path, source: Any, emb_cfg: dict[str, Any], has_model: bool) -> dict[str, Any]:
    """The query encoder: the NCI model's own encoder when it is the same network, else a copy.
    Returns the manifest's ``query_encoder`` entry."""
    from nci.encoder import load_encoder

    log.info("query encoder: %s", source)
    tokenizer, encoder = load_encoder(source)
    encoder_dir = R.ENCODER
    shared = has_model and _save_and_compare(tokenizer, encoder, out / R.ENCODER, out / R.MODEL / "encoder")
    if shared:
        shutil.rmtree(out / R.ENCODER)
        encoder_dir = f"{R.MODEL}/encoder"
        log.info("the NCI model's encoder is the embedding encoder: shared")
    elif not has_model:
        tokenizer.save_pretrained(out / R.ENCODER)
        encoder.save_pretrained(out / R.ENCODER)
    return {
        "path": encoder_dir,
        "pooling": emb_cfg.get("pooling", "mean"),
        "max_length": int(emb_cfg.get("max_length", 256)),
        "source": str(source),
    }


def _check_model_matches_ids(model: Path, ids: Path, sem: Any) -> None:
    """A model decodes the ids it was trained on: check k and depth, and the ids' hash when the
    model's manifest records it."""
    try:
        cfg = json.loads((model / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{model / 'config.json'}: cannot read the model config ({e})") from e
    if cfg.get("k") != sem.k or int(cfg.get("max_depth", 0)) < sem.max_depth:
        raise ArtifactError(
            f"{model}: trained for k={cfg.get('k')}, max_depth={cfg.get('max_depth')}, but {ids} has "
            f"k={sem.k}, max_depth={sem.max_depth}; pass the ids the model was trained with"
        )
    if (model / "manifest.json").is_file():
        recorded = (read_manifest(model).get("inputs") or {}).get("ids", {}).get("sha256")
        if recorded and recorded != fingerprint(ids):
            raise ArtifactError(
                f"{model}: trained on other semantic ids than {ids} (manifest hash differs); "
                "pass the ids the model was trained with"
            )


def _save_and_compare(tokenizer: Any, encoder: Any, dst: Path, model_encoder: Path) -> bool:
    """Save the embedding encoder to ``dst``; True when ``model_encoder`` has the same weights."""
    tokenizer.save_pretrained(dst)
    encoder.save_pretrained(dst)
    try:
        return _same_weights(dst, model_encoder)
    except Exception as e:  # a model encoder in another format just means: keep our own copy
        log.info("could not compare the model's encoder with the embedding encoder (%s); keeping a copy", e)
        return False


# --- CLI -------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="assemble an index directory")
    b.add_argument("--data", required=True, type=Path, help="prepared dataset (BEIR layout)")
    b.add_argument("--embeddings", required=True, type=Path, help="nci embed output")
    b.add_argument("--ids", type=Path, default=None, help="nci ids build output (needed for the nci method)")
    b.add_argument("--model", type=Path, default=None, help="nci train output (needed for the nci method)")
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--pq-m", type=int, default=None, help="PQ sub-quantizers (default dim/4)")
    b.add_argument("--copy", action="store_true", help="copy large inputs instead of hard-linking them")
    b.add_argument(
        "--sentence-max-docs",
        type=int,
        default=IndexConfig.sentence_max_docs,
        help="build dense-sentences and bm25-sentences only for corpora up to this many documents "
        "(default %(default)s; 0: never)",
    )
    b.add_argument(
        "--fusion",
        type=Path,
        default=None,
        metavar="DATA",
        help="fit the fusion method (NCI + dense + BM25) on DATA's validation queries: its dev split, "
        "else the training queries nci train held out (needs --ids and --model)",
    )
    b.add_argument("--overwrite", action="store_true")
    i = sub.add_parser("info", help="print an index's manifest summary")
    i.add_argument("index", type=Path)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Build and inspect index directories.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.command == "build":
        config = IndexConfig(pq_m=args.pq_m, link=not args.copy, sentence_max_docs=args.sentence_max_docs)
        build_index(
            args.data,
            args.embeddings,
            args.out,
            ids=args.ids,
            model=args.model,
            config=config,
            overwrite=args.overwrite,
            fusion=args.fusion,
        )
        return 0
    index = R.load_index(args.index)
    print(
        json.dumps(
            {
                "path": str(index.path),
                "documents": len(index.doc_ids),
                "methods": {m: (reason or "available") for m, reason in index.methods().items()},
                "size_bytes": {m: index.size_bytes(m) for m, reason in index.methods().items() if not reason},
                "query_encoder": index.manifest.get("query_encoder"),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    from nci.cli import setup_logging

    setup_logging()
    sys.exit(main())
