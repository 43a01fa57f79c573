"""Group commit: concurrent submissions are run together as one batch (one DB transaction).

``GroupCommit.submit(item)`` returns a future resolved with the item's result once the batch
holding it has run. When a batch closes:

* at once (next event-loop turn, so every request already runnable joins) when no batch is in
  its *claim step* (the part that must be serialised for batching to pay: the claim statement);
* otherwise when the running claim step ends, or ``max_delay`` after the first waiting item
  (so a claim blocked on a row lock, e.g. a concurrent redelivery held by an older batch that
  waits for Kafka, cannot stall the process), or as soon as ``max_size`` items wait.

Several batches may be in flight (``max_in_flight``): a new batch forms and claims while older
ones wait for broker acknowledgements and commit (pipelining). When the cap is reached, items
wait until a batch finishes.

The ``run`` coroutine gets the items and a ``claimed`` callback (call it when the claim step is
over; it is also implied when ``run`` returns) and returns one result per item: a value, or an
exception instance to raise in that item's submitter. If ``run`` raises, every item of the batch
gets that exception. A submitter that stops waiting (its request was cancelled, e.g. the client
disconnected) does not disturb the batch: its item is still processed, the result is dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


CallLater = Callable[[float, Callable[[], None]], Cancellable]
Run = Callable[[Sequence[T], Callable[[], None]], Awaitable[Sequence[R | BaseException]]]


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        run: Run[T, R],
        *,
        max_size: int,
        max_delay: float,
        max_in_flight: int,
        call_later: CallLater | None = None,
    ) -> None:
        if max_size < 1 or max_in_flight < 1 or max_delay < 0:
            raise ValueError("max_size and max_in_flight must be >= 1, max_delay >= 0")
        self._run = run
        self._max_size = max_size
        self._max_delay = max_delay
        self._max_in_flight = max_in_flight
        self._call_later = call_later
        self._forming: list[tuple[T, asyncio.Future[R]]] = []
        self._claiming = 0
        self._in_flight = 0
        self._timer: Cancellable | None = None
        self._overdue = False
        self._soon = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Batches started (for tests and debugging)."""
        self.items = 0
        """Items submitted."""

    # ---- public --------------------------------------------------------------------------

    def submit(self, item: T) -> asyncio.Future[R]:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._forming.append((item, future))
        self.items += 1
        self._poke()
        return future

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def waiting(self) -> int:
        return len(self._forming)

    async def close(self, grace: float = 10.0) -> None:
        """Run what is waiting and wait (bounded) for every batch in flight."""
        deadline = asyncio.get_running_loop().time() + grace
        while self._forming or self._tasks:
            if self._forming and self._in_flight < self._max_in_flight:
                self._flush()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or not self._tasks:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
        for _, future in self._forming:
            if not future.done():
                future.cancel()
        self._forming.clear()

    # ---- scheduling ----------------------------------------------------------------------

    def _poke(self) -> None:
        if not self._forming or self._in_flight >= self._max_in_flight:
            return  # a finishing batch pokes again
        if len(self._forming) >= self._max_size:
            self._flush()
        elif self._claiming == 0 or self._overdue:
            if not self._soon:
                self._soon = True
                asyncio.get_running_loop().call_soon(self._flush_soon)
        elif self._timer is None:
            call_later = self._call_later or asyncio.get_running_loop().call_later
            self._timer = call_later(self._max_delay, self._on_timer)

    def _flush_soon(self) -> None:
        self._soon = False
        if self._forming and self._in_flight < self._max_in_flight:
            self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        self._overdue = True
        self._poke()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._overdue = False
        batch = self._forming[: self._max_size]
        del self._forming[: self._max_size]
        self._in_flight += 1
        self._claiming += 1
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._forming:
            self._poke()

    async def _execute(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        claimed = False

        def claim_done() -> None:
            nonlocal claimed
            if not claimed:
                claimed = True
                self._claiming -= 1
                self._poke()

        try:
            results = await self._run([item for item, _ in batch], claim_done)
            if len(results) != len(batch):
                raise RuntimeError(f"batch of {len(batch)} got {len(results)} results")
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:  # a bug: every member fails with it (a 500)
            results = [exc] * len(batch)
        finally:
            claim_done()
            self._in_flight -= 1
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the submitter was cancelled
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)
        self._poke()
