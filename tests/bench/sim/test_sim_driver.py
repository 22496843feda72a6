"""The asyncio engine loop (run fast: a large time_scale)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from rayfleet.bench.sim.driver import AsyncSimEngine
from rayfleet.bench.sim.engine import StepPlan, TokenEvent
from rayfleet.bench.sim.params import SimParams

FAST = SimParams(time_scale=1e4, block_size=16, num_kv_blocks=64, max_model_len=1024)


@pytest.fixture
async def engine() -> AsyncIterator[AsyncSimEngine]:
    sim = AsyncSimEngine(FAST)
    sim.start()
    yield sim
    await sim.stop()


async def collect(sim: AsyncSimEngine, start: int, tokens: int) -> list[TokenEvent]:
    return [e async for e in sim.generate(tuple(range(start, start + 40)), tokens)]


async def test_concurrent_requests_are_batched_and_complete(engine: AsyncSimEngine) -> None:
    steps: list[StepPlan] = []
    engine.on_step = lambda plan, events: steps.append(plan)
    results = await asyncio.gather(*(collect(engine, 100 * i, 5 + i) for i in range(6)))
    assert [len(events) for events in results] == [5, 6, 7, 8, 9, 10]
    assert all(events[-1].finished and not events[0].finished for events in results)
    assert max(len(plan.decode) for plan in steps) > 1  # they really shared steps
    assert not engine.core.has_work and engine.core.kv_cache_usage == 0.0


async def test_simulated_clock_orders_arrivals_and_tokens(engine: AsyncSimEngine) -> None:
    events = await collect(engine, 0, 4)
    request = events[0].request
    assert request.arrival_s <= request.token_times[0] <= request.token_times[-1]
    assert request.token_times == sorted(request.token_times)


async def test_closing_a_stream_aborts_its_request(engine: AsyncSimEngine) -> None:
    stream = engine.generate(tuple(range(40)), 500)
    first = await anext(stream)
    assert len(engine.core.running) == 1
    await stream.aclose()
    assert not first.finished and not engine.core.running
    assert engine.core.kv_cache_usage == 0.0


async def test_a_failing_step_hook_does_not_stop_the_engine(engine: AsyncSimEngine) -> None:
    def broken(plan: StepPlan, events: list[TokenEvent]) -> None:
        raise RuntimeError("metrics backend down")

    engine.on_step = broken
    assert len(await collect(engine, 0, 3)) == 3
    engine.check_health()


async def test_invalid_requests_raise_and_health_reflects_the_loop() -> None:
    sim = AsyncSimEngine(FAST)
    with pytest.raises(RuntimeError, match="not started"):
        sim.check_health()
    sim.start()
    with pytest.raises(ValueError, match="maximum context length"):
        await collect(sim, 0, 2000)
    sim.check_health()
    await sim.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        sim.check_health()


async def test_a_broken_engine_fails_its_streams_instead_of_hanging() -> None:
    sim = AsyncSimEngine(FAST)
    sim.start()

    def broken(now: float) -> None:
        raise AssertionError("scheduler bug")

    sim.core.begin_step = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="failed"):
        await collect(sim, 0, 3)
    with pytest.raises(RuntimeError, match="stopped"):
        sim.check_health()
    await sim.stop()
