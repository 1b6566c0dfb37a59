"""Group commit: many small writes from many connections in one database transaction.

Every inbound message that changes the store (a meter value, a status, a transaction) submits a
function of a database session and awaits its result. One worker takes everything queued, runs it
in a worker thread inside one write transaction (each function in its own savepoint, so one bad
message does not undo the others), commits, and only then answers the waiting handlers. A station
therefore gets its response only after its data is durable, while 2,000 stations sending meter
values cost a few commits per second instead of hundreds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DbSession

from ampflow.gateway.db import Database

__all__ = ["GroupWriter"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Job:
    fn: Callable[[DbSession], Any]
    future: asyncio.Future[Any]
    result: Any = None
    error: BaseException | None = field(default=None)
    merge: tuple[str, Callable[[DbSession, list[Any]], Any]] | None = None
    items: Sequence[Any] = ()


class GroupWriter:
    """Run write functions in shared transactions; see the module notes.

    Parameters
    ----------
    db : Database
    max_batch : int
        Most functions in one transaction.
    """

    def __init__(self, db: Database, *, max_batch: int = 1000) -> None:
        self.db = db
        self.max_batch = max_batch
        self.batches = 0
        self.jobs = 0
        self._queue: list[_Job] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="ampflow-ocpp-writer")

    async def stop(self) -> None:
        """Write what is queued, then stop the worker."""
        if self._queue:
            await self._flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def submit(self, fn: Callable[[DbSession], T]) -> asyncio.Future[T]:
        """Queue ``fn``; the future resolves with its result once committed."""
        self.start()
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append(_Job(fn, future))
        assert self._wake is not None
        self._wake.set()
        return future

    def submit_merged(
        self, key: str, items: Sequence[T], fn: Callable[[DbSession, list[T]], Any]
    ) -> asyncio.Future[None]:
        """Queue ``items`` to be written with the other items under ``key`` by one ``fn``
        call; the future resolves (to None) once committed."""
        future = self.submit(lambda s: fn(s, list(items)))
        job = self._queue[-1]
        job.merge, job.items = (key, fn), items
        return future

    async def run(self, fn: Callable[[DbSession], T]) -> T:
        """Queue ``fn`` and wait for its committed result."""
        return await self.submit(fn)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                await self._flush()

    async def _flush(self) -> None:
        jobs, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        try:
            await asyncio.to_thread(self._write, jobs)
        except Exception as exc:
            logger.exception("group write of %d jobs failed", len(jobs))
            for job in jobs:
                job.error = job.error or exc
        self.batches += 1
        self.jobs += len(jobs)
        for job in jobs:
            if job.future.done():
                continue
            if job.error is not None:
                job.future.set_exception(job.error)
            else:
                job.future.set_result(job.result)

    def _write(self, jobs: list[_Job]) -> None:
        with self.db.write() as s:
            merged: dict[str, list[_Job]] = {}
            for job in jobs:
                if job.merge is not None:
                    merged.setdefault(job.merge[0], []).append(job)
            for group in merged.values():
                fn = group[0].merge[1]  # type: ignore[index]
                items = [x for j in group for x in j.items]
                if not self._merged(s, fn, items):
                    for job in group:  # one of them is bad: write them one by one
                        self._job(s, job)
            for job in jobs:
                if job.merge is None:
                    self._job(s, job)

    def _job(self, s: DbSession, job: _Job) -> None:
        try:
            with s.begin_nested():
                job.result = job.fn(s)
        except (SQLAlchemyError, ValueError, LookupError, TypeError) as exc:
            # One bad message must not undo the others: its savepoint is rolled back.
            logger.warning("a queued write failed: %s", exc)
            job.error = exc

    def _merged(
        self, s: DbSession, fn: Callable[[DbSession, list[Any]], Any], items: list[Any]
    ) -> bool:
        try:
            with s.begin_nested():
                fn(s, items)
        except (SQLAlchemyError, ValueError, LookupError, TypeError) as exc:
            logger.info("a merged write failed, writing its parts one by one: %s", exc)
            return False
        return True
