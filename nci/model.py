"""The NCI model: a pretrained BERT encoder and a prefix-aware docid decoder trained from scratch.

Wang et al., "A Neural Corpus Indexer for Document Retrieval" (NeurIPS 2022), section 3:

- The **encoder** is a pretrained BERT (here all-MiniLM-L6-v2 by default; any Hugging Face encoder
  directory). Its token states, projected to the decoder width, are the decoder's memory.
- The **decoder** writes a document's semantic id one digit at a time. Tokens are position-specific:
  digit ``d`` at position ``t`` is token ``t*k + d + 2`` (0 = pad, also used as the start input;
  1 = END), defined in ``nci.semantic_ids``.
- The **prefix-aware weight-adaptive (PAWA) output layer** (section 3.3): the meaning of a digit
  depends on the digits above it, so a small transformer reads the prefix and, per position, emits a
  ``d x V`` weight delta that is added to the shared output projection. Each prefix gets its own
  output layer.

Only the ``k + 1`` tokens that can occur at a position (its ``k`` digit tokens and END) are ever
scored, so the decoder's logits are *compact*: ``[..., k + 1]``, index ``j < k`` is digit ``j`` of the
current position and index ``k`` is END (``choice_tokens`` lists these tokens, ``choice_labels``
maps tokens to these indices). The PAWA delta is then ``d x (k + 1)`` per position instead of
``d x V``, the same model restricted to the tokens that matter.

An optional **centroid prior** (not in the paper) adds ``scale * <q, w[node, j]>`` to digit ``j``'s
logit, where ``q`` is the mean-pooled, normalised query memory and ``w[node]`` is a trainable table
per trie node initialised with the normalised k-means centroids of the node's children. The untrained
model then descends the docid tree like dense retrieval does, and training corrects it.

Inference (``encode``, ``decode_step``, ``decoder_states``) runs under ``torch.inference_mode()``,
with bf16 autocast on CUDA; the constrained beam search itself is ``nci.decoding``. The code follows
nanoGPT: one config dataclass, small modules, a checkpoint format (``config.json`` +
``model.safetensors`` + ``encoder/``) from which the model rebuilds itself without unpickling
anything.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nci.manifest import load_config, save_config
from nci.semantic_ids import END, PAD, choice_tokens, digit_to_token, vocab_size

START = PAD  # the decoder's first input: the pad token, as in T5
MODEL_FILE = "model.safetensors"
ENCODER_DIR = "encoder"


@dataclass(frozen=True)
class NCIConfig:
    k: int  # digits per position (k-means branching factor)
    max_depth: int  # longest semantic id, in digits
    n_nodes: int = 0  # trie nodes; only the centroid prior needs it
    encoder_hidden: int = 384  # width of the encoder's token states
    encoder_layers: int = 6
    # Encoder layers trained on top of cached frozen states: 0 = frozen encoder, -1 = all (full
    # fine-tuning, embeddings included). Inference always runs the whole encoder.
    encoder_trainable_layers: int = 0
    max_length: int = 64  # query tokens
    d_model: int = 384
    n_heads: int = 6
    n_layers: int = 3
    d_ff: int = 1536
    pawa: bool = True  # False: one shared output layer (the paper's ablation)
    pawa_layers: int = 1
    dropout: float = 0.1
    centroid_prior: bool = False

    @property
    def n_positions(self) -> int:
        """Decoder positions: ``max_depth`` digits and END."""
        return self.max_depth + 1

    @property
    def vocab_size(self) -> int:
        """Rows of the token embedding and output tables (``nci.semantic_ids.vocab_size``)."""
        return vocab_size(self.k, self.max_depth)


def choice_labels(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Map docid tokens ``[..., T]`` (position t in the last axis) to compact indices, the
    columns of ``choice_tokens``: digit -> 0..k-1, END -> k, PAD -> -100 (ignored by the loss)."""
    t = torch.arange(tokens.shape[-1], device=tokens.device)
    labels = tokens - digit_to_token(t, 0, k)
    labels = torch.where(tokens == END, torch.full_like(tokens, k), labels)
    return torch.where(tokens == PAD, torch.full_like(tokens, -100), labels)


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; nothing elsewhere (bf16 did not pay off on the CPUs we measured)."""
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Decoder building blocks. Activations carry a beam axis: [B, N, T, d] (N = 1 in training), so the
# same code serves teacher forcing and batched beam search without repeating the encoder memory.


def pooled_query(memory: torch.Tensor, memory_mask: torch.Tensor) -> torch.Tensor:
    """The unit-length mean of a query's memory ``[B, L, d]`` over its tokens: with the encoder's
    own width, its sentence embedding, in the space of the documents' embeddings."""
    m = memory_mask.unsqueeze(-1).to(memory.dtype)
    return F.normalize((memory * m).sum(1) / m.sum(1).clamp(min=1.0), dim=-1)


