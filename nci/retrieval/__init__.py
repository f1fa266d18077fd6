"""Retrieval: the index directory, the method registry and the one search path.

- :mod:`~nci.retrieval.index`: an index directory, loaded (``load_index``);
- :mod:`~nci.retrieval.registry`: every method declared once (``register``, ``get_method``);
- :mod:`~nci.retrieval.searcher`: every method over one live corpus (``Searcher``), used by
  ``nci search``, ``nci evaluate``, ``nci bench`` and the service;
- one module per method: :mod:`~nci.retrieval.nci`, :mod:`~nci.retrieval.dense` (dense and pq),
  :mod:`~nci.retrieval.bm25`, :mod:`~nci.retrieval.sentences`, :mod:`~nci.retrieval.expanded`,
  :mod:`~nci.retrieval.hybrid` (nci+dense), :mod:`~nci.retrieval.fusion`;
- :mod:`~nci.retrieval.corpus` and :mod:`~nci.retrieval.id_space`: the live documents and the
  semantic id space they share; :mod:`~nci.retrieval.hits`: the one hit type and the beam rule.
"""

from nci.retrieval.ensemble import EnsembleRetriever, add_ensemble_argument, ensemble
from nci.retrieval.hits import DEFAULT_BEAM, Hit, Hits, rank_vote, resolve_beam
from nci.retrieval.index import Index, dir_bytes, load_index
from nci.retrieval.registry import (
    METHODS,
    LiveDocument,
    LiveRetriever,
    Method,
    Option,
    Retriever,
    get_method,
    method_names,
    register,
    unregister,
)
from nci.retrieval.searcher import BoundRetriever, Searcher, search_batched, set_threads

__all__ = [
    "DEFAULT_BEAM",
    "METHODS",
    "BoundRetriever",
    "EnsembleRetriever",
    "Hit",
    "Hits",
    "Index",
    "LiveDocument",
    "LiveRetriever",
    "Method",
    "Option",
    "Retriever",
    "Searcher",
    "add_ensemble_argument",
    "dir_bytes",
    "ensemble",
    "get_method",
    "load_index",
    "method_names",
    "rank_vote",
    "register",
    "resolve_beam",
    "search_batched",
    "set_threads",
    "unregister",
]
