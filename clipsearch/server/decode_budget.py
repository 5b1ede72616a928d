"""The server's budget of memory for decoding images (uploads and thumbnails).

A small file can decode into a huge picture: a 688 KB PNG of 13300×13300 RGBA pixels is
under the pixel cap and needs gigabytes to decode, and a request may carry several. So
every decode first asks `clipsearch.media.decode_cost` (header only) what it will cost,
and then

- an upload whose cost is above ``per_decode_bytes`` is refused (413) without decoding;
- every decode holds its cost from a server-wide pool of ``total_bytes`` while it runs;
  one that does not fit waits, in arrival order, until earlier decodes give memory back.

A thumbnail of a file the library already holds is never refused: its cost is clamped to
the pool, so a very large one waits until it can run alone.

The pool lives in the event loop: holders and waiters are coroutines, the decodes
themselves run in worker threads while their reservation is held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

DEFAULT_PER_DECODE_BYTES = 256 * 2**20  # a 64 MP RGB PNG; any JPEG up to the pixel cap
DEFAULT_TOTAL_BYTES = 512 * 2**20


@dataclass(eq=False)
class _Waiter:
    nbytes: int
    granted: anyio.Event = field(default_factory=anyio.Event)


class DecodeBudget:
    """A first-come, first-served pool of ``total_bytes`` of decode memory.

    per_decode_bytes: the most one upload may cost (callers refuse above it).
    total_bytes: the most all decodes running at once may cost together.
    """

    def __init__(
        self,
        *,
        per_decode_bytes: int = DEFAULT_PER_DECODE_BYTES,
        total_bytes: int = DEFAULT_TOTAL_BYTES,
    ) -> None:
        if per_decode_bytes < 1 or total_bytes < 1:
            raise ValueError("decode budgets must be positive")
        self.per_decode_bytes = per_decode_bytes
        self.total_bytes = max(total_bytes, per_decode_bytes)
        self.in_use = 0
        self._waiting: deque[_Waiter] = deque()

    @asynccontextmanager
    async def hold(self, nbytes: int) -> AsyncIterator[None]:
        """Reserve ``nbytes`` (clamped to the pool) for the body of the ``async with``,
        waiting behind earlier reservations until they fit."""
        nbytes = max(0, min(int(nbytes), self.total_bytes))
        if not self._waiting and self.in_use + nbytes <= self.total_bytes:
            self.in_use += nbytes
        else:
            waiter = _Waiter(nbytes)
            self._waiting.append(waiter)
            try:
                await waiter.granted.wait()
            except BaseException:  # cancelled while waiting (the client went away)
                if waiter.granted.is_set():
                    self._release(nbytes)
                else:
                    self._waiting.remove(waiter)
                    self._grant()
                raise
        try:
            yield
        finally:
            self._release(nbytes)

    def _release(self, nbytes: int) -> None:
        self.in_use -= nbytes
        self._grant()

    def _grant(self) -> None:
        while self._waiting and self.in_use + self._waiting[0].nbytes <= self.total_bytes:
            waiter = self._waiting.popleft()
            self.in_use += waiter.nbytes
            waiter.granted.set()
