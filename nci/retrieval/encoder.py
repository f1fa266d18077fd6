"""The query encoder of dense methods: the BERT that embedded the documents, used on queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class QueryEncoder:
    """The BERT that embedded the documents, used on queries (same pooling, L2-normalised)."""

    def __init__(self, path: Path, pooling: str = "mean", max_length: int = 256, batch_size: int = 64):
        from nci.encoder import load_encoder

        self.path = Path(path)
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.tokenizer, self.model = load_encoder(self.path)
        self.model.eval()

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        import torch

        from nci.embed import encode_texts

        with torch.inference_mode():
            vecs = encode_texts(
                texts,
                self.tokenizer,
                self.model,
                pooling=self.pooling,
                max_length=self.max_length,
                batch_size=self.batch_size,
                progress=progress,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)
