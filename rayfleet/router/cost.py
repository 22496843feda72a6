"""Decision cost: RayFleet's policy against Ray 2.60's PrefixTree, in one process.

Both see the same shared-prefix prompts (~3,000 characters: a group's shared prefix
plus a unique question), after the same warm-up, on the same replica count.

- decision (p50/p99): given the prepared request, look the prefix up and pick replicas;
- total (p99): decision + preparing the prompt (hashing / text extraction) + recording
  the routed request (index insert, load accounting).

Ray's side replays what ``PrefixCacheAffinityRouter`` does per request (queue-length
imbalance check, ``prefix_match``, ``get_smallest_tenants`` below the match-rate
threshold, ``insert`` once routed) on an in-process ``PrefixTree``. The real router
makes those calls on a detached actor through ``ray.get``, so this flatters Ray.
Requests are timed interleaved, so machine noise hits both policies alike, and with
the garbage collector paused, as ``timeit`` does.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rayfleet.platform.spec import Router
from rayfleet.router.core import CacheAwareRouter
from rayfleet.router.prompt import PromptInput

Timing = tuple[float, float]  # (decision seconds, total seconds)
_WORDS = [
    "cache",
    "replica",
    "prefill",
    "decode",
    "token",
    "block",
    "router",
    "engine",
    "serve",
    "cluster",
    "node",
    "request",
    "latency",
    "batch",
    "queue",
    "model",
    "prompt",
    "answer",
    "system",
    "user",
    "context",
    "window",
    "memory",
    "tensor",
    "weight",
    "layer",
    "attention",
    "head",
    "vector",
    "policy",
    "load",
    "share",
    "stream",
]


@dataclass(frozen=True)
class CostWorkload:
    groups: int = 16
    prefix_chars: int = 2_200
    suffix_chars: int = 800
    warm_requests: int = 2_000
    timed_requests: int = 2_000
    seed: int = 7


def _words(rng: random.Random, chars: int) -> str:
    parts: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(_WORDS)
        parts.append(word)
        size += len(word) + 1
    return " ".join(parts)[:chars]


def shared_prefix_prompts(workload: CostWorkload, count: int, rng: random.Random) -> list[str]:
    """Prompts of ~prefix+suffix characters; each starts with one of ``groups`` prefixes."""
    prefix_rng = random.Random(workload.seed)
    prefixes = [_words(prefix_rng, workload.prefix_chars) for _ in range(workload.groups)]
    return [f"{rng.choice(prefixes)}\n{_words(rng, workload.suffix_chars)}" for _ in range(count)]


@dataclass
class RayfleetSide:
    """The RayFleet core, fed fresh stats and a Serve-like queue-length cache."""

    replicas: int
    settings: Router = field(default_factory=lambda: Router(policy="rayfleet"))

    def __post_init__(self) -> None:
        self.core = CacheAwareRouter(self.settings)
        self.candidates = tuple(f"replica-{i}" for i in range(self.replicas))
        now = time.time()
        stats = {"num_running": 1, "num_waiting": 0, "kv_cache_usage": 0.3, "reported_at": now}
        self.core.sync_replicas({r: stats for r in self.candidates})
        rng = random.Random(self.replicas)
        self.queue_lens = {r: rng.randint(0, 4) for r in self.candidates}
        self.reasons: dict[str, int] = {}
        self._count = 0

    def route(self, prompt: str) -> tuple[str, str, Timing]:
        self._count += 1
        request_id = f"req-{self._count}"
        started = time.perf_counter()
        prepared = self.core.prepare(PromptInput(text=prompt), request_id)
        decided_from = time.perf_counter()
        decision = self.core.choose(self.candidates, prepared, self.queue_lens.get)
        decided = time.perf_counter()
        chosen = str(decision.chosen)
        self.core.on_routed(request_id, chosen, prepared)
        finished = time.perf_counter()
        self.reasons[decision.reason] = self.reasons.get(decision.reason, 0) + 1
        return request_id, chosen, (decided - decided_from, finished - started)

    def complete(self, request_id: str, replica: str) -> None:
        self.core.on_completed(request_id, replica)


@dataclass
class RayPrefixSide:
    """Ray's PrefixTree used the way PrefixCacheAffinityRouter uses it."""

    replicas: int
    imbalanced_threshold: float = float("inf")  # PrefixCacheAffinityRouter's default
    match_rate_threshold: float = 0.1

    def __post_init__(self) -> None:
        from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_tree import (
            PrefixTree,
        )

        self.tree = PrefixTree()
        self.tenants = [f"replica-{i}" for i in range(self.replicas)]
        self.tree.add_tenants(self.tenants, time.time())
        rng = random.Random(self.replicas)
        self.queue_lens = {t: rng.randint(0, 4) for t in self.tenants}

    def _choose(self, text: str) -> str:
        lens = [self.queue_lens[t] for t in self.tenants]
        chosen: Sequence[str] | None = None
        if max(lens) - min(lens) <= self.imbalanced_threshold:
            matched, tenants = self.tree.prefix_match(text, self.tenants)
            if len(matched) / len(text) < self.match_rate_threshold:
                chosen = self.tree.get_smallest_tenants()
            else:
                chosen = tenants
        # Serve then probes the chosen replicas and takes the shortest queue.
        return min(chosen or self.tenants[:2], key=self.queue_lens.__getitem__)

    def route(self, prompt: str) -> tuple[str, Timing]:
        started = time.perf_counter()
        text = prompt  # PrefixCacheAffinityRouter's text extraction: the prompt itself
        decided_from = time.perf_counter()
        chosen = self._choose(text)
        decided = time.perf_counter()
        self.tree.insert(text, chosen, time.time())
        finished = time.perf_counter()
        return chosen, (decided - decided_from, finished - started)


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def summarize(timings: list[Timing]) -> dict[str, float]:
    decisions = [d * 1e6 for d, _ in timings]
    totals = [t * 1e6 for _, t in timings]
    return {
        "p50_us": round(statistics.median(decisions), 2),
        "p99_us": round(_p99(decisions), 2),
        "total_p99_us": round(_p99(totals), 2),
    }


