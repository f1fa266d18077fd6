"""``nci bench train``: what training costs per example, measured on a slice, and extrapolated.

``nci bench train --data DIR --out DIR [--docs 200]`` takes the first ``--docs`` documents of a
prepared dataset (pseudo-queries only: its queries are not used), and on them:

1. embeds them and builds the semantic ids (default configs), timed;
2. writes the doc-as-query pseudo-queries of each ``--windows`` length;
3. trains one epoch over the slice's pseudo-queries with each recipe, in turn: ``cpu`` (``TrainConfig``'s CPU
   defaults: frozen encoder, its states cached, batch 128) and ``cuda-path`` (the CUDA recipe's
   code path run on the CPU: the whole encoder trains from token ids, batch 256); both with the
   precision the machine gives them (bf16 where the CPU has it).

From the runs' own records (``metrics.jsonl``, ``manifest.json``) it reports examples per second
of each recipe, the encoder-state cache's seconds and bytes per 1,000 inputs, embedding seconds
per 1,000 documents, and pseudo-queries per document; and from those, the cost of training a
``--target-docs`` corpus for ``--epochs`` epochs (pseudo-queries only): embedding + caching +
epochs x inputs / examples per second. ``results.json`` and ``results.md`` go into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nci.bench.machine import machine_info
from nci.manifest import atomic_output_dir, git_commit

log = logging.getLogger(__name__)

RECIPES = ("cpu", "cuda-path")


@dataclass(frozen=True)
class TrainCostConfig:
    docs: int = 200  # documents in the slice (one epoch over their pseudo-queries is timed)
    windows: tuple[int, ...] = (64, 16)  # doc-as-query window lengths
    encoder: str | None = None  # None: the packaged MiniLM
    n_heads: int = 6  # decoder attention heads (TrainConfig's; must divide the encoder's width)
    target_docs: int = 100_000
    epochs: int = 3  # epochs of the extrapolated run (nci build's default budget plans 3)
    threads: int = 1
    recipes: tuple[str, ...] = RECIPES

    def __post_init__(self) -> None:
        if self.docs < 10 or self.target_docs < 1 or self.epochs < 1:
            raise ValueError("docs must be at least 10, target docs and epochs at least 1")
        if not self.windows or min(self.windows) < 1:
            raise ValueError(f"windows must be positive, got {self.windows}")
        unknown = set(self.recipes) - set(RECIPES)
        if unknown or not self.recipes:
            raise ValueError(f"recipes must be among {', '.join(RECIPES)}, got {', '.join(self.recipes)}")


def slice_corpus(data: Path, out: Path, docs: int) -> int:
    """The first ``docs`` documents of ``data`` as a dataset of their own (no queries)."""
    out.mkdir(parents=True)
    (out / "qrels").mkdir()
    n = 0
    with open(data / "corpus.jsonl") as src, open(out / "corpus.jsonl", "w") as dst:
        for line in src:
            if n == docs:
                break
            if line.strip():
                dst.write(line)
                n += 1
    if n < docs:
        raise ValueError(f"{data}: {n} documents, fewer than --docs {docs}")
    (out / "queries.jsonl").write_text("")
    return n


def recipe_config(name: str, cfg: TrainCostConfig) -> Any:
    from nci.train.config import TrainConfig

    common = dict(encoder=cfg.encoder, n_heads=cfg.n_heads, device="cpu", epochs=1, val_fraction=0.0)
    if name == "cpu":
        return TrainConfig(**common)
    return TrainConfig(**common, encoder_trainable_layers=-1, batch_size=256)  # what CUDA resolves to


def measure_recipe(name: str, work: Path, query_dirs: list[Path], cfg: TrainCostConfig) -> dict[str, Any]:
    """Train one epoch; examples per second of the training loop (the run's own figure:
    examples over the seconds spent in steps, caching and loading excluded)."""
    from nci.train.loop import train

    out = work / f"train-{name}"
    tcfg = recipe_config(name, cfg)
    start = time.perf_counter()
    code = train(work / "data", work / "ids", query_dirs, out, tcfg)
    wall = time.perf_counter() - start
    if code != 0:
        raise RuntimeError(f"training the {name} recipe exited with {code}")
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if not rows:
        raise RuntimeError(f"{out}: the {name} run recorded no epoch")
    figures = {
        "batch_size": manifest["config"]["batch_size"],
        "precision": manifest["config"]["precision"],
        "encoder_trainable_layers": manifest["model_config"]["encoder_trainable_layers"],
        "steps": rows[-1]["step"],
        "train_s": rows[-1]["seconds"],
        "examples_per_s": rows[-1]["examples_per_s"],
        "wall_s": round(wall, 1),
        "inputs": manifest["counts"]["unique_texts"],
    }
    cache = out / "cache"
    if name == "cpu" and cache.is_dir():
        bytes_ = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
        per_k = 1000 / figures["inputs"]
        figures["cache_s_per_1k"] = round(manifest["feature_cache_seconds"] * per_k, 2)
        figures["cache_mb_per_1k"] = round(bytes_ / 2**20 * per_k, 2)
    return figures


def extrapolate(result: dict[str, Any], cfg: TrainCostConfig) -> dict[str, Any]:
    """Hours to train ``target_docs`` documents for ``epochs`` epochs, per recipe."""
    per_doc = result["pseudo_queries_per_doc"]
    inputs = per_doc * cfg.target_docs
    embed_h = result["embed_s_per_1k_docs"] * cfg.target_docs / 1000 / 3600
    out: dict[str, Any] = {"inputs": round(inputs), "epochs": cfg.epochs, "embed_h": round(embed_h, 2)}
    for name, r in result["recipes"].items():
        train_h = cfg.epochs * inputs / r["examples_per_s"] / 3600
        cache_h = r.get("cache_s_per_1k", 0.0) * inputs / 1000 / 3600
        total_h = embed_h + cache_h + train_h
        row = {"train_h": round(train_h, 1), "cache_h": round(cache_h, 2), "total_h": round(total_h, 1)}
        if "cache_mb_per_1k" in r:
            row["cache_gb"] = round(r["cache_mb_per_1k"] * inputs / 1000 / 1024, 1)
        out[name] = row
    return out


def run_train_cost(
    data: Path, out: Path, cfg: TrainCostConfig, work: Path | None = None, command: str = ""
) -> dict[str, Any]:
    import torch

    from nci.embed import EmbedConfig, embed_corpus
    from nci.querygen import DaqConfig, read_pseudo_queries, write_daq
    from nci.semantic_ids import IdsConfig, build

    torch.set_num_threads(cfg.threads)
    keep = work is not None
    work = Path(work) if keep else Path(out).parent / f".{Path(out).name}.work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    try:
        n = slice_corpus(Path(data), work / "data", cfg.docs)
        t = time.perf_counter()
        embed_cfg = EmbedConfig(model=cfg.encoder) if cfg.encoder else EmbedConfig()
        embed_corpus(work / "data", work / "emb", embed_cfg)
        embed_s = time.perf_counter() - t
        t = time.perf_counter()
        build(work / "emb", work / "ids", IdsConfig())
        ids_s = time.perf_counter() - t
        query_dirs, pseudo = [], 0
        for w in cfg.windows:
            d = work / f"daq{w}"
            write_daq(work / "data", d, DaqConfig(window=w))
            pseudo += len(read_pseudo_queries(d))
            query_dirs.append(d)
        result: dict[str, Any] = {
            "embed_s_per_1k_docs": round(embed_s * 1000 / n, 2),
            "ids_s": round(ids_s, 2),
            "pseudo_queries_per_doc": round(pseudo / n, 2),
            "recipes": {},
        }
        for name in cfg.recipes:
            log.info("timing an epoch of the %s recipe", name)
            result["recipes"][name] = measure_recipe(name, work, query_dirs, cfg)
        result["extrapolated"] = extrapolate(result, cfg)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "config": asdict(cfg),
        "data": str(data),
        "docs": n,
        "command": command,
        "commit": git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(cfg.threads),
        **result,
    }
    with atomic_output_dir(Path(out), overwrite=True) as tmp:
        (tmp / "results.json").write_text(json.dumps(report, indent=2) + "\n")
        (tmp / "results.md").write_text(results_markdown(report))
    return report


def results_markdown(r: dict[str, Any]) -> str:
    cfg, x = r["config"], r["extrapolated"]
    lines = [
        f"# Training cost: {r['docs']:,} documents of {r['data']}, extrapolated to {cfg['target_docs']:,}",
        "",
        f"`{r['command']}` at {r['commit'] or 'unknown commit'}, {r['date']}, {cfg['threads']} thread(s).",
        "",
        f"Embedding {r['embed_s_per_1k_docs']} s per 1,000 documents; {r['pseudo_queries_per_doc']} "
        f"pseudo-queries per document (doc-as-query windows {', '.join(map(str, cfg['windows']))} words).",
        "",
        "| recipe | batch | precision | encoder layers trained | examples/s "
        "| cache s / 1k inputs | cache MB / 1k inputs |",
        "|---|---:|---|---|---:|---:|---:|",
    ]
    for name, f in r["recipes"].items():
        layers = "all" if f["encoder_trainable_layers"] < 0 else str(f["encoder_trainable_layers"])
        lines.append(
            f"| {name} | {f['batch_size']} | {f['precision']} | {layers} | {f['examples_per_s']} | "
            f"{f.get('cache_s_per_1k', '-')} | {f.get('cache_mb_per_1k', '-')} |"
        )
    lines += [
        "",
        f"Extrapolated to {cfg['target_docs']:,} documents ({x['inputs']:,} pseudo-queries), "
        f"{x['epochs']} epochs, on this machine: embedding {x['embed_h']} h, then",
        "",
        "| recipe | caching h | cache GB | training h | total h |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in r["recipes"]:
        e = x[name]
        cache_gb = e.get("cache_gb", "-")
        lines.append(f"| {name} | {e['cache_h']} | {cache_gb} | {e['train_h']} | {e['total_h']} |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = TrainCostConfig()
    p.add_argument("--data", required=True, type=Path, help="prepared dataset (its corpus is sliced)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--work", type=Path, default=None, help="keep the slice, its ids and the runs here")
    p.add_argument("--docs", type=int, default=d.docs, help=f"documents in the slice (default {d.docs})")
    windows = ",".join(map(str, d.windows))
    p.add_argument("--windows", default=windows, help=f"doc-as-query windows (default {windows})")
    p.add_argument("--encoder", default=None, help="encoder directory (default: packaged MiniLM)")
    p.add_argument("--target-docs", type=int, default=d.target_docs, help="corpus size to extrapolate to")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs extrapolated (default {d.epochs})")
    p.add_argument("--threads", type=int, default=d.threads, help="CPU threads (default 1)")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated (default cpu,cuda-path)")


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog=prog, description="Training cost on a slice, extrapolated.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = TrainCostConfig(
            docs=args.docs,
            windows=tuple(int(w) for w in args.windows.split(",") if w.strip()),
            encoder=args.encoder,
            target_docs=args.target_docs,
            epochs=args.epochs,
            threads=args.threads,
            recipes=tuple(r.strip() for r in args.recipes.split(",") if r.strip()),
        )
    except ValueError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    if not (args.data / "corpus.jsonl").is_file():
        parser.exit(2, f"{parser.prog}: error: {args.data}: no corpus.jsonl (see nci data prepare)\n")
    report = run_train_cost(args.data, args.out, cfg, work=args.work, command=" ".join([prog or "", *argv]))
    print(results_markdown(report))
    return 0
