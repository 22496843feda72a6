"""``--engine virtual``: the arena's fleet in virtual time, without Ray or HTTP.

N ``SimEngineCore``s serve the arena's schedule (the same requests, Poisson arrivals
with the same seed, at the simulated rate) on one virtual clock (``VirtualFleet``): at
each arrival the router has seen every step that ended before it, then a policy picks
the replica:

- ``pow2``: two random replicas, the one with fewer requests in flight (Ray Serve's
  default, with its queue-length probe replaced by the exact count);
- ``ray-prefix``: Ray's ``PrefixCacheAffinityRouter`` decision with its defaults, on
  Ray's own ``PrefixTree`` in-process (the deployed router reaches it through an actor):
  the longest-matching replicas, or the smallest tree tenants below a 10% match rate,
  then the fewest requests in flight among them (Serve's queue-length probe);
- ``rayfleet``: RayFleet's router core (``CacheAwareRouter``) with the spec's settings,
  told of every routing and completion as the Serve adapter would.

Times are simulated seconds. Exact and fast: a check of the policies, and of the arena's sizing,
when the machine cannot run the real thing.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rayfleet.bench.sim.engine import SimEngineCore, SimRequest, StepPlan, TokenEvent
from rayfleet.bench.sim.offline import TraceRequest
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.virtual import VirtualFleet
from rayfleet.platform.spec import Router
from rayfleet.router.core import CacheAwareRouter
from rayfleet.router.prompt import PromptInput

VIRTUAL_ROUTERS = ("pow2", "ray-prefix", "rayfleet")


@dataclass(frozen=True)
class VirtualRun:
    served: list[SimRequest]  # with their engine timings, in sending order
    hits: int  # prefix-cache hit tokens, all engines
    queries: list[int]  # prompt tokens per replica


def poisson_arrivals(count: int, rate: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    times, now = [], 0.0
    for _ in range(count):
        now += rng.expovariate(rate)
        times.append(now)
    return times


class _Fleet:
    """The arena's engines on one virtual clock, reporting completions to the router."""

    def __init__(self, sim: SimParams, replicas: int, router: CacheAwareRouter | None) -> None:
        self.engines = VirtualFleet([SimEngineCore(sim) for _ in range(replicas)], self._stepped)
        self.inflight = [0] * replicas
        self.router = router

    def _stepped(self, replica: int, plan: StepPlan, events: list[TokenEvent]) -> None:
        for event in events:
            if event.finished:
                self.inflight[replica] -= 1
                if self.router is not None:
                    self.router.on_completed(event.request.request_id, replica)

    def routing_stats(self, replica: int, now: float) -> dict[str, Any]:
        """What ``SimLLMServer.record_routing_stats`` would report now."""
        core = self.engines.cores[replica]
        return {
            "num_running": len(core.running),
            "num_waiting": len(core.waiting),
            "kv_cache_usage": core.kv_cache_usage,
            "reported_at": now,
        }

    def submit(self, replica: int, request: SimRequest, now: float) -> None:
        self.engines.submit(replica, request, now)
        self.inflight[replica] += 1


class _RayPrefix:
    """PrefixCacheAffinityRouter's choice (defaults: imbalanced_threshold=inf, so load
    never overrides the tree; match_rate_threshold=0.1; no eviction)."""

    MATCH_RATE_THRESHOLD = 0.1

    def __init__(self, replicas: int) -> None:
        from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_tree import (
            PrefixTree,
        )

        self.tree = PrefixTree()
        self.tenants = [str(r) for r in range(replicas)]
        self.tree.add_tenants(self.tenants, 0.0)

    def choose(self, text: str, inflight: Sequence[int], at: float) -> int:
        matched, tenants = self.tree.prefix_match(text, self.tenants)
        if not text or len(matched) / len(text) < self.MATCH_RATE_THRESHOLD:
            tenants = self.tree.get_smallest_tenants()
        chosen = min((int(t) for t in tenants or self.tenants), key=inflight.__getitem__)
        self.tree.insert(text, str(chosen), at)
        return chosen


def _text(prompt: str | None, messages: Sequence[dict[str, str]] | None) -> str:
    return prompt if prompt is not None else "".join(m["content"] for m in messages or ())