def _rayfleet_router(side: RayfleetSide, window: int) -> Callable[[str], Timing]:
    """Route through RayFleet, completing requests ``window`` behind, so load stays real."""
    inflight: list[tuple[str, str]] = []

    def route(prompt: str) -> Timing:
        request_id, chosen, timing = side.route(prompt)
        inflight.append((request_id, chosen))
        if len(inflight) > window:
            side.complete(*inflight.pop(0))
        return timing

    return route


def measure(replicas: int, workload: CostWorkload) -> dict[str, dict[str, float]]:
    """Warm both policies on the same prompts, then time them interleaved."""
    rng = random.Random(workload.seed + replicas)
    warm = shared_prefix_prompts(workload, workload.warm_requests, rng)
    timed = shared_prefix_prompts(workload, workload.timed_requests, rng)
    rayfleet = RayfleetSide(replicas)
    ray_prefix = RayPrefixSide(replicas)
    route_rayfleet = _rayfleet_router(rayfleet, window=min(4 * replicas, 256))
    for prompt in warm:
        route_rayfleet(prompt)
        ray_prefix.route(prompt)
    ours: list[Timing] = []
    theirs: list[Timing] = []
    # Like timeit, time with the garbage collector off: otherwise a collection caused
    # by one side's allocations lands in the other side's timed section.
    gc.collect()
    gc.disable()
    try:
        for i, prompt in enumerate(timed):
            # Alternate who goes first so neither always runs on a warmer cache.
            if i % 2:
                ours.append(route_rayfleet(prompt))
                theirs.append(ray_prefix.route(prompt)[1])
            else:
                theirs.append(ray_prefix.route(prompt)[1])
                ours.append(route_rayfleet(prompt))
    finally:
        gc.enable()
    return {"rayfleet": summarize(ours), "ray-prefix": summarize(theirs)}
