"""Live additions and deletions made durable: the journal and the live index over a searcher.

- :mod:`~nci.live.store`: the database of live updates (SQLite by default, PostgreSQL for replicas);
- :mod:`~nci.live.index`: :class:`LiveIndex`, the searcher plus the store (``open_live_index``);
- :mod:`~nci.live.lock`: one SQLite writer at a time; :mod:`~nci.live.legacy`: the earlier log format;
- :mod:`~nci.live.export`: the live corpus and ids for the next training run;
- :mod:`~nci.live.cli`: ``nci updates`` (``python -m nci.live``).
"""

from nci.live.index import LiveIndex, check_doc_id, open_live_index
from nci.retrieval.errors import DocumentExists, DocumentNotFound, IdSpaceFull, UpdateError

__all__ = [
    "DocumentExists",
    "DocumentNotFound",
    "IdSpaceFull",
    "LiveIndex",
    "UpdateError",
    "check_doc_id",
    "open_live_index",
]