def run_policy(
    policy: str,
    prompts: Sequence[tuple[str | None, Sequence[dict[str, str]] | None]],
    trace: Sequence[TraceRequest],
    arrivals: Sequence[float],
    sim: SimParams,
    replicas: int,
    settings: dict[str, Any],
    seed: int = 0,
    stats_period_s: float | None = None,
) -> VirtualRun:
    """Serve the schedule with ``policy``.

    ``stats_period_s`` (simulated seconds): how often rayfleet's router receives the
    engines' routing stats, as Serve polls them; None: never.
    """
    if policy not in VIRTUAL_ROUTERS:
        raise ValueError(f"the virtual engine runs {', '.join(VIRTUAL_ROUTERS)}, not {policy!r}")
    router = None
    ray_prefix = _RayPrefix(replicas) if policy == "ray-prefix" else None
    now = [0.0]  # the router's clock: simulated time
    if policy == "rayfleet":
        spec = Router.model_validate({**settings, "policy": "rayfleet"})
        router = CacheAwareRouter(spec, clock=lambda: now[0])
        router.sync_replicas(dict.fromkeys(range(replicas)))
    next_stats = 0.0
    fleet = _Fleet(sim, replicas, router)
    candidates = tuple(range(replicas))
    rng = random.Random(seed)
    served = []
    for index, ((prompt, messages), request, at) in enumerate(
        zip(prompts, trace, arrivals, strict=True)
    ):
        fleet.engines.run_until(at)
        now[0] = at
        if router is not None and stats_period_s is not None and at >= next_stats:
            for replica in candidates:
                router.update_replica(replica, fleet.routing_stats(replica, at), at)
            next_stats = at + stats_period_s
        request_id = f"v{index}"
        if ray_prefix is not None:
            chosen = ray_prefix.choose(_text(prompt, messages), fleet.inflight, at)
        elif router is None:
            a, b = rng.sample(candidates, 2) if replicas > 1 else (0, 0)
            chosen = a if fleet.inflight[a] <= fleet.inflight[b] else b
        else:
            text = PromptInput(text=_text(prompt, messages), max_tokens=request.output_tokens)
            prepared = router.prepare(text, request_id)
            picked = router.choose(candidates, prepared, fleet.inflight.__getitem__).chosen
            chosen = picked if isinstance(picked, int) else 0
            router.on_routed(request_id, chosen)
        sim_request = SimRequest(
            request_id, request.prompt_token_ids, request.output_tokens, arrival_s=at
        )
        fleet.submit(chosen, sim_request, at)
        served.append(sim_request)
    fleet.engines.run_until()
    fleet.engines.check_drained()
    cores = fleet.engines.cores
    return VirtualRun(
        served, sum(c.prefix_cache_hits for c in cores), [c.prefix_cache_queries for c in cores]
    )


def virtual_row(run: VirtualRun, replicas: int) -> dict[str, Any]:
    """The arena row of a virtual run (simulated seconds)."""
    served, hits, queries = run.served, run.hits, run.queries
    ttft = [r.first_token_s - r.arrival_s for r in served if r.first_token_s is not None]
    tpot = [
        (r.token_times[-1] - r.token_times[0]) / (len(r.token_times) - 1)
        for r in served
        if len(r.token_times) > 1
    ]
    e2e = [r.finished_s - r.arrival_s for r in served if r.finished_s is not None]
    span = max(r.finished_s or 0.0 for r in served) - min(r.arrival_s for r in served)
    tokens = sum(len(r.output_token_ids) for r in served)

    def pct(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    total = sum(queries)
    return {
        "ttft_p50": pct(ttft, 50),
        "ttft_p90": pct(ttft, 90),
        "ttft_p99": pct(ttft, 99),
        "tpot_p50": pct(tpot, 50),
        "tpot_p99": pct(tpot, 99),
        "e2e_p99": pct(e2e, 99),
        "output_tok_s": tokens / span if span > 0 else None,
        "prefix_hit_rate": hits / total if total else None,
        "max_over_mean_load": max(queries) / (total / replicas) if total else None,
        "load_unit": "prompt tokens per replica (engine prefix-cache queries)",
        "prompt_tokens_per_replica": sorted(queries, reverse=True),
        "requests_ok": len(served),
        "requests_failed": 0,
    }
