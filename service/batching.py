"""Dynamic batching: concurrent search requests of one method run as one batched search.

Each method has a queue and one worker task. The worker takes the first waiting request, gathers
more for up to ``window`` seconds (or until ``max_queries`` queries), then runs one search over all
their queries in a thread (``asyncio.to_thread``), so the event loop keeps answering while the model
works. While a search runs, new requests queue up and form the next batch, so under load batches
fill up without waiting at all. One search runs at a time per method: torch and FAISS already use
every core for one batch.

Requests with different method options (beam size, ...) are searched separately; different ``k``
share one search (run with the largest ``k``, each request keeps its own top ``k``: every method
returns the same top ``k`` whatever larger ``k`` it ran with).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

SearchFn = Callable[[list[str], int, dict[str, Any]], list[list[Any]]]


@dataclass
class _Request:
    queries: list[str]
    k: int
    options: tuple[tuple[str, Any], ...]
    future: asyncio.Future = field(repr=False)


class Batcher:
    """Gathers concurrent ``submit`` calls into batched calls of ``search(queries, k, options)``."""

    def __init__(
        self,
        name: str,
        search: SearchFn,
        window: float = 0.003,
        max_queries: int = 64,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.name = name
        self.search = search
        self.window = window
        self.max_queries = max_queries
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Start the worker on the running event loop (again, if the app moved to another loop,
        as test clients without a lifespan do)."""
        loop = asyncio.get_running_loop()
        if self._task is None or self._loop is not loop or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None and self._loop is asyncio.get_running_loop():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        while self._queue is not None and not self._queue.empty():
            request = self._queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(RuntimeError("the service is shutting down"))

    async def submit(
        self, queries: list[str], k: int, options: dict[str, Any] | None = None
    ) -> list[list[Any]]:
        """Hits for each query, as ``search`` returns them, once the batch holding them has run."""
        self.start()
        assert self._queue is not None
        future = asyncio.get_running_loop().create_future()
        key = tuple(sorted((options or {}).items()))
        await self._queue.put(_Request(list(queries), k, key, future))
        return await future

    async def _gather(self) -> list[_Request]:
        assert self._queue is not None
        first = await self._queue.get()
        batch, n = [first], len(first.queries)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.window
        while n < self.max_queries:
            try:
                request = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    request = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
            batch.append(request)
            n += len(request.queries)
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            groups: dict[tuple[tuple[str, Any], ...], list[_Request]] = {}
            for request in batch:
                if not request.future.done():  # a client that went away needs no answer
                    groups.setdefault(request.options, []).append(request)
            for options, requests in groups.items():
                queries = [q for r in requests for q in r.queries]
                k = max(r.k for r in requests)
                try:
                    results = await asyncio.to_thread(self.search, queries, k, dict(options))
                except Exception as e:  # each waiting request gets the error
                    for r in requests:
                        if not r.future.done():
                            r.future.set_exception(e)
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(queries))
                start = 0
                for r in requests:
                    part = results[start : start + len(r.queries)]
                    start += len(r.queries)
                    if not r.future.done():
                        r.future.set_result([hits[: r.k] for hits in part])
