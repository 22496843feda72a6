"""Leading-edge stream batching.

Ray Serve LLM batches streamed chunks every interval so that a busy host does
not send one Ray message per token. Its batcher holds the first chunk for a
whole interval, which adds the interval to time-to-first-token. This one:

- sends every chunk at once until the first visible one (text the client can
  show) has gone out, so TTFT is not batched;
- then flushes at once when the previous flush is at least an interval old,
  and otherwise gathers chunks until the interval has passed;
- ends as soon as the source ends, without waiting out the interval.

An interval of 0 sends every chunk on its own, for an engine in the ingress's own
process (engine_ingress.py), where there is no message to save.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()
# An SSE chunk carrying non-empty text: vLLM sends "" while a UTF-8 character is
# incomplete, and chat streams start with a role-only chunk.
_VISIBLE_TEXT = re.compile(r'"(?:text|content)":\s*"[^"]')


def carries_text(item: Any) -> bool:
    return not isinstance(item, str) or bool(_VISIBLE_TEXT.search(item))


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


async def _gather_until(queue: asyncio.Queue[Any], items: list[Any], deadline: float) -> None:
    """Add arriving items to ``items`` until ``deadline`` or the end of the stream."""
    loop = asyncio.get_running_loop()
    while _END not in items and not any(isinstance(i, _Failure) for i in items):
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        try:
            items.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            return
        items.extend(_drain(queue, None)[1:])


async def leading_edge_batches(
    source: AsyncGenerator[T, None],
    interval_s: float,
    visible: Callable[[Any], bool] = carries_text,
) -> AsyncGenerator[list[T], None]:
    if interval_s <= 0:
        async for item in source:
            yield [item]
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    pump = asyncio.create_task(_pump(source, queue))
    last_flush = float("-inf")
    shown_text = False
    try:
        while True:
            items = [await queue.get()]
            # Yield once: chunks the engine produced in the same step go together.
            await asyncio.sleep(0)
            items.extend(_drain(queue, None)[1:])
            if shown_text:
                await _gather_until(queue, items, last_flush + interval_s)
            batch = [i for i in items if i is not _END and not isinstance(i, _Failure)]
            if batch:
                yield batch
                last_flush = loop.time()
                shown_text = shown_text or any(visible(i) for i in batch)
            for item in items:
                if isinstance(item, _Failure):
                    raise item.error
            if _END in items:
                return
    finally:
        if not pump.done():
            pump.cancel()
