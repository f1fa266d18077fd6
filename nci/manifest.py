"""Artifact bookkeeping shared by every stage.

Each stage writes its outputs into one directory together with ``config.json`` (its frozen
dataclass config) and ``manifest.json`` (stage, config, inputs with hashes, package version,
git commit, counts, wall time). Outputs are written into a temporary sibling directory and
renamed into place, so a failed or killed run never leaves a half-written artifact behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from nci import __version__

MANIFEST = "manifest.json"
CONFIG = "config.json"

T = TypeVar("T")


class ArtifactError(RuntimeError):
    """An artifact directory is missing, incomplete or inconsistent."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(path: str | Path) -> str:
    """A hash naming an input: a file's sha256, or for a directory the hash of its manifest
    (when it has one) or of all its files' hashes."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    if (path / MANIFEST).is_file():
        return sha256_file(path / MANIFEST)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def write_json_atomic(path: Path, obj: Any) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)


def save_config(directory: Path, config: Any) -> None:
    """Write a dataclass config as ``config.json``."""
    write_json_atomic(Path(directory) / CONFIG, dataclasses.asdict(config))


def load_config(directory: Path, cls: type[T]) -> T:
    """Rebuild a dataclass config from ``config.json``; unknown keys are an error."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; is {directory} an artifact directory?")
    data = json.loads(path.read_text())
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ArtifactError(f"{path}: unknown fields {sorted(unknown)} for {cls.__name__}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def write_manifest(
    directory: Path,
    *,
    stage: str,
    config: Any = None,
    inputs: dict[str, str | Path] | None = None,
    counts: dict[str, Any] | None = None,
    wall_seconds: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``manifest.json`` (and ``config.json`` for a dataclass config) into ``directory``."""
    directory = Path(directory)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    if dataclasses.is_dataclass(config):
        save_config(directory, config)
    manifest = {
        "stage": stage,
        "nci_version": __version__,
        "git_commit": git_commit(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": cfg,
        "inputs": {name: {"path": str(p), "sha256": fingerprint(p)} for name, p in (inputs or {}).items()},
        "counts": counts or {},
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 3),
    }
    if extra:
        manifest.update(extra)
    write_json_atomic(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: Path, stage: str | None = None) -> dict[str, Any]:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ArtifactError(
            f"{path}: missing. {directory} is not a finished artifact directory; "
            "run the stage that produces it first."
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: corrupt JSON at line {e.lineno}: {e.msg}") from e
    if stage is not None and manifest.get("stage") != stage:
        raise ArtifactError(f"{path}: expected a '{stage}' artifact, found stage '{manifest.get('stage')}'")
    return manifest


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``out``; on success it is renamed to ``out``.

    On any exception the temporary directory is removed and ``out`` is untouched.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
