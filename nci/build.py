"""``nci build``: a prepared dataset in, a searchable index out, in one command.

Runs embed -> ids -> doc-as-query -> train -> index (with the fusion method fitted on validation
queries when there are any), each stage into its usual directory under OUT (``emb``, ``ids``,
``daq`` and ``daq<W>`` for other window lengths, ``model``, ``index``), with the recipe that
:mod:`nci.recipe` chooses from the corpus and the budget. A stage is skipped when its manifest
records the config asked for and the same inputs (by hash), so an interrupted build picks up
where it stopped (an interrupted training resumes from its checkpoint) and a changed choice
reruns that stage and every stage that reads its output.

``OUT/build.json`` records the recipe with the reason for each choice and the overrides, every
stage's wall time, the versions, the validation figures of the model and, when the data has test
queries, a comparison of nci, dense, bm25 and fusion on them.

    nci build --data runs/squad/data --out runs/squad [--minutes 15] [--k 50] [--windows 64,16] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from nci import __version__
from nci.manifest import MANIFEST, ArtifactError, fingerprint, git_commit, read_manifest, write_json_atomic
from nci.recipe import CHOICES, CorpusStats, Recipe, choose, corpus_stats

log = logging.getLogger("nci.build")

BUILD_JSON = "build.json"
COMPARED = ("nci", "dense", "bm25", "fusion")
COMPARE_MEASURES = ("success@1", "success@10", "ndcg@10")
# nci train options that the recipe owns: set them with nci build's own flags
RECIPE_TRAIN_FIELDS = {
    "centroid_prior",
    "label_smoothing",
    "rdrop_alpha",
    "encoder_trainable_layers",
    "teacher_weight",
    "max_minutes",
}


@dataclass(frozen=True)
class Step:
    """One stage of the build: its directory, what it is asked to do, what it reads, how to run it."""

    name: str  # directory under OUT
    stage: str  # the stage its manifest names
    config: Any  # the stage's dataclass config
    inputs: dict[str, Path]  # as its manifest names them
    run: Callable[[bool], int]  # run(resume) -> 0, or the exit code of an interrupted stage

    def key(self) -> str:
        """A hash of the config and the inputs' hashes: the same key, the same artifact."""
        text = json.dumps(
            {"config": _plain(self.config), "inputs": _input_hashes(self.inputs)}, sort_keys=True
        )
        return hashlib.sha256(text.encode()).hexdigest()