class SelfAttention(nn.Module):
    """Causal self-attention over the docid prefix, with a key/value cache for decoding."""

    def __init__(self, cfg: NCIConfig):
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, N, T, d = x.shape
        q, k, v = self.qkv(x).view(B * N, T, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            # one new position attending to all earlier ones: no mask needed
            assert T == 1, "with a cache, feed one new position at a time"
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=past is None and T > 1
        )
        y = y.transpose(1, 2).reshape(B, N, T, d)
        return self.resid_dropout(self.proj(y)), (k, v)


class CrossAttention(nn.Module):
    """Attention from docid positions to the query's token states.

    Keys and values are computed once per query; the beams of a query are folded into the query
    length axis, so they share one copy of the memory.
    """

    def __init__(self, cfg: NCIConfig):
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, L, d = memory.shape
        k, v = self.kv(memory).view(B, L, 2, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        return k, v  # [B, h, L, dh]

    def forward(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor
    ) -> torch.Tensor:
        B, N, T, d = x.shape
        q = self.q(x).view(B, N * T, self.n_heads, d // self.n_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q, kv[0], kv[1], attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, N, T, d)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: NCIConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block; with ``cross=False`` it is the PAWA prefix transformer's block."""

    def __init__(self, cfg: NCIConfig, cross: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model) if cross else None
        self.cross = CrossAttention(cfg) if cross else None
        self.ln_3 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)

    def forward(self, x, past=None, memory_kv=None, memory_mask=None):
        a, present = self.attn(self.ln_1(x), past)
        x = x + a
        if self.cross is not None:
            x = x + self.cross(self.ln_2(x), memory_kv, memory_mask)
        x = x + self.mlp(self.ln_3(x))
        return x, present


@dataclass
class DecoderCache:
    """What decoding keeps between steps: the memory's keys/values per decoder layer (once per
    query), the past keys/values of every self-attention layer (per beam), and the pooled query."""

    memory_kv: list[tuple[torch.Tensor, torch.Tensor]]  # [B, h, L, dh]
    memory_mask: torch.Tensor  # [B, 1, 1, L] bool, True = attend
    query: torch.Tensor | None  # [B, d] for the centroid prior
    past: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # [B*N, h, t, dh]
    length: int = 0  # decoder inputs consumed so far (start input included)
    beams: int = 1

    def select(self, parent: torch.Tensor) -> DecoderCache:
        """Keep the past of the beams in ``parent`` ([B, N'] indices into the current N beams)."""
        if self.past is None:
            return dataclasses.replace(self, beams=parent.shape[1])
        B, N = parent.shape
        rows = (parent + torch.arange(B, device=parent.device)[:, None] * self.beams).reshape(-1)
        past = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.past]
        return dataclasses.replace(self, past=past, beams=N)


# ---------------------------------------------------------------------------------------------


