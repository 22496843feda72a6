"""Leading-edge stream batching.

Ray Serve LLM batches streamed chunks every interval so that a busy host does
not send one Ray message per token. Its batcher waits a whole interval before
the first flush, which adds the interval to time-to-first-token. This one
flushes at once when the previous flush is at least an interval old (so the
first token, and any token after a pause, goes out immediately) and otherwise
gathers chunks until the interval has passed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


async def _pump(source: AsyncGenerator[T, None], queue: asyncio.Queue[Any]) -> None:
    try:
        async for item in source:
            queue.put_nowait(item)
    except Exception as error:
        queue.put_nowait(_Failure(error))
    finally:
        queue.put_nowait(_END)


def _drain(queue: asyncio.Queue[Any], first: Any) -> list[Any]:
    items = [first]
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def leading_edge_batches(
    source: AsyncGenerator[T, None], interval_s: float
) -> AsyncGenerator[list[T], None]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    pump = asyncio.create_task(_pump(source, queue))
    last_flush = float("-inf")
    try:
        while True:
            first = await queue.get()
            wait = last_flush + interval_s - loop.time()
            # Yield once even when not waiting: chunks the engine produced in the
            # same step (a chat role chunk and the first token) then go together.
            await asyncio.sleep(max(wait, 0.0))
            items = _drain(queue, first)
            batch = [i for i in items if i is not _END and not isinstance(i, _Failure)]
            if batch:
                yield batch
                last_flush = loop.time()
            for item in items:
                if isinstance(item, _Failure):
                    raise item.error
            if any(i is _END for i in items):
                return
    finally:
        if not pump.done():
            pump.cancel()
