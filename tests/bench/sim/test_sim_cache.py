"""Prefix cache: block hashes, the block pool, and the engine held to the offline model."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Hashable

import pytest

from rayfleet.bench.sim.blocks import KvBlockPool, block_hashes, max_hit_blocks
from rayfleet.bench.sim.driver import AsyncSimEngine
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest
from rayfleet.bench.sim.offline import TraceRequest, exact_hits, hit_rate, oracle_hit_rate
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.virtual import run_virtual

BLOCK = 4
REPLICAS = ("r0", "r1", "r2")


def test_block_hashes_are_chained_over_full_blocks() -> None:
    a = block_hashes([1, 2, 3, 4, 5, 6, 7, 8, 9], BLOCK)
    b = block_hashes([1, 2, 3, 4, 5, 6, 7, 0], BLOCK)
    c = block_hashes([9, 2, 3, 4, 5, 6, 7, 8], BLOCK)
    assert len(a) == 2  # the partial third block has no hash
    assert a[0] == b[0] and a[1] != b[1]
    assert c[1] != a[1]  # same tokens in block 1, different prefix


def test_at_least_the_last_prompt_token_is_computed() -> None:
    assert max_hit_blocks(8, BLOCK) == 1
    assert max_hit_blocks(9, BLOCK) == 2
    assert max_hit_blocks(1, BLOCK) == 0


def test_pool_evicts_least_recent_and_frees_tails_first() -> None:
    pool = KvBlockPool(4)
    first = pool.allocate(2)
    pool.register(first[0], 100)
    pool.register(first[1], 101)
    pool.release(first)  # tail first: block of 101 becomes the least recent
    assert pool.cached_prefix([100, 101]) == first
    (evicted,) = pool.allocate(3)[-1:]
    assert evicted == first[1]
    assert pool.cached_prefix([100, 101]) == [first[0]]
    assert pool.usage == pytest.approx(0.75)


def test_pool_keeps_one_block_per_hash_and_resets_only_when_idle() -> None:
    pool = KvBlockPool(3)
    a, b = pool.allocate(2)
    pool.register(a, 7)
    pool.register(b, 7)  # a duplicate is computed but not cached twice
    assert pool.cached_prefix([7]) == [a]
    assert not pool.reset()
    pool.release([a, b])
    assert pool.reset() and pool.cached_prefix([7]) == []


def test_exact_hits_by_hand() -> None:
    p = (1, 2, 3, 4, 5, 6, 7, 8, 9)  # two full blocks
    trace = [
        TraceRequest("r", p),
        TraceRequest("r", p),  # both blocks cached: hits 8 tokens
        TraceRequest("r", p[:8]),  # last token must be computed: only block 0 hits
        TraceRequest("other", p),  # another replica's cache is cold
        TraceRequest("r", (7,) * 12, output_tokens=1),  # 3 blocks evict r's 3 slots
        TraceRequest("r", p),
    ]
    assert exact_hits(trace, 3, BLOCK) == [0, 8, 4, 0, 0, 0]


def _trace(seed: int, requests: int = 240) -> list[TraceRequest]:
    rng = random.Random(seed)
    prefixes = [[rng.randrange(500) for _ in range(rng.randint(5, 40))] for _ in range(5)]
    trace = []
    for _ in range(requests):
        tail = [rng.randrange(500) for _ in range(rng.randint(0, 20))]
        prompt = prefixes[rng.randrange(len(prefixes))] + tail
        trace.append(TraceRequest(rng.choice(REPLICAS), tuple(prompt), rng.randint(1, 12)))
    return trace


def _params() -> SimParams:
    # 8-token blocks, 10 of them per replica: small enough to evict all the time;
    # a 12-token budget splits prompts into chunks.
    return SimParams(block_size=8, num_kv_blocks=10, max_num_batched_tokens=12, max_model_len=80)


def test_engine_hits_equal_the_exact_offline_hits() -> None:
    trace = _trace(seed=3)
    params = _params()
    offline = exact_hits(trace, params.num_kv_blocks, params.block_size)
    cores: dict[Hashable, SimEngineCore] = {r: SimEngineCore(params) for r in REPLICAS}
    simulated = []
    for i, item in enumerate(trace):
        request = SimRequest(str(i), item.prompt_token_ids, item.output_tokens)
        run_virtual(cores[item.replica], [request])  # one at a time per replica
        simulated.append(request.num_cached_tokens)
    assert simulated == offline
    assert 0 < sum(offline) < sum(len(r.prompt_token_ids) for r in trace)  # hits and misses
    assert sum(c.prefix_cache_hits for c in cores.values()) == sum(offline)


async def test_the_asyncio_engine_gives_the_same_hits() -> None:
    trace = _trace(seed=4, requests=120)
    params = _params().model_copy(update={"time_scale": 1e6})
    engines: dict[Hashable, AsyncSimEngine] = {r: AsyncSimEngine(params) for r in REPLICAS}
    for engine in engines.values():
        engine.start()
    simulated = []
    try:
        for item in trace:
            events = [
                e
                async for e in engines[item.replica].generate(
                    item.prompt_token_ids, item.output_tokens
                )
            ]
            simulated.append(events[-1].request.num_cached_tokens)
    finally:
        await asyncio.gather(*(engine.stop() for engine in engines.values()))
    assert simulated == exact_hits(trace, params.num_kv_blocks, params.block_size)


def test_oracle_pools_the_replicas_caches() -> None:
    trace = _trace(seed=5)
    per_replica = hit_rate(trace, exact_hits(trace, 10, 8))
    pooled = oracle_hit_rate(trace, 30, 8)
    assert pooled > per_replica  # one big cache sees every reuse
    single = [TraceRequest("all", r.prompt_token_ids, r.output_tokens) for r in trace]
    assert pooled == hit_rate(trace, exact_hits(single, 30, 8))


def test_a_request_larger_than_the_cache_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 3 blocks"):
        exact_hits([TraceRequest("r", tuple(range(12)))], 2, BLOCK)
