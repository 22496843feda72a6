import asyncio

import pytest

from rayfleet.deployments.streaming import leading_edge_batches


async def timed_source(delays, fail_at=None):
    for i, delay in enumerate(delays):
        await asyncio.sleep(delay)
        if i == fail_at:
            raise RuntimeError("engine died")
        yield i


async def collect(source, interval):
    loop = asyncio.get_running_loop()
    start = loop.time()
    out = []
    async for batch in leading_edge_batches(source, interval):
        out.append((loop.time() - start, batch))
    return out


async def test_first_item_is_not_held_back():
    out = await collect(timed_source([0.0] + [0.005] * 10), interval=0.2)
    first_at, first_batch = out[0]
    assert first_batch == [0]
    assert first_at < 0.1  # far below the 0.2 s interval
    assert [i for _, b in out for i in b] == list(range(11))
    assert len(out) < 11  # the rest was batched


async def test_items_after_a_pause_flush_at_once():
    out = await collect(timed_source([0.0, 0.3]), interval=0.1)
    assert [b for _, b in out] == [[0], [1]]
    assert out[1][0] - 0.3 < 0.08


async def test_same_step_items_go_together():
    async def burst():
        yield "role"
        yield "token"

    out = await collect(burst(), interval=1.0)
    assert [b for _, b in out] == [["role", "token"]]


async def test_errors_propagate_after_delivered_items():
    seen = []
    with pytest.raises(RuntimeError, match="engine died"):
        async for batch in leading_edge_batches(timed_source([0, 0, 0], fail_at=2), 0.01):
            seen.extend(batch)
    assert seen == [0, 1]


async def test_stream_ends_without_waiting_out_the_interval():
    out = await collect(timed_source([0.0, 0.01, 0.01]), interval=5.0)
    assert out[-1][0] < 1.0
    assert [i for _, b in out for i in b] == [0, 1, 2]


async def test_chunks_before_visible_text_are_not_batched():
    async def sse():
        yield 'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}'
        await asyncio.sleep(0.05)
        yield 'data: {"choices": [{"text": ""}]}'
        await asyncio.sleep(0.05)
        yield 'data: {"choices": [{"text": "hi"}]}'
        await asyncio.sleep(0.01)
        yield 'data: {"choices": [{"text": "there"}]}'
        yield 'data: {"choices": [{"text": "!"}]}'

    out = await collect(sse(), interval=1.0)
    assert len(out[0][1]) == 1 and len(out[1][1]) == 1  # empty chunks went out alone
    text_at = next(t for t, batch in out if any('"hi"' in c for c in batch))
    assert text_at < 0.5  # visible text was not held for the 1 s interval


async def test_interval_zero_sends_every_item_on_its_own():
    async def burst():
        for item in ("role", "a", "b", "c"):
            yield item

    out = await collect(burst(), interval=0)
    assert [b for _, b in out] == [["role"], ["a"], ["b"], ["c"]]
    with pytest.raises(RuntimeError, match="engine died"):
        await collect(timed_source([0.0, 0.0], fail_at=1), interval=0)
