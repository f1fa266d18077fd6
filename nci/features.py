"""Model inputs for training: cached frozen encoder states, or token ids for a trainable encoder.

With a frozen encoder (or only its top layers trained) every training input passes through the
same frozen layers each epoch, so their token states are computed once, stored as float16 in
memory-mapped ``.npy`` shards under the run's ``cache/``, and reused across epochs, on
``--resume`` and on reruns. Shards are keyed by each text's hash and record the encoder's
fingerprint, the layer the states come from and the token limit, so a stale state is never read
and a rerun with one more pseudo-query source computes only the new texts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nci.manifest import write_json_atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 2


class FeatureStore:
    """Frozen token states (float16) of a list of texts, read from one or more cache shards.

    Text ``i`` lives in shard ``shard[i]`` at row ``row[i]``; each shard is a memory-mapped
    ``[n, max_length, hidden]`` array, zero beyond each input's ``lengths[i]`` tokens.
    """

    kind = "states"

    def __init__(self, shards: list[np.ndarray], shard: np.ndarray, row: np.ndarray, lengths: np.ndarray):
        self.shards, self.shard, self.row, self.lengths = shards, shard, row, lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: np.ndarray, device: torch.device | str) -> dict[str, torch.Tensor]:
        """``states`` [B, L, hidden] float32 and ``attention_mask`` [B, L], L = longest in batch."""
        index = np.asarray(index)
        length = int(self.lengths[index].max())
        out = np.empty((len(index), length, self.shards[0].shape[2]), dtype=np.float16)
        for s in np.unique(self.shard[index]):
            pos = np.flatnonzero(self.shard[index] == s)
            rows = self.row[index[pos]]
            order = np.argsort(rows)  # sorted reads from the memory map
            out[pos[order]] = self.shards[s][rows[order], :length]
        mask = np.arange(length)[None, :] < self.lengths[index][:, None]
        return {
            "states": torch.from_numpy(out).to(device).float(),
            "attention_mask": torch.from_numpy(mask).to(device).long(),
        }


class TokenStore:
    """Token ids for training the whole encoder (nothing frozen to cache)."""

    kind = "tokens"

    def __init__(self, input_ids: np.ndarray, lengths: np.ndarray):
        self.input_ids, self.lengths = input_ids, lengths

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, index: np.ndarray, device: torch.device | str) -> dict[str, torch.Tensor]:
        index = np.asarray(index)
        length = int(self.lengths[index].max())
        ids = self.input_ids[index, :length]
        mask = np.arange(length)[None, :] < self.lengths[index][:, None]
        return {
            "input_ids": torch.from_numpy(ids.astype(np.int64)).to(device),
            "attention_mask": torch.from_numpy(mask).to(device).long(),
        }


def tokenize_all(tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 1024) -> TokenStore:
    ids = np.zeros((len(texts), max_length), dtype=np.int32)
    lengths = np.zeros(len(texts), dtype=np.int32)
    for start in range(0, len(texts), batch_size):
        enc = tokenizer(texts[start : start + batch_size], truncation=True, max_length=max_length)
        for i, row in enumerate(enc["input_ids"]):
            ids[start + i, : len(row)] = row
            lengths[start + i] = len(row)
    return TokenStore(ids, lengths)


def _digests(texts: list[str]) -> np.ndarray:
    return np.array([hashlib.sha1(t.encode()).digest() for t in texts], dtype="S20")


def cached_states(
    model: Any,
    texts: list[str],
    cache_dir: Path,
    encoder_fingerprint: str,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    compute: bool = True,
    progress: bool = True,
) -> FeatureStore | None:
    """Token states of ``texts`` below the model's trainable encoder layers, computed once.

    The cache holds shards of states keyed by the texts' hashes: a later run computes only the
    texts no shard has (a new pseudo-query source, say). Shards of another encoder, layer or
    token limit are deleted. Returns None when ``compute`` is False and texts are missing
    (other ranks wait for rank 0).
    """
    cache_dir = Path(cache_dir)
    wanted = {
        "version": CACHE_VERSION,
        "encoder_fingerprint": encoder_fingerprint,
        "split_layer": model.split_layer,
        "max_length": model.config.max_length,
        "hidden": model.config.encoder_hidden,
    }
    digests = _digests(texts)
    shards, where = _open_shards(cache_dir, wanted, delete_stale=compute)
    missing = [i for i, d in enumerate(digests) if d not in where]
    if missing:
        if not compute:
            return None
        todo = sorted({digests[i]: i for i in missing}.values())  # each missing text once
        log.info("computing encoder states for %d of %d texts (the others are cached)", len(todo), len(texts))
        _write_shard(
            model, [texts[i] for i in todo], digests[todo], cache_dir, wanted, device, batch_size, progress
        )
        shards, where = _open_shards(cache_dir, wanted, delete_stale=False)
    else:
        log.info("reusing cached encoder states for all %d texts", len(texts))
    loc = np.array([where[d] for d in digests], dtype=np.int64).reshape(-1, 2)
    lengths = np.array([shards[s][1][r] for s, r in loc], dtype=np.int64)
    return FeatureStore([states for states, _ in shards], loc[:, 0], loc[:, 1], lengths)


def _open_shards(cache_dir: Path, wanted: dict[str, Any], delete_stale: bool):
    """Matching shards as (states memmap, lengths), and digest -> (shard, row)."""
    shards, where = [], {}
    for meta_path in sorted(cache_dir.glob("features-*.json")):
        stem = str(meta_path)[: -len(".json")]
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            meta = {}
        if any(meta.get(k) != v for k, v in wanted.items()):
            if delete_stale:  # another encoder or layout: gigabytes nobody will read
                for f in cache_dir.glob(f"{Path(stem).name}.*"):
                    f.unlink()
            continue
        states = np.load(f"{stem}.states.npy", mmap_mode="r")
        lengths = np.load(f"{stem}.lengths.npy")
        for row, digest in enumerate(np.load(f"{stem}.digests.npy")):
            where.setdefault(digest, (len(shards), row))
        shards.append((states, lengths))
    return shards, where


def _write_shard(model, texts, digests, cache_dir, meta, device, batch_size, progress) -> None:
    cache_dir.mkdir(parents=True, exist_ok=True)
    for leftover in cache_dir.glob("features-*.tmp.npy"):  # from a killed run
        leftover.unlink()
    stem = cache_dir / f"features-{hashlib.sha1(digests.tobytes()).hexdigest()[:16]}"
    tokens = tokenize_all(model.tokenizer, texts, model.config.max_length)
    tmp = Path(f"{stem}.states.tmp.npy")
    states = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.float16, shape=(len(texts), model.config.max_length, meta["hidden"])
    )
    order = np.argsort(-tokens.lengths, kind="stable")  # similar lengths together: less padding
    model.eval()
    with torch.inference_mode():
        for start in tqdm(
            range(0, len(texts), batch_size),
            desc="caching encoder states",
            unit="batch",
            disable=not progress,
            mininterval=1.0 if _tty() else 30.0,
        ):
            index = order[start : start + batch_size]
            batch = tokens.batch(index, device)
            out = model.lower_states(batch["input_ids"], batch["attention_mask"])
            out = out.masked_fill(~batch["attention_mask"].bool()[..., None], 0.0)
            states[index, : out.shape[1]] = out.to(torch.float16).cpu().numpy()
    states.flush()
    del states
    np.save(f"{stem}.lengths.npy", tokens.lengths)
    np.save(f"{stem}.digests.npy", digests)
    os.replace(tmp, f"{stem}.states.npy")
    # the metadata last: a shard without it is unfinished and ignored
    write_json_atomic(Path(f"{stem}.json"), {**meta, "inputs": len(texts)})


def _tty() -> bool:
    import sys

    return sys.stderr.isatty()
