"""What the application holds at run time: settings, the live index, batchers, metrics."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from nci.live import LiveIndex, open_live_index
from nci.retrieval import Hits
from service.batching import Batcher
from service.config import Settings
from service.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    live: LiveIndex | None = None
    metrics: Metrics = field(default_factory=Metrics)
    batchers: dict[str, Batcher] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.live is not None

    def load(self) -> LiveIndex:
        """Load the index and replay its updates; construct every method and run a warm-up query."""
        if self.live is None:
            self.live = load_live(self.settings)
        for method, reason in self.live.methods().items():
            if not reason:
                try:
                    self.metrics.index_bytes.labels(method).set(self.live.index.size_bytes(method))
                except (OSError, KeyError):  # a size is nice to have, never a reason to fail
                    pass
        return self.live

    def batcher(self, method: str) -> Batcher:
        """The batcher of ``method`` (made on first use)."""
        batcher = self.batchers.get(method)
        if batcher is None:
            assert self.live is not None
            live, s = self.live, self.settings

            def run(queries: list[str], k: int, options: dict[str, Any]) -> list[Hits]:
                return live.search(method, queries, k, **options)

            def observe(n: int) -> None:
                self.metrics.batch_queries.labels(method).observe(n)

            batcher = self.batchers[method] = Batcher(
                method,
                run,
                window=s.batch_window_ms / 1000,
                max_queries=s.batch_max_queries,
                on_batch=observe,
            )
        return batcher

    def start(self) -> None:
        """Start a batcher for every available method."""
        assert self.live is not None
        for method, reason in self.live.methods().items():
            if not reason:
                self.batcher(method).start()

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        self.batchers.clear()
        if self.live is not None:
            await asyncio.to_thread(self.live.close)


def load_live(settings: Settings) -> LiveIndex:
    """Open ``settings.index`` with its live updates and warm every method up (fails early)."""
    if settings.index is None:
        raise ValueError("no index directory: pass --index DIR or set NCI_INDEX")
    live = open_live_index(settings.index, settings.updates_dir, snapshot_every=settings.snapshot_every)
    try:
        seconds = live.warm_up()
    except Exception:
        live.log.close()
        raise
    log.info(
        "index %s: %d documents; warm-up %s",
        settings.index,
        len(live),
        ", ".join(f"{m} {s:.2f} s" for m, s in seconds.items()),
    )
    return live
