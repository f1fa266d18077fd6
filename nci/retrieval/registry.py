"""The method registry: every retrieval method is declared here once.

A :class:`Method` says what the method is called, how ``nci index build`` writes its files, how a
retriever is loaded from an index directory, which other methods it is composed of, its search
options with their defaults, and which variants ``nci bench`` measures. The index builder, the
loader (:class:`nci.retrieval.Searcher`), the live index, ``nci search`` / ``evaluate`` / ``bench``
and the service's method list all read this table, so adding a method is one module that calls
:func:`register` (and, for a built-in method, one import in :func:`builtin_methods`).

A retriever is any object with ``name`` and ``search(queries, k, **options) -> list[list[Hit]]``.
One that can follow live additions and deletions also has ``add(documents)`` and
``remove(doc_ids)``; composed methods (``needs``) follow through their parts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from nci.retrieval.hits import Hits

if TYPE_CHECKING:
    from nci.retrieval.corpus import Corpus
    from nci.retrieval.index import Index


@dataclass(frozen=True)
class LiveDocument:
    """A document added to a live index: its text, its vector (embedded as the corpus was) and
    its semantic id when the index has ids."""

    doc_id: str
    title: str
    text: str
    vector: np.ndarray
    sid: tuple[int, ...] | None = None


@runtime_checkable
class Retriever(Protocol):
    """Anything that ranks documents for a batch of query strings."""

    name: str

    def search(self, queries: list[str], k: int, **options: Any) -> list[Hits]:
        """For each query, up to ``k`` hits, best first."""
        ...


@runtime_checkable
class LiveRetriever(Retriever, Protocol):
    """A retriever that follows additions and deletions of the documents it ranks."""

    def add(self, documents: Sequence[LiveDocument]) -> None: ...

    def remove(self, doc_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True)
class Option:
    """A search option of a method (``beam``, ``rerank``, ``weight``): type, default and bounds.
    A default of None means the method computes it (NCI's beam from ``k``)."""

    name: str
    type: type
    default: Any
    help: str
    minimum: float | None = None

    def parse(self, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"option '{self.name}' must be a number, got {value!r}")
        if self.type is int and float(value) != int(value):
            raise ValueError(f"option '{self.name}' must be an integer, got {value!r}")
        value = self.type(value)
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"option '{self.name}' must be >= {self.minimum:g}, got {value}")
        return value


@dataclass
class BuildContext:
    """What a method's builder gets from ``nci index build``: the directory being written, the
    corpus (ids in ``doc_ids`` order, their texts and vectors), the index config and the encoder."""

    out: Path
    doc_ids: list[str]
    texts: Callable[[], list[str]]
    vectors: np.ndarray
    config: Any  # nci.index.IndexConfig
    encoder_dir: str
    has_ids: bool = False
    has_model: bool = False
    # The query encoder as a retriever uses it (``encode(texts, progress=...)``), loaded on call.
    encoder: Callable[[], Any] | None = None
    # The prepared dataset the corpus came from (its training queries), when the builder has it.
    data: Path | None = None


@dataclass
class LoadContext:
    """What a method's loader gets: the index directory, the live corpus over it, and the
    retrievers of the methods it is composed of."""

    index: Index
    corpus: Corpus
    component: Callable[[str], Retriever]


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    load: Callable[[LoadContext], Retriever]
    # Writes the method's files into the index directory; returns its manifest entry
    # ({"files": [...], ...}, or {"unavailable": "why"}). None: the method has no files.
    build: Callable[[BuildContext], dict[str, Any]] | None = None
    needs: tuple[str, ...] = ()  # methods it is composed of (available when they all are)
    options: tuple[Option, ...] = ()
    score: str = ""  # what the score means, for the API docs
    # Index files it reads besides its own and its parts' (given its options).
    extra_files: Callable[[dict[str, Any]], list[str]] = field(default=lambda opts: [])
    # The configurations `nci bench` measures: [(result key, options)], given the bench config.
    bench: Callable[[Any], list[tuple[str, dict[str, Any]]]] | None = None
    # A short name of one configuration, e.g. "nci-beam10" (default: the method's name).
    label: Callable[[dict[str, Any]], str] | None = None

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        known = ", ".join(o.name for o in self.options) or "none"
        raise ValueError(f"method '{self.name}' has no option '{name}' (its options: {known})")

    def parse_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Options checked against the declaration; unset ones are left out."""
        out = {}
        for name, value in options.items():
            parsed = self.option(name).parse(value)
            if parsed is not None:
                out[name] = parsed
        return out

    def bench_plan(self, config: Any) -> list[tuple[str, dict[str, Any]]]:
        return self.bench(config) if self.bench else [(self.name, {})]

    def display_name(self, options: dict[str, Any]) -> str:
        return self.label(options) if self.label else self.name


METHODS: dict[str, Method] = {}
# The modules of the built-in methods, in the order their methods are listed and built.
BUILTIN_MODULES = (
    "nci.retrieval.nci",
    "nci.retrieval.dense",
    "nci.retrieval.bm25",
    "nci.retrieval.sentences",
    "nci.retrieval.expanded",
    "nci.retrieval.hybrid",
    "nci.retrieval.fusion",
)
BUILTIN_ORDER = (
    "nci",
    "dense",
    "pq",
    "bm25",
    "dense-sentences",
    "bm25-sentences",
    "bm25-expanded",
    "nci+dense",
    "fusion",
)


def register(method: Method, replace: bool = False) -> Method:
    """Declare a method (in registration order, which is also build order)."""
    if method.name in METHODS and not replace:
        raise ValueError(f"method '{method.name}' is already registered")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def builtin_methods() -> None:
    """Register the built-in methods (idempotent: modules register on first import)."""
    import importlib

    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def get_method(name: str) -> Method:
    method = METHODS.get(name)  # every search asks: skip the import machinery when registered
    if method is not None:
        return method
    builtin_methods()
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; choose from {', '.join(METHODS)}")
    return METHODS[name]


def method_names() -> list[str]:
    """Registered methods: the built-in ones in :data:`BUILTIN_ORDER`, then others in the order
    they were registered (so the order does not depend on which module was imported first)."""
    builtin_methods()
    first = [m for m in BUILTIN_ORDER if m in METHODS]
    return first + [m for m in METHODS if m not in BUILTIN_ORDER]
