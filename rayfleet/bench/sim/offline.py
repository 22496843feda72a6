"""Exact prefix-cache hits of a trace, computed offline, and the pooled-cache oracle.

The model is the simulator's cache run one request at a time, written independently as
plainly as possible so a test can hold the engine to it. Per replica there is a queue
of ``capacity`` block slots, least recently used first; a slot holds a prompt-block hash
or nothing. A request with prompt P and O output tokens:

1. hits the longest prefix of its full prompt blocks found in the queue, at most
   ``(len(P) - 1) // block_size`` blocks (the last prompt token is always computed);
2. takes its hit slots out of the queue, then, block by block, the front slot for each
   further block of its footprint = ceil((len(P) + O - 1) / block_size) blocks (the
   last output token is never written to the KV cache); a full prompt block's slot
   holds its hash unless another slot already holds it;
3. when done, puts all its slots back at the end, last block first.

Hit tokens = hit blocks x block size, as vLLM counts them. The engine gives the same
hits whenever a replica's requests do not overlap in time; with overlap, blocks still
being computed or held by others make hits depend on timing.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from rayfleet.bench.sim.blocks import block_hashes, max_hit_blocks


@dataclass(frozen=True)
class TraceRequest:
    replica: Hashable
    prompt_token_ids: Sequence[int]
    output_tokens: int = 1


class _SerialCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._empty = itertools.count()
        # slot → None; a slot is ("hash", h) or ("empty", n). Front = least recent.
        self._queue: OrderedDict[tuple[str, int], None] = OrderedDict(
            (("empty", next(self._empty)), None) for _ in range(capacity)
        )

    def serve(self, prompt: Sequence[int], output_tokens: int, block_size: int) -> int:
        hashes = block_hashes(prompt, block_size)
        footprint = -(-(len(prompt) + output_tokens - 1) // block_size)
        if footprint > self.capacity:
            raise ValueError(f"a request needs {footprint} blocks, the cache has {self.capacity}")
        hits = 0
        for block_hash in hashes[: max_hit_blocks(len(prompt), block_size)]:
            if ("hash", block_hash) not in self._queue:
                break
            hits += 1
        held = [("hash", block_hash) for block_hash in hashes[:hits]]
        for slot in held:
            del self._queue[slot]
        for index in range(hits, footprint):
            self._queue.popitem(last=False)  # evict the least recent slot
            held.append(self._new_slot(hashes, index, held))
        for slot in reversed(held):
            self._queue[slot] = None
        return hits * block_size

    def _new_slot(
        self, hashes: list[int], index: int, held: list[tuple[str, int]]
    ) -> tuple[str, int]:
        """A prompt block caches its hash unless some slot already does."""
        if index < len(hashes):
            slot = ("hash", hashes[index])
            if slot not in self._queue and slot not in held:
                return slot
        return ("empty", next(self._empty))


def exact_hits(
    trace: Iterable[TraceRequest],
    capacity_blocks: int | Mapping[Hashable, int],
    block_size: int = 128,
) -> list[int]:
    """Prefix-cache hit tokens of each request, served in order by its replica's cache."""
    caches: dict[Hashable, _SerialCache] = {}
    hits = []
    for request in trace:
        cache = caches.get(request.replica)
        if cache is None:
            capacity = (
                capacity_blocks
                if isinstance(capacity_blocks, int)
                else capacity_blocks[request.replica]
            )
            cache = caches[request.replica] = _SerialCache(capacity)
        hits.append(cache.serve(request.prompt_token_ids, request.output_tokens, block_size))
    return hits


def hit_rate(trace: Sequence[TraceRequest], hits: Sequence[int]) -> float:
    """Hit tokens over prompt tokens (vLLM's hits / queries)."""
    queries = sum(len(r.prompt_token_ids) for r in trace)
    return sum(hits) / queries if queries else 0.0


def oracle_hit_rate(
    trace: Sequence[TraceRequest], total_capacity_blocks: int, block_size: int = 128
) -> float:
    """The hit rate of one cache as large as all replicas' together, serving the trace.

    What routing could reach if the replicas' caches were one: a yardstick for routers.
    """
    pooled = [TraceRequest("all", r.prompt_token_ids, r.output_tokens) for r in trace]
    return hit_rate(trace, exact_hits(pooled, total_capacity_blocks, block_size))
