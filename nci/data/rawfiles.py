"""Raw input files wherever they lie: on disk, gzip-compressed, or inside a zip.

The format readers list a ``--src`` with :func:`source_files` (one file, a folder searched
recursively, or a zip), read each :class:`RawFile` by lines or as one text, and cite it in errors
by :attr:`RawFile.name` (``archive.zip (folder/member)`` for a zip member).
"""

from __future__ import annotations

import gzip
import logging
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from nci.data.layout import DataError

log = logging.getLogger("nci.data")

GZIP_MAGIC = b"\x1f\x8b"
COMPRESS_MAGIC = b"\x1f\x9d"  # Unix compress (.Z), as on the TREC disks: no reader in the stdlib
_READ_ERRORS = (OSError, EOFError, zlib.error)  # corrupt or truncated gzip or zip data


@dataclass(frozen=True)
class RawFile:
    """One input file. ``rel`` (its path under ``--src``, "/"-separated) is what name rules see."""

    path: Path  # the file on disk; for a zip member, the zip
    rel: str
    member: str | None = None  # the member's name inside the zip
    size: int = 0  # bytes on disk (uncompressed for a zip member)

    @property
    def name(self) -> str:
        """How errors cite the file."""
        return f"{self.path} ({self.member})" if self.member else str(self.path)

    @property
    def basename(self) -> str:
        """The file name, lower-cased, without a trailing ``.gz``: what name rules match."""
        base = PurePosixPath(self.rel).name.lower()
        return base.removesuffix(".gz")

    @property
    def folder(self) -> str:
        """The folder of ``rel`` ("" at the top of ``--src``)."""
        parent = str(PurePosixPath(self.rel).parent)
        return "" if parent == "." else parent

    @contextmanager
    def open(self) -> Iterator[BinaryIO]:
        """The file's bytes, decompressed when it is gzip."""
        with ExitStack() as stack:
            try:
                if self.member is None:
                    f = stack.enter_context(open(self.path, "rb"))
                else:
                    f = stack.enter_context(stack.enter_context(zipfile.ZipFile(self.path)).open(self.member))
                magic = f.peek(2)[:2]
            except _READ_ERRORS as e:
                raise DataError(f"unreadable ({e})", file=self.name) from e
            if magic == COMPRESS_MAGIC:
                raise DataError(
                    "compressed with Unix compress (.Z); uncompress it first (gzip -d or uncompress)",
                    file=self.name,
                )
            if magic == GZIP_MAGIC:
                f = stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))
            yield f

    def head(self, size: int = 1 << 16) -> str:
        """The first ``size`` bytes as text (Latin-1, which never fails): for telling formats apart."""
        with self.open() as f:
            try:
                return f.read(size).decode("latin-1")
            except _READ_ERRORS as e:
                raise DataError(f"unreadable ({e})", file=self.name) from e

    def lines(self) -> Iterator[tuple[int, str]]:
        """(line number, line without its end) for each line of a UTF-8 file."""
        lineno = 0
        with self.open() as f:
            try:
                for lineno, raw in enumerate(f, 1):
                    try:
                        line = raw.decode("utf-8")
                    except UnicodeDecodeError as e:
                        raise DataError(
                            f"not UTF-8 text ({e.reason} at byte {e.start + 1} of the line); "
                            "convert the file to UTF-8",
                            file=self.name,
                            line=lineno,
                        ) from None
                    if lineno == 1:
                        line = line.removeprefix("\ufeff")  # a byte-order mark
                    yield lineno, line.rstrip("\r\n")
            except _READ_ERRORS as e:
                raise DataError(f"unreadable ({e})", file=self.name, line=lineno + 1) from e

    def text(self) -> str:
        """The whole text: UTF-8, else Latin-1 (with a warning), as old collections are."""
        with self.open() as f:
            try:
                raw = f.read()
            except _READ_ERRORS as e:
                raise DataError(f"unreadable ({e})", file=self.name) from e
        try:
            return raw.decode("utf-8").removeprefix("\ufeff")
        except UnicodeDecodeError:
            log.warning("%s: not UTF-8; reading it as Latin-1", self.name)
            return raw.decode("latin-1")


def _hidden(rel: PurePosixPath) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def source_files(src: str | Path) -> list[RawFile]:
    """The files of ``--src``: itself, those under it (a folder), or its members (a zip); sorted,
    hidden files and ``__MACOSX`` left out."""
    src = Path(src)
    if not src.exists():
        raise DataError("missing source: no such file or folder", file=src)
    if src.is_dir():
        found = []
        for p in sorted(src.rglob("*")):
            rel = PurePosixPath(p.relative_to(src).as_posix())
            if p.is_file() and not _hidden(rel):
                found.append(RawFile(p, str(rel), size=p.stat().st_size))
        return found
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as z:
            infos = sorted(z.infolist(), key=lambda i: i.filename)
        return [
            RawFile(src, i.filename, member=i.filename, size=i.file_size)
            for i in infos
            if not i.is_dir() and not _hidden(PurePosixPath(i.filename))
        ]
    return [RawFile(src, src.name, size=src.stat().st_size)]


def input_paths(src: Path, files: dict[str, RawFile | None]) -> dict[str, Path]:
    """The manifest's inputs: each file read, by role, or ``src`` itself for a zip."""
    if any(f is not None and f.member is not None for f in files.values()):
        return {"source": src}
    return {role: f.path for role, f in files.items() if f is not None}
