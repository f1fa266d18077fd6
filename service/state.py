"""What the application holds at run time: settings, the live index, batchers, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import gc
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
    warmed: bool = False  # every method loaded and warmed up: the service is ready
    load_error: BaseException | None = None  # why loading failed (the server then stops)
    follower: asyncio.Task | None = None

    @property
    def ready(self) -> bool:
        return self.live is not None and self.warmed

    def load(self) -> LiveIndex:
        """Open the index (taking the writer lock, replaying its updates) and warm it up."""
        if self.live is None:
            self.live = open_live(self.settings)
        self.warm()
        return self.live

    def warm(self) -> None:
        """Load every method and run a warm-up query through it (fails early on a bad index)."""
        assert self.live is not None
        live = self.live
        try:
            seconds = live.warm_up()
        except Exception:
            live.close()
            raise
        gc.freeze()  # the loaded index stays: the collector's full passes need not rescan it
        log.info(
            "index %s: %d documents; warm-up %s",
            self.settings.index,
            len(live),
            ", ".join(f"{m} {s:.2f} s" for m, s in seconds.items()),
        )
        for method, reason in live.methods().items():
            if not reason:
                try:
                    self.metrics.index_bytes.labels(method).set(live.index.size_bytes(method))
                except (OSError, KeyError, ValueError):  # a size is nice to have, never a reason to fail
                    pass
        self.warmed = True

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
        """Start a batcher for every available method, and the follower of other writers."""
        assert self.live is not None
        for method, reason in self.live.methods().items():
            if not reason:
                self.batcher(method).start()
        if self.follower is None:
            self.follower = asyncio.get_running_loop().create_task(self._follow(), name="follow-updates")

    async def _follow(self) -> None:
        """Apply the live updates other replicas commit, every ``follow_interval_s`` (polling:
        a write answered by one replica is in every replica's results within about that long)."""
        assert self.live is not None
        while True:
            await asyncio.sleep(self.settings.follow_interval_s)
            try:
                n = await asyncio.to_thread(self.live.follow)
            except Exception:  # a database hiccup: log it and try again at the next tick
                log.exception("following live updates failed")
                continue
            if n:
                log.debug("applied %d live updates from other writers", n)

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()
        self.batchers.clear()
        if self.follower is not None:
            self.follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.follower
            self.follower = None
        if self.live is not None:
            await asyncio.to_thread(self.live.close)  # releases the writer lock


def open_live(settings: Settings, holder: str | None = None) -> LiveIndex:
    """Open ``settings.index`` for writing: the writer lock first (a second server is refused at
    once, naming the holder), then the replay of its live updates. No method is loaded yet."""
    if settings.index is None:
        raise ValueError("no index directory: pass --index DIR or set NCI_INDEX")
    url = settings.database_url.get_secret_value() if settings.database_url is not None else None
    return open_live_index(settings.index, settings.updates_dir, holder=holder, database_url=url)