class NCIModel(nn.Module):
    """Encoder + PAWA docid decoder. ``tokenizer`` travels with the model for ``tokenize``."""

    def __init__(self, config: NCIConfig, encoder: nn.Module, tokenizer: Any = None):
        super().__init__()
        cfg = self.config = config
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model {cfg.d_model} is not a multiple of n_heads {cfg.n_heads}")
        if not -1 <= cfg.encoder_trainable_layers <= cfg.encoder_layers:
            raise ValueError(
                f"encoder_trainable_layers must be -1 (all) or 0..{cfg.encoder_layers}, "
                f"got {cfg.encoder_trainable_layers}"
            )
        self.encoder = encoder
        self.tokenizer = tokenizer
        # BERT width -> decoder width (no projection when they agree, so the pooled memory is the
        # encoder's own sentence embedding, which the centroid prior relies on)
        self.proj = (
            nn.Identity() if cfg.encoder_hidden == cfg.d_model else nn.Linear(cfg.encoder_hidden, cfg.d_model)
        )
        self.memory_ln = nn.LayerNorm(cfg.d_model)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.n_positions, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg, cross=True) for _ in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        # the shared output projection (rows = tokens) ...
        self.out_weight = nn.Parameter(torch.empty(cfg.vocab_size, cfg.d_model))
        self.out_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        # ... and PAWA: a transformer over the prefix whose state emits a d x (k+1) weight delta
        if cfg.pawa:
            self.pawa_blocks = nn.ModuleList([Block(cfg, cross=False) for _ in range(cfg.pawa_layers)])
            self.pawa_ln = nn.LayerNorm(cfg.d_model)
            self.pawa_out = nn.Linear(cfg.d_model, (cfg.k + 1) * cfg.d_model)
        if cfg.centroid_prior:
            if cfg.n_nodes <= 0:
                raise ValueError("centroid_prior needs n_nodes (the trie's node count)")
            self.node_weight = nn.Parameter(torch.zeros(cfg.n_nodes, cfg.k, cfg.d_model))
            self.node_scale = nn.Parameter(torch.tensor(20.0))
        self.register_buffer(
            "choices", torch.from_numpy(choice_tokens(cfg.k, cfg.n_positions)), persistent=False
        )
        self._init_decoder()

    def _init_decoder(self) -> None:
        # GPT-2 / nanoGPT initialisation for everything outside the pretrained encoder
        for name, module in self.named_modules():
            if name.startswith("encoder"):
                continue
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if not name.startswith("encoder") and name.endswith("proj.weight") and "blocks" in name:
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * (self.config.n_layers + self.config.pawa_layers)))
        nn.init.normal_(self.out_weight, std=0.02)
        if self.config.pawa:
            # the delta is a d x (k+1) matrix per position: keep h . delta on the scale of h . W
            nn.init.normal_(self.pawa_out.weight, std=0.02 / math.sqrt(self.config.d_model))

    def init_centroid_prior(self, centroids: np.ndarray, trie: Any) -> None:
        """Set each node's output weights to the normalised k-means centroids of its children."""
        if not self.config.centroid_prior:
            raise ValueError("the model was built without centroid_prior")
        centroids = torch.from_numpy(np.array(centroids, dtype=np.float32))  # a copy: ids may be mapped
        child = torch.as_tensor(np.asarray(trie.child), dtype=torch.long)
        if centroids.shape != (self.config.n_nodes, self.config.d_model):
            raise ValueError(
                f"centroids have shape {tuple(centroids.shape)}, expected "
                f"({self.config.n_nodes}, {self.config.d_model}): the prior needs d_model equal to "
                "the embedding width used to build the ids"
            )
        w = F.normalize(centroids, dim=-1)[child.clamp(min=0)] * (child >= 0).unsqueeze(-1)
        with torch.no_grad():
            self.node_weight.copy_(w)

    # -- encoder -----------------------------------------------------------------------------

    def tokenize(self, texts: list[str], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        device = device or self.device
        return {
            "input_ids": batch["input_ids"].to(device),
            "attention_mask": batch["attention_mask"].to(device),
        }

    @property
    def device(self) -> torch.device:
        return self.out_weight.device

    @property
    def split_layer(self) -> int:
        """Index of the first encoder layer that ``encode_top`` runs (= layers below are frozen)."""
        n = self.config.encoder_trainable_layers
        return 0 if n < 0 else self.config.encoder_layers - n

    def lower_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Token states below the trainable top layers: what training caches once per input."""
        if self.config.encoder_trainable_layers < 0:
            raise ValueError("with the whole encoder trainable there are no frozen states to cache")
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=self.config.encoder_trainable_layers > 0,
        )
        if self.config.encoder_trainable_layers == 0:
            return out.last_hidden_state
        return out.hidden_states[self.split_layer]

    def encode_top(
        self, states: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the trainable top encoder layers over ``states`` and project to the decoder width."""
        if self.config.encoder_trainable_layers > 0:
            from transformers.masking_utils import create_bidirectional_mask

            mask = create_bidirectional_mask(
                config=self.encoder.config, inputs_embeds=states, attention_mask=attention_mask
            )
            for layer in self._encoder_layers()[self.split_layer :]:
                states = layer(states, attention_mask=mask)
        return self.proj(states), attention_mask.bool()

    def _encoder_layers(self) -> nn.ModuleList:
        try:
            return self.encoder.encoder.layer
        except AttributeError as e:
            raise ValueError(
                f"{type(self.encoder).__name__} has no encoder.layer list (BERT-style); use "
                "encoder_trainable_layers 0 or -1 with this encoder"
            ) from e

    def encode_train(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """Encode with gradients, whatever part of the encoder is trainable."""
        if self.config.encoder_trainable_layers < 0:
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return self.encode_top(states, attention_mask)
        return self.encode_top(self.lower_states(input_ids, attention_mask), attention_mask)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(memory [B, L, d_model], memory_mask [B, L] bool)`` for tokenised queries."""
        with torch.inference_mode(), autocast(input_ids.device):
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            memory, mask = self.proj(states), attention_mask.bool()
        return memory.float(), mask

    # -- decoder -----------------------------------------------------------------------------

    def start(self, memory: torch.Tensor, memory_mask: torch.Tensor) -> DecoderCache:
        """Per-query decoder state: cross-attention keys/values and the pooled query."""
        query = pooled_query(memory, memory_mask) if self.config.centroid_prior else None
        memory = self.memory_ln(memory)
        return DecoderCache(
            memory_kv=[block.cross.memory_kv(memory) for block in self.blocks],
            memory_mask=memory_mask[:, None, None, :],
            query=query,
        )

    def _run(self, inputs: torch.Tensor, cache: DecoderCache, use_past: bool, pawa: bool = True):
        """Decoder and (with ``pawa``) PAWA transformer over ``inputs`` [B, N, T] starting at
        ``cache.length``."""
        T = inputs.shape[-1]
        pos = torch.arange(cache.length, cache.length + T, device=inputs.device)
        x = self.drop(self.tok_emb(inputs) + self.pos_emb(pos))
        past = cache.past if use_past else None
        presents = []
        h = x
        for i, block in enumerate(self.blocks):
            h, present = block(h, past[i] if past else None, cache.memory_kv[i], cache.memory_mask)
            presents.append(present)
        p = None
        if self.config.pawa and pawa:
            p = x
            for j, block in enumerate(self.pawa_blocks):
                p, present = block(p, past[len(self.blocks) + j] if past else None)
                presents.append(present)
            p = self.pawa_ln(p)
        return self.ln_f(h), p, pos, presents

    def _logits(self, h, p, pos, nodes, query) -> torch.Tensor:
        """Compact logits [B, N, T, k+1] from decoder states h and PAWA states p."""
        B, N, T, d = h.shape
        tokens = self.choices[pos]  # [T, k+1]
        weight = self.out_weight[tokens]  # shared output projection, valid rows only
        logits = torch.einsum("bntd,tjd->bntj", h, weight) + self.out_bias[tokens]
        if p is not None:
            delta = self.pawa_out(p).view(B, N, T, self.config.k + 1, d)  # the prefix's own weights
            logits = logits + torch.einsum("bntd,bntjd->bntj", h, delta)
        if self.config.centroid_prior:
            if nodes is None:
                raise ValueError("a model with centroid_prior needs the trie node of each prefix")
            prior = self.node_scale * torch.einsum("bd,bntjd->bntj", query, self.node_weight[nodes])
            logits = logits + F.pad(prior, (0, 1))  # END gets no prior
        return logits

    def forward(
        self,
        memory: torch.Tensor,
        memory_mask: torch.Tensor,
        targets: torch.Tensor,
        nodes: torch.Tensor | None = None,
        passes: int = 1,
    ) -> torch.Tensor:
        """Teacher forcing: compact logits ``[B, T, k+1]`` for docid tokens ``targets`` [B, T]
        (digits, END, then PAD). ``nodes`` [B, T]: trie node of each position's prefix, needed
        only with the centroid prior. Labels: ``choice_labels(targets, k)``.

        ``passes > 1`` runs the decoder that many times over one copy of the memory (R-drop's
        passes differ only in their dropout masks) and returns ``[passes * B, T, k+1]``, pass by
        pass."""
        B, T = targets.shape
        inputs = torch.cat([targets.new_full((B, 1), START), targets[:, :-1]], 1)
        inputs = inputs[:, None].expand(B, passes, T)
        cache = self.start(memory, memory_mask)
        h, p, pos, _ = self._run(inputs, cache, use_past=False)
        nodes = None if nodes is None else nodes[:, None].expand(B, passes, T)
        logits = self._logits(h, p, pos, nodes, cache.query)  # [B, passes, T, k+1]
        return logits.transpose(0, 1).reshape(passes * B, T, -1)

    def prefix_weights(self, targets: torch.Tensor, position: int | None = None) -> torch.Tensor:
        """The PAWA weight delta ``[B, T, k+1, d]`` each position's prefix produces, or with
        ``position`` only that position's ``[B, k+1, d]`` (the output layer, the costly part, runs
        on that position alone)."""
        B, T = targets.shape
        inputs = torch.cat([targets.new_full((B, 1), START), targets[:, :-1]], 1)
        x = self.tok_emb(inputs) + self.pos_emb(torch.arange(T, device=targets.device))
        p = x[:, None]
        for block in self.pawa_blocks:
            p, _ = block(p)
        p = self.pawa_ln(p)[:, 0]  # [B, T, d]
        if position is not None:
            return self.pawa_out(p[:, position]).view(B, self.config.k + 1, -1)
        return self.pawa_out(p).view(B, T, self.config.k + 1, -1)

    def decode_step(
        self,
        memory: torch.Tensor | None,
        memory_mask: torch.Tensor | None,
        prefix: torch.Tensor,
        cache: DecoderCache | None = None,
        nodes: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DecoderCache]:
        """One decoding step for ``N`` beams per query.

        ``memory`` [B, L, d] / ``memory_mask`` [B, L] are per query, not repeated per beam (they are
        only read when ``cache`` is None). ``prefix`` [B, N, t]: docid tokens written so far.
        ``cache``: from the previous step (already ``select``-ed to these beams), or None to run the
        whole prefix. ``nodes`` [B, N]: trie node of each prefix (centroid prior only).
        Returns log-probabilities ``[B, N, k+1]`` over position t's digits and END (unconstrained),
        and the cache to pass to the next step.
        """
        with torch.inference_mode(), autocast(prefix.device):
            B, N, t = prefix.shape
            if cache is None:
                cache = self.start(memory, memory_mask)
                inputs = torch.cat([prefix.new_full((B, N, 1), START), prefix], 2)
            else:
                if cache.length != t:
                    raise ValueError(f"cache holds {cache.length} positions, prefix has {t} tokens")
                inputs = prefix[:, :, -1:] if t else prefix.new_full((B, N, 1), START)
            use_past = cache.past is not None
            h, p, pos, presents = self._run(inputs, dataclasses.replace(cache, length=cache.length), use_past)
            last = slice(-1, None)
            logits = self._logits(
                h[:, :, last],
                None if p is None else p[:, :, last],
                pos[last],
                None if nodes is None else nodes[:, :, None],
                cache.query,
            )[:, :, 0]
            new_cache = dataclasses.replace(cache, past=presents, length=t + 1, beams=N)
            return F.log_softmax(logits.float(), dim=-1), new_cache

    def decoder_states(self, inputs: torch.Tensor, cache: DecoderCache) -> tuple[torch.Tensor, DecoderCache]:
        """One step of the decoder stack alone (no PAWA transformer, no output layer), for
        ``nci.decoding``, which holds each prefix's PAWA output layer per trie node.

        ``inputs`` [B, N, 1]: each beam's last docid token (START at the first step); ``cache``
        already ``select``-ed to these N beams. Returns the final states ``[B, N, 1, d]`` and the
        cache for the next step."""
        with torch.inference_mode():
            h, _, _, presents = self._run(inputs, cache, use_past=cache.past is not None, pawa=False)
            return h, dataclasses.replace(
                cache, past=presents, length=cache.length + 1, beams=inputs.shape[1]
            )

    # -- saving and loading ------------------------------------------------------------------

    def decoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Everything but the encoder (which is saved in its own folder)."""
        return {n: t for n, t in self.state_dict().items() if not n.startswith("encoder.")}

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and ``encoder/`` (weights + tokenizer)."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_config(directory, self.config)
        tensors = {n: t.detach().to("cpu").contiguous() for n, t in self.decoder_state_dict().items()}
        save_file(tensors, str(directory / MODEL_FILE), metadata={"format": "pt"})
        self.encoder.save_pretrained(directory / ENCODER_DIR)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory / ENCODER_DIR)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: torch.device | str = "cpu") -> NCIModel:
        """Rebuild a saved model (no pickle: JSON config, safetensors weights)."""
        from safetensors.torch import load_file
        from transformers import AutoModel, AutoTokenizer

        directory = Path(directory)
        if not (directory / MODEL_FILE).is_file():
            raise FileNotFoundError(
                f"{directory / MODEL_FILE}: missing; is {directory} an NCI model directory?"
            )
        config = load_config(directory, NCIConfig)
        encoder = AutoModel.from_pretrained(directory / ENCODER_DIR)
        tokenizer = AutoTokenizer.from_pretrained(directory / ENCODER_DIR)
        model = cls(config, encoder, tokenizer)
        model.load_decoder_state(load_file(str(directory / MODEL_FILE)), source=directory / MODEL_FILE)
        return model.to(device).eval()

    def load_decoder_state(self, state: dict[str, torch.Tensor], source: Any = "state") -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [n for n in missing if not n.startswith("encoder.")]
        if missing or unexpected:
            raise ValueError(
                f"{source}: does not match config.json (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