def _plain(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def _input_hashes(inputs: dict[str, Path]) -> dict[str, str]:
    return {name: fingerprint(path) for name, path in inputs.items()}


SENTENCES_DIR = "sentences"  # the sentence pseudo-queries, when the recipe has them


def daq_dir(window: int) -> str:
    """``daq`` for the 64-word windows, ``daq<W>`` for others."""
    return "daq" if window == 64 else f"daq{window}"


def plan(
    data: Path,
    out: Path,
    recipe: Recipe,
    encoder: str | None = None,
    train_options: dict[str, Any] | None = None,
) -> list[Step]:
    """The build's stages, in order, for ``recipe``."""
    from nci.embed import EmbedConfig, embed_corpus
    from nci.index import IndexConfig, build_index
    from nci.querygen import DaqConfig, SentenceConfig
    from nci.semantic_ids import IdsConfig
    from nci.semantic_ids import build as build_ids
    from nci.train.config import TrainConfig

    emb, ids, model, index = out / "emb", out / "ids", out / "model", out / "index"
    embed_cfg = EmbedConfig(model=encoder) if encoder else EmbedConfig()
    ids_cfg = IdsConfig(k=recipe.k, leaf_size=recipe.leaf_size)
    steps = [
        Step(
            "emb",
            "embed",
            embed_cfg,
            {"data": data},
            lambda _: _done(embed_corpus(data, emb, embed_cfg, True)),
        ),
        Step("ids", "ids", ids_cfg, {"embeddings": emb}, lambda _: _done(build_ids(emb, ids, ids_cfg, True))),
    ]
    daqs = []
    for window in recipe.windows:
        cfg = DaqConfig(n=recipe.queries_per_doc, window=window)
        daqs.append(out / daq_dir(window))
        steps.append(Step(daq_dir(window), "querygen", cfg, {"data": data}, _daq_runner(data, daqs[-1], cfg)))
    if recipe.sentences:
        cfg = SentenceConfig(n=recipe.queries_per_doc)
        daqs.append(out / SENTENCES_DIR)
        steps.append(Step(SENTENCES_DIR, "querygen", cfg, {"data": data}, _daq_runner(data, daqs[-1], cfg)))
    given = {
        **(train_options or {}),
        **({"encoder": encoder} if encoder else {}),
        "centroid_prior": recipe.centroid_prior,
        "label_smoothing": recipe.label_smoothing,
        "rdrop_alpha": recipe.rdrop_alpha,
        "encoder_trainable_layers": recipe.encoder_trainable_layers,
        "teacher_weight": recipe.teacher_weight,
        "max_minutes": recipe.train_minutes,
    }
    train_cfg = TrainConfig(**given)
    train_inputs = {"data": data, "ids": ids, **{f"queries_{i}": d for i, d in enumerate(daqs)}}
    steps.append(
        Step(
            "model",
            "train",
            train_cfg,
            train_inputs,
            _train_runner(data, ids, daqs, model, train_cfg, set(given)),
        )
    )
    index_cfg = IndexConfig()
    index_inputs = {"data": data, "embeddings": emb, "ids": ids, "model": model, "fusion": data}

    def run_index(_: bool) -> int:
        build_index(data, emb, index, ids=ids, model=model, config=index_cfg, overwrite=True, fusion=data)
        return 0

    steps.append(Step("index", "index", index_cfg, index_inputs, run_index))
    return steps


def _done(_: Any) -> int:
    return 0


def _daq_runner(data: Path, out: Path, cfg: Any) -> Callable[[bool], int]:
    from nci.querygen import write_daq

    return lambda _: _done(write_daq(data, out, cfg, overwrite=True))


def _train_runner(
    data: Path, ids: Path, daqs: list[Path], out: Path, cfg: Any, explicit: set[str]
) -> Callable[[bool], int]:
    def run(resume: bool) -> int:
        from nci.train.loop import train

        return train(data, ids, daqs, out, cfg, resume=resume, overwrite=not resume, explicit=explicit)

    return run


# Config fields added after artifacts of a stage were written, with the value such an artifact
# ran as: a manifest that does not record one matches that value (and no other).
ADDED_FIELDS: dict[str, dict[str, Any]] = {
    "train": {"contrastive_weight": 0.0, "teacher_weight": 0.0, "teacher_lexical": 0.0}
}


def why_run(out: Path, step: Step) -> str | None:
    """Why ``step`` must run, or None when its manifest records the same config and inputs.

    Config fields asked for as None or "auto" are the stage's to resolve (nci train fills them
    from the device), so any recorded value matches them."""
    directory = out / step.name
    if not (directory / MANIFEST).is_file():
        return "no manifest yet"
    try:
        manifest = read_manifest(directory, stage=step.stage)
    except ArtifactError as e:
        return str(e)
    recorded = {**ADDED_FIELDS.get(step.stage, {}), **(manifest.get("config") or {})}
    for name, wanted in _plain(step.config).items():
        got = recorded.get(name)
        if wanted not in (None, "auto") and got != wanted:
            return f"{name} {got!r} -> {wanted!r}"
    inputs = manifest.get("inputs") or {}
    if set(inputs) != set(step.inputs):
        return f"inputs {sorted(inputs)} -> {sorted(step.inputs)}"
    for name, sha in _input_hashes(step.inputs).items():
        if inputs[name].get("sha256") != sha:
            return f"its input {name} changed"
    return None


# --- the record: OUT/build.json ---------------------------------------------------------------------


class Record:
    """``OUT/build.json``, rewritten after every stage so an interrupted build leaves a true one."""

    def __init__(self, out: Path, stats: CorpusStats, recipe: Recipe, data: Path, extra: dict[str, Any]):
        self.path = out / BUILD_JSON
        try:
            self.previous = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except json.JSONDecodeError:
            self.previous = {}
        self.doc: dict[str, Any] = {
            "stage": "build",
            "nci_version": __version__,
            "git_commit": git_commit(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": str(data),
            "corpus": dataclasses.asdict(stats),
            "recipe": recipe.choices(),
            "reasons": recipe.reasons,
            "overrides": {name: getattr(recipe, name) for name in recipe.overrides},
            "estimates_seconds": recipe.estimates_s,
            **extra,
            "versions": _versions(),
            "stages": {},
            "status": "running",
        }
        self.save()

    def previous_stage(self, name: str) -> dict[str, Any]:
        return (self.previous.get("stages") or {}).get(name) or {}

    def stage(self, name: str, **fields: Any) -> None:
        self.doc["stages"].setdefault(name, {}).update(fields)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, self.doc)


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "transformers", "numpy", "faiss-cpu", "bm25s"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


# --- running ------------------------------------------------------------------------------------------


class Budget:
    def __init__(self, minutes: float):
        self.minutes, self.start = minutes, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> str:
        left = self.minutes * 60 - self.elapsed()
        return (
            f"{left / 60:.1f} of {self.minutes:g} min left"
            if left >= 0
            else f"{-left / 60:.1f} min over budget"
        )


def run_steps(out: Path, steps: list[Step], record: Record, budget: Budget) -> int:
    """Run every step that is not current; 0, or the exit code of the stage that stopped."""
    for i, step in enumerate(steps, 1):
        reason = why_run(out, step)
        head = f"[{i}/{len(steps)}] {step.name:<6}"
        if reason is None:
            took = read_manifest(out / step.name).get("wall_seconds")
            record.stage(
                step.name,
                dir=str(out / step.name),
                status="skipped",
                why="manifest matches",
                wall_seconds=0.0,
                stage_wall_seconds=took,
                key=step.key(),
            )
            log.info("%s skipped: its manifest has this config and these inputs | %s", head, budget.left())
            continue
        key = step.key()
        resume = step.stage == "train" and _resumable(out / step.name, record.previous_stage(step.name), key)
        log.info("%s runs%s: %s", head, " (resuming its checkpoint)" if resume else "", reason)
        record.stage(step.name, dir=str(out / step.name), status="running", why=reason, key=key)
        start = time.perf_counter()
        code = step.run(resume)
        took = time.perf_counter() - start
        status = "resumed" if resume else "ran"
        if code:
            record.stage(step.name, status=f"stopped ({code})", wall_seconds=round(took, 1))
            log.error(
                "%s stopped (exit %d) after %.1f s; run the same build again to continue", head, code, took
            )
            return code
        stage_took = read_manifest(out / step.name).get("wall_seconds")
        record.stage(step.name, status=status, wall_seconds=round(took, 1), stage_wall_seconds=stage_took)
        log.info("%s %s in %.1f s | %s", head, status, took, budget.left())
    return 0


def _resumable(model_dir: Path, previous: dict[str, Any], key: str) -> bool:
    """An interrupted training of the same config and inputs left a checkpoint to continue."""
    return (
        not (model_dir / MANIFEST).is_file()
        and (model_dir / "checkpoint" / "last" / "state.json").is_file()
        and previous.get("key") == key
    )


def validation_figures(model_dir: Path) -> dict[str, Any]:
    """The best epoch's validation success@1/@10 (on the training queries nci train held out)."""
    manifest = read_manifest(model_dir, stage="train")
    rows = [
        json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    scored = [r for r in rows if r.get("val_success@1") is not None]
    figures: dict[str, Any] = {
        "epochs": manifest.get("counts", {}).get("epochs"),
        "steps": manifest.get("counts", {}).get("steps"),
        "validation_queries": manifest.get("counts", {}).get("validation_queries"),
        "stopped": manifest.get("stopped"),
        "beam": (manifest.get("config") or {}).get("val_beam"),
    }
    if not scored:
        why = (
            "no validation queries (no training queries to hold out)"
            if not figures["validation_queries"]
            else f"no epoch was validated (stopped by {figures['stopped']} after {figures['steps']} steps)"
        )
        return {**figures, "best_epoch": None, "why": why}
    best = max(scored, key=lambda r: (r["val_success@1"], r["val_success@10"]))
    return {
        **figures,
        "best_epoch": best["epoch"],
        "success@1": round(best["val_success@1"], 4),
        "success@10": round(best["val_success@10"], 4),
    }


def compare(index_dir: Path, data: Path, k: int = 10) -> dict[str, Any] | None:
    """nci, dense, bm25 and fusion on the data's test queries (None when it has none)."""
    from nci.data import load_qrels, split_queries
    from nci.evaluate import MEASURES, evaluate, judged_queries, ranked_run
    from nci.retrieval import Searcher, load_index, search_batched

    qrels = load_qrels(data, "test")
    judged = set(judged_queries(qrels))
    queries = {q: text for q, text in split_queries(data, "test").items() if q in judged}
    if not queries:
        return None
    index = load_index(index_dir)
    searcher, available = Searcher(index), index.methods()
    qids = list(queries)
    measures = {name: MEASURES[name] for name in COMPARE_MEASURES}
    table: dict[str, Any] = {}
    for method in COMPARED:
        if available.get(method, "not registered"):
            table[method] = {"unavailable": available.get(method, "not registered")}
            continue
        start = time.perf_counter()
        results = search_batched(searcher.retriever(method), [queries[q] for q in qids], k)
        metrics = evaluate(ranked_run(qids, results), qrels, measures)
        took = round(time.perf_counter() - start, 1)
        table[method] = {**{m: round(v, 4) for m, v in metrics.items()}, "seconds": took}
    return {"split": "test", "queries": len(qids), "k": k, "nci_beam": 10, "methods": table}


# --- printing ------------------------------------------------------------------------------------------


def format_recipe(stats: CorpusStats, recipe: Recipe) -> str:
    lines = [
        f"corpus: {stats.documents:,} documents of {stats.mean_words:.0f} words on average, "
        f"{stats.train_queries:,} training queries, {stats.dev_queries:,} dev, "
        f"{stats.other_queries:,} others",
        f"budget: {recipe.minutes:g} min ({recipe.reasons['minutes']}); estimates (s): "
        + ", ".join(f"{k} {v:g}" for k, v in recipe.estimates_s.items()),
        "recipe:",
    ]
    for name in CHOICES:
        value = getattr(recipe, name)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        lines.append(f"  {name:<25} {shown!s:<8} {recipe.reasons[name]}")
    return "\n".join(lines)


def format_results(
    validation: dict[str, Any], fusion: dict[str, Any], comparison: dict[str, Any] | None
) -> str:
    if validation.get("best_epoch") is None:
        lines = [f"validation: {validation.get('why')}"]
    else:
        v = validation
        lines = [
            f"validation ({v['validation_queries']} held-out training queries, beam {v['beam']}): best epoch "
            f"{v['best_epoch']} of {v['epochs']}: success@1 {v['success@1']:.3f}, "
            f"success@10 {v['success@10']:.3f}"
        ]
    weights = ", ".join(f"{part} {w:g}" for part, w in fusion.get("weights", {}).items())
    if fusion.get("fitted"):
        lines.append(
            f"fusion: {fusion['combination']} ({weights}), fitted on {fusion['queries']} queries "
            f"({fusion['on']})"
        )
    else:
        lines.append(f"fusion: {fusion.get('combination')} ({weights}), not fitted: {fusion.get('why')}")
    if comparison is None:
        return "\n".join([*lines, "no test queries: no comparison"])
    lines += [
        f"test ({comparison['queries']:,} queries):",
        "",
        "| method | " + " | ".join(COMPARE_MEASURES) + " |",
        "|---|" + "---|" * len(COMPARE_MEASURES),
    ]
    for method, row in comparison["methods"].items():
        cells = [row["unavailable"]] if "unavailable" in row else [f"{row[m]:.3f}" for m in COMPARE_MEASURES]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- the command ---------------------------------------------------------------------------------------


def build(
    data: Path,
    out: Path,
    recipe: Recipe,
    stats: CorpusStats,
    encoder: str | None = None,
    train_options: dict[str, Any] | None = None,
    run_compare: bool = True,
) -> int:
    """Run the build; 0 when the index is built, else the exit code of the stage that stopped."""
    budget = Budget(recipe.minutes)
    steps = plan(data, out, recipe, encoder, train_options)  # checks every stage's config first
    extra = {"encoder": encoder, "train_options": train_options or {}}
    record = Record(out, stats, recipe, data, extra)
    print(format_recipe(stats, recipe), flush=True)
    code = run_steps(out, steps, record, budget)
    if code:
        record.doc["status"] = f"stopped ({code})"
        record.save()
        return code
    validation = validation_figures(out / "model")
    fusion_json = out / "index" / "fusion.json"
    fusion = json.loads(fusion_json.read_text()) if fusion_json.is_file() else {"why": "not built"}
    index_sha = fingerprint(out / "index")
    comparison, took = _comparison(out, data, record, index_sha, run_compare)
    log.info("[compare] %s | %s", took, budget.left())
    record.doc.update(
        validation=validation,
        fusion=fusion,
        comparison=comparison,
        comparison_index_sha256=index_sha if comparison else None,
        status="done",
        wall_seconds=round(budget.elapsed(), 1),
    )
    record.save()
    print(format_results(validation, fusion, comparison), flush=True)
    log.info("built in %.1f min; serve it with: nci serve --index %s", budget.elapsed() / 60, out / "index")
    return 0


def _comparison(out: Path, data: Path, record: Record, index_sha: str, wanted: bool) -> tuple[Any, str]:
    """The test comparison: reused from the last build when its index is this one."""
    if not wanted:
        return None, "skipped (--no-compare)"
    if record.previous.get("comparison_index_sha256") == index_sha and record.previous.get("comparison"):
        return record.previous["comparison"], "reused: the index is the one the last build compared"
    start = time.perf_counter()
    comparison = compare(out / "index", data)
    if comparison is None:
        return None, "no test queries"
    took = time.perf_counter() - start
    return comparison, f"nci, dense, bm25, fusion on {comparison['queries']:,} test queries in {took:.1f} s"


def _windows(text: str) -> tuple[int, ...]:
    try:
        windows = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        windows = ()
    if not windows or min(windows) < 1 or len(set(windows)) != len(windows):
        raise argparse.ArgumentTypeError(f"expected distinct window lengths in words (64,16), got {text!r}")
    return windows


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="prepared dataset (nci data prepare)")
    p.add_argument("--out", type=Path, required=True, help="emb/ ids/ daq/ model/ index/ build.json go here")
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall time of the whole build (default 15 under 5,000 documents, else estimated)",
    )
    p.add_argument(
        "--encoder", default=None, help="encoder to embed and train with (default packaged MiniLM)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores)")
    p.add_argument(
        "--no-compare",
        action="store_true",
        help="skip the test-split comparison at the end, and keep no time for it in the budget "
        "(so training gets that time: set --train-minutes to match a build without this flag)",
    )
    p.add_argument("--dry-run", action="store_true", help="print the recipe and the stages that would run")
    g = p.add_argument_group("recipe overrides (default: chosen from the corpus, see nci/recipe.py)")
    g.add_argument("--k", type=int, help="clusters per level of the semantic ids")
    g.add_argument("--leaf-size", type=int, help="largest leaf cluster (default k)")
    g.add_argument("--windows", type=_windows, help="doc-as-query window lengths, e.g. 64,16")
    g.add_argument(
        "--sentences",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="sentence pseudo-queries beside the windows (nci querygen sentences)",
    )
    g.add_argument("--queries-per-doc", type=int, help="random windows per document and window length")
    g.add_argument("--centroid-prior", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--rdrop-alpha", type=float, help="0 turns R-drop off")
    g.add_argument("--encoder-trainable-layers", type=int)
    g.add_argument(
        "--teacher-weight", type=float, help="distillation from dense retrieval (nci train --teacher-weight)"
    )
    g.add_argument("--train-minutes", type=float, help="training budget (default: what the others leave)")
    p.add_argument(
        "train_args",
        nargs=argparse.REMAINDER,
        help="after --: nci train options, e.g. -- --batch-size 64 --max-steps 100",
    )


def train_options(args: list[str]) -> dict[str, Any]:
    """nci train's config options given after ``--`` (those the recipe owns are refused)."""
    from nci.train.cli import add_arguments as add_train_arguments
    from nci.train.cli import config_from_args

    args = args[1:] if args[:1] == ["--"] else args
    if not args:
        return {}
    parser = argparse.ArgumentParser(prog="nci build ... --", add_help=False)
    add_train_arguments(parser)
    parsed = parser.parse_args(["--data", ".", "--ids", ".", "--out", ".", *args])
    cfg, given = config_from_args(parsed)
    owned = sorted(given & RECIPE_TRAIN_FIELDS)
    if owned:
        flags = ", ".join("--" + name.replace("_", "-") for name in owned)
        raise ValueError(f"{flags}: a recipe choice; give it as nci build's own option (before --)")
    return {name: getattr(cfg, name) for name in sorted(given)}


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Build an index from a prepared dataset: embed, ids, doc-as-query, train, index.",
        epilog="Every stage is skipped when its manifest has the same config and inputs; see OUT/build.json.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        from nci.cli import setup_logging

        setup_logging()
    overrides = {name: getattr(args, name) for name in CHOICES if getattr(args, name, None) is not None}
    try:
        extra_train = train_options(args.train_args)
        stats = corpus_stats(args.data)
        threads = args.threads or os.cpu_count()
        recipe = choose(stats, args.minutes, overrides, threads=threads, compare=not args.no_compare)
    except (ValueError, ArtifactError, FileNotFoundError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    encoder = args.encoder
    if encoder and Path(encoder).exists():  # a path: absolute, so the manifests name it the same way
        encoder = str(Path(encoder).resolve())
    if args.dry_run:
        print(format_recipe(stats, recipe))
        for step in plan(args.data, args.out, recipe, encoder, extra_train):
            print(f"{step.name:<6} {why_run(args.out, step) or 'skipped: manifest matches'}")
        return 0
    try:
        compared = not args.no_compare
        return build(args.data, args.out, recipe, stats, encoder, extra_train, run_compare=compared)
    except (ValueError, ArtifactError, FileExistsError, FileNotFoundError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")


if __name__ == "__main__":
    sys.exit(main())
