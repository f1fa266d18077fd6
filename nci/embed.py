"""Document embeddings with a BERT encoder (``nci embed``).

Writes ``embeddings.npy`` (float32, L2-normalised, one row per document in corpus order),
``doc_ids.txt`` and a manifest. Work is done in chunks kept in ``<out>.partial/``: a killed run
started again with the same settings skips the chunks it already finished. The chunks can be
split across processes or machines: ``--shard I/N`` computes one disjoint share of them and
``--merge`` assembles the output, the same as a single run's (``nci.shards``; under torchrun
each rank takes its share and rank 0 merges).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from nci.encoder import DEFAULT_ENCODER, load_encoder, pool, resolve_encoder
from nci.manifest import ArtifactError, Timer, atomic_output_dir, fingerprint, write_manifest
from nci.shards import (
    Shard,
    add_shard_arguments,
    barrier,
    check_complete,
    launched,
    open_partial,
    stops_after_its_chunks,
    temporary_name,
    threads_per_process,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedConfig:
    model: str = DEFAULT_ENCODER
    pooling: str = "mean"
    max_length: int = 256
    batch_size: int = 32
    chunk_size: int = 512

    def __post_init__(self) -> None:
        if self.pooling not in {"mean", "cls"}:
            raise ValueError(f"pooling must be 'mean' or 'cls', got '{self.pooling}'")
        if self.max_length < 8 or self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError("max_length must be >= 8, batch_size and chunk_size >= 1")


@torch.inference_mode()
def encode_texts(
    texts: Sequence[str],
    tokenizer,
    model,
    pooling: str = "mean",
    max_length: int = 256,
    batch_size: int = 32,
    progress: bool = False,
) -> np.ndarray:
    """Pooled, L2-normalised float32 vectors for ``texts``, in input order.

    Texts are batched by length so that little time goes into padding.
    """
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    dim = model.config.hidden_size
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), desc="encode", disable=not progress):
        idx = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in idx],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        out[idx] = pool(hidden, batch["attention_mask"], pooling).cpu().numpy()
    return out


def embed_corpus(
    data_dir: Path,
    out: Path,
    config: EmbedConfig,
    overwrite: bool = False,
    shard: Shard | None = None,
    merge: bool = False,
) -> Path | None:
    """Embed every document of a prepared dataset into ``out``.

    With ``shard``, compute only that shard's chunks into ``<out>.partial/`` and return None
    (under torchrun, rank 0 then merges and returns ``out``); with ``merge``, compute nothing
    and assemble ``out`` from the chunks the shards wrote (see :mod:`nci.shards`)."""
    from nci.data import document_text, load_corpus

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    corpus = load_corpus(data_dir)
    doc_ids = list(corpus)
    texts = [document_text(corpus[d]) for d in doc_ids]
    source = resolve_encoder(config.model)

    plan = {"config": asdict(config), "data": fingerprint(data_dir), "documents": len(doc_ids)}
    partial = open_partial(out.with_name(out.name + ".partial"), plan, shard, merge)
    starts = range(0, len(texts), config.chunk_size)
    with Timer() as timer:
        if not merge:
            _embed_chunks(partial, texts, starts, config, source, shard)
        barrier(shard)  # under torchrun: every rank's chunks are written
        if stops_after_its_chunks(shard, partial, len(starts)):
            return None
        check_complete(partial, [_chunk(partial, s).is_file() for s in starts], shard)
        embeddings = np.concatenate([np.load(_chunk(partial, s)) for s in starts])
    with atomic_output_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "embeddings.npy", embeddings)
        (tmp / "doc_ids.txt").write_text("\n".join(doc_ids) + "\n")
        write_manifest(
            tmp,
            stage="embed",
            config=config,
            inputs={"data": data_dir},
            counts={"documents": len(doc_ids), "dimension": int(embeddings.shape[1])},
            wall_seconds=timer.seconds,
            extra={"model_source": source},
        )
    shutil.rmtree(partial, ignore_errors=True)
    log.info("%d x %d embeddings in %.1f s -> %s", *embeddings.shape, timer.seconds, out)
    return out


def _chunk(partial: Path, start: int) -> Path:
    return partial / f"chunk-{start:08d}.npy"


def _embed_chunks(
    partial: Path, texts: list[str], starts: range, config: EmbedConfig, source: str, shard: Shard | None
) -> None:
    """Embed the chunks (``shard``'s only, when given) that ``partial`` does not hold yet."""
    mine = [s for c, s in enumerate(starts) if shard is None or shard.owns(c)]
    done = [s for s in mine if _chunk(partial, s).is_file()]
    if done:
        log.info("resuming: %d of %d chunks already embedded", len(done), len(mine))
    desc = "embed chunks" if shard is None else f"embed chunks (shard {shard})"
    tokenizer, model = None, None
    for start in tqdm(mine, desc=desc, unit="chunk"):
        path = _chunk(partial, start)
        if path.is_file():
            continue
        if model is None:
            tokenizer, model = load_encoder(source)
        vecs = encode_texts(
            texts[start : start + config.chunk_size],
            tokenizer,
            model,
            pooling=config.pooling,
            max_length=config.max_length,
            batch_size=config.batch_size,
        )
        tmp = temporary_name(path)
        with open(tmp, "wb") as f:
            np.save(f, vecs)
        os.replace(tmp, path)


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog, description="Embed a prepared corpus with a BERT encoder.")
    parser.add_argument("--data", type=Path, required=True, help="directory written by `nci data prepare`")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--model", default=EmbedConfig.model, help="encoder directory or name (default: packaged MiniLM)"
    )
    parser.add_argument("--pooling", choices=["mean", "cls"], default=EmbedConfig.pooling)
    parser.add_argument("--max-length", type=int, default=EmbedConfig.max_length)
    parser.add_argument("--batch-size", type=int, default=EmbedConfig.batch_size)
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=EmbedConfig.chunk_size,
        help=f"documents per resumable chunk, the unit of --shard (default {EmbedConfig.chunk_size})",
    )
    parser.add_argument("--overwrite", action="store_true")
    add_shard_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        from nci.cli import setup_logging

        setup_logging()
    torch.set_num_threads(threads_per_process())
    try:
        config = EmbedConfig(
            model=args.model,
            pooling=args.pooling,
            max_length=args.max_length,
            batch_size=args.batch_size,
            chunk_size=args.chunk_size,
        )
        with launched(args.shard, args.merge) as shard:
            embed_corpus(args.data, args.out, config, overwrite=args.overwrite, shard=shard, merge=args.merge)
    except (ValueError, ArtifactError, FileExistsError, FileNotFoundError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
