"""The named dataset sources: which reader parses each, where its raw copy lives, its aliases.

A dataset (``squad``, ``scifact``, ``glasgow``) has a default copy: ``$NCI_DATASETS/<folder>`` or a
download. A format (``beir``, ``jsonl``, ``trec``, ``tsv``) reads any collection written that way
and always needs ``--src``.

A new source format is one new module plus one registration here: write
``nci/data/<format>.py`` with a reader ``read_<format>(src) -> Dataset`` built on
:mod:`nci.data.layout` (raising :class:`~nci.data.layout.DataError` for bad input), then add one
:class:`DatasetSource` entry to ``DATASET_SOURCES`` below. ``nci data prepare`` takes its name
choices, the ``$NCI_DATASETS`` folder, the download and whether ``--test-fraction`` applies from
that entry. (A format whose split we draw ourselves, like SQuAD's, takes ``(src, seed,
test_fraction)`` and sets ``default_test_fraction``.)
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nci.data.beir import read_beir, read_scifact
from nci.data.glasgow import read_glasgow
from nci.data.jsonl import read_jsonl
from nci.data.layout import DataError, Dataset
from nci.data.squad import DEFAULT_TEST_FRACTION, read_squad
from nci.data.trec import read_trec
from nci.data.tsv import read_tsv
from nci.manifest import atomic_output_dir
from nci.settings import get_settings

log = logging.getLogger("nci.data")  # one logger for the whole package, as before it was split


@dataclass(frozen=True)
class DatasetSource:
    """A named raw dataset or format: the reader that parses it and where to find a copy of it."""

    read: Callable[..., Dataset]  # read(src); read(src, seed, test_fraction) with a seeded split
    # Folder name under $NCI_DATASETS (and under the download cache) and public location, used
    # when no --src is given; None for a format, which always needs --src.
    folder: str | None = None
    url: str | None = None
    aliases: tuple[str, ...] = ()  # other names accepted for it (case-insensitive, like the name)
    # Set for a dataset whose train/test split we draw (seeded); None for a fixed split.
    default_test_fraction: float | None = None
    src: str = ""  # what --src must be, for errors and help


DATASET_SOURCES: dict[str, DatasetSource] = {
    "squad": DatasetSource(
        read_squad,
        "squad-v1.1-dev",
        "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json",
        default_test_fraction=DEFAULT_TEST_FRACTION,
    ),
    "scifact": DatasetSource(
        read_scifact,
        "scifact",
        "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/scifact.zip",
    ),
    "glasgow": DatasetSource(
        read_glasgow,
        "cranfield",
        "http://ir.dcs.gla.ac.uk/resources/test_collections/cran/cran.tar.gz",
        aliases=("cranfield",),
        src="a folder of .I/.T/.W files (documents, queries) and a relevance file",
    ),
    # Formats: any collection written that way, always from --src.
    "beir": DatasetSource(
        read_beir, src="a BEIR folder or zip: corpus.jsonl, queries.jsonl, qrels/<split>.tsv"
    ),
    "jsonl": DatasetSource(
        read_jsonl,
        src="a corpus .jsonl file, or a folder with corpus.jsonl [queries.jsonl, qrels/<split>.tsv]",
    ),
    "trec": DatasetSource(read_trec, src="a <DOC> file, or a folder of <DOC> files, <top> topics and qrels"),
    "tsv": DatasetSource(
        read_tsv, src="an id<TAB>text file, or a folder with collection.tsv, queries.*.tsv, qrels.*.tsv"
    ),
}
ALIASES = {alias: name for name, source in DATASET_SOURCES.items() for alias in source.aliases}


def dataset_names() -> list[str]:
    """Every name ``prepare`` accepts, aliases included, sorted."""
    return sorted([*DATASET_SOURCES, *ALIASES])


def seeded_split_names() -> list[str]:
    """The datasets whose train/test split ``--seed`` and ``--test-fraction`` draw."""
    return [name for name, source in DATASET_SOURCES.items() if source.default_test_fraction is not None]


def canonical_name(name: str) -> str:
    name = ALIASES.get(name.lower(), name.lower())
    if name not in DATASET_SOURCES:
        raise DataError(f"unknown dataset '{name}'; choose one of {dataset_names()}")
    return name


def _download(name: str) -> Path:
    """Fetch a dataset's public copy into the cache (once) and return the folder."""
    source = DATASET_SOURCES[name]
    if source.folder is None or source.url is None:
        raise DataError(f"{name} is a format, not a dataset: pass --src PATH ({source.src})")
    dest = get_settings().home / "datasets" / source.folder
    if dest.is_dir() and any(dest.iterdir()):
        return dest
    log.info("downloading %s from %s", name, source.url)
    with atomic_output_dir(dest, overwrite=True) as tmp:
        file = tmp / source.url.rsplit("/", 1)[1]
        try:
            with urllib.request.urlopen(source.url, timeout=60) as r, open(file, "wb") as f:
                shutil.copyfileobj(r, f)
        except (urllib.error.URLError, OSError) as e:
            raise DataError(
                f"could not download {source.url} ({e}); without network, pass --src PATH or set "
                f"NCI_DATASETS to a folder holding '{source.folder}/'"
            ) from e
        if file.name.endswith(".tar.gz"):
            with tarfile.open(file) as t:
                t.extractall(tmp, filter="data")
            file.unlink()
        elif file.suffix == ".zip":
            with zipfile.ZipFile(file) as z:
                z.extractall(tmp)
            file.unlink()
    return dest


def resolve_source(name: str, src: str | Path | None = None) -> Path:
    """``src`` if given, else ``$NCI_DATASETS/<folder>``, else a cached or fresh download."""
    name = canonical_name(name)
    if src is not None:
        return Path(src).expanduser()
    datasets = get_settings().datasets
    folder = DATASET_SOURCES[name].folder
    if datasets is not None and folder is not None and (Path(datasets) / folder).exists():
        return Path(datasets) / folder
    return _download(name)


def read_dataset(name: str, src: str | Path, seed: int = 0, test_fraction: float | None = None) -> Dataset:
    """Parse a raw dataset into memory (nothing written)."""
    name = canonical_name(name)
    source = DATASET_SOURCES[name]
    if source.default_test_fraction is None:
        if test_fraction is not None:
            seeded = " and ".join(seeded_split_names())
            raise DataError(f"--test-fraction applies to {seeded} only; {name} has a fixed split")
        return source.read(src)
    return source.read(src, seed, source.default_test_fraction if test_fraction is None else test_fraction)
