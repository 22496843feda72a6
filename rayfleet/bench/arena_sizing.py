"""The arena's sizing: default workloads, simulated engines, load and the oracle.

Pure (no Ray): everything here runs offline on the request schedule the arena will send.

- ``default_params``: workload parameters that make routing matter. For shared-prefix the
  shared prefixes of all groups must not fit in one replica's KV cache but must fit in
  the fleet's caches together (by default 1.25 replicas' worth: 10 tenants × 4k-token
  prefixes on 8 replicas).
- ``estimate_capacity``: the fleet's steady-state request rate at saturation, from the
  simulator's step model in virtual time (one replica serving a 1/N share of the
  schedule with the fleet's caches as one, warmed first), times N. The arena offers
  ``LOAD_SHARE`` of it.
- ``oracle``: one LRU cache as large as all replicas' together, serving the same
  sequence (``rayfleet.bench.sim.offline.oracle_hit_rate``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rayfleet.bench.records import RequestSpec
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest
from rayfleet.bench.sim.offline import TraceRequest, oracle_hit_rate
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.tokens import SimTokenizer
from rayfleet.bench.sim.virtual import run_virtual

LOAD_SHARE = 0.7
# Shared prefixes worth this many replicas' caches by default: more than one replica
# holds, so a cache-blind router thrashes, yet few enough tenants per replica that a
# router must place and spill them by load (10 tenants on 8 replicas here). With many
# small tenants per replica every prefix-aware router balances alike (docs/benchmarks.md).
PREFIX_REPLICA_MULTIPLE = 1.25
MAX_PREFIX_FLEET_SHARE = 0.8
# Wall requests/s the 2-core machine serves without its own CPU being the bottleneck
# (proxy, ingress, router and load generator); time_scale slows the engines to fit.
DEFAULT_MAX_WALL_RATE = 6.0
CAPACITY_REQUESTS_PER_REPLICA = 96

# The simulated engine of the arena: vLLM-CPU's block size, a 32k-token KV cache (an
# L4-class GPU serving an 8B model).
DEFAULT_SIM: dict[str, Any] = {
    "block_size": 128,
    "num_kv_blocks": 256,
    "max_num_seqs": 64,
    "max_num_batched_tokens": 2048,
    "max_model_len": 8192,
    "tokenizer": "tiny",
}
SHARED_PREFIX_TOKENS = 4096
FIXED_PARAMS: dict[str, dict[str, Any]] = {
    "shared-prefix": {
        "num_prompts_per_group": 8,
        "system_prompt_len": SHARED_PREFIX_TOKENS,
        "question_len": 128,
        "output_len": 64,
    },
    "synthetic": {"input_len": 1024, "output_len": 64},
    # Chat users of 4 apps: each app's sessions share its system prompt (the case that
    # hot-spots a purely prefix-affine router); sessions of 2-10 turns start and end at
    # different times.
    "multi-turn": {
        "num_sessions": 32,
        "turns": "uniform:2:10",
        "system_prompt_len": 1024,
        "num_system_prompts": 4,
        "user_len": 128,
        "output_len": 64,
    },
    "pd-mix": {
        "long_fraction": 0.2,
        "long_input_len": 3072,
        "short_input_len": 256,
        "output_len": 64,
    },
}
WORKLOAD_NAMES = tuple(FIXED_PARAMS)


class SizingError(ValueError):
    """Arena sizing that cannot make the comparison mean something; says why."""


@dataclass(frozen=True)
class PrefixSizing:
    groups: int
    prefix_blocks_each: int
    all_prefix_blocks: int
    replica_blocks: int
    fleet_blocks: int

    @property
    def fits_one_replica(self) -> bool:
        return self.all_prefix_blocks <= self.replica_blocks

    @property
    def fits_fleet(self) -> bool:
        return self.all_prefix_blocks <= self.fleet_blocks

    def describe(self) -> dict[str, Any]:
        return {
            "groups": self.groups,
            "prefix_blocks_each": self.prefix_blocks_each,
            "all_prefix_blocks": self.all_prefix_blocks,
            "replica_kv_blocks": self.replica_blocks,
            "fleet_kv_blocks": self.fleet_blocks,
            "prefixes_over_one_replica": self.all_prefix_blocks / self.replica_blocks,
            "prefixes_over_fleet": self.all_prefix_blocks / self.fleet_blocks,
            "fits_one_replica": self.fits_one_replica,
            "fits_fleet": self.fits_fleet,
        }


def prefix_sizing(groups: int, prefix_tokens: int, sim: SimParams, replicas: int) -> PrefixSizing:
    each = prefix_tokens // sim.block_size  # only full blocks are cached
    return PrefixSizing(
        groups, each, groups * each, sim.num_kv_blocks, sim.num_kv_blocks * replicas
    )


def default_groups(replicas: int, sim: SimParams, prefix_tokens: int) -> int:
    """Enough groups that their prefixes overflow one replica but fit the fleet."""
    each = prefix_tokens // sim.block_size
    if each < 1:
        raise SizingError(f"a {prefix_tokens}-token prefix fills no {sim.block_size}-token block")
    groups = math.ceil(PREFIX_REPLICA_MULTIPLE * sim.num_kv_blocks / each)
    check_prefix_sizing(prefix_sizing(groups, prefix_tokens, sim, replicas), MAX_PREFIX_FLEET_SHARE)
    return groups


def check_prefix_sizing(sizing: PrefixSizing, max_fleet_share: float = 1.0) -> None:
    if sizing.fits_one_replica:
        raise SizingError(
            f"shared prefixes ({sizing.all_prefix_blocks} blocks) fit in one replica's "
            f"{sizing.replica_blocks}-block cache: every router would look alike"
        )
    if sizing.all_prefix_blocks > max_fleet_share * sizing.fleet_blocks:
        raise SizingError(
            f"shared prefixes ({sizing.all_prefix_blocks} blocks) exceed "
            f"{max_fleet_share:.0%} of the fleet's {sizing.fleet_blocks} blocks: "
            "use more replicas or fewer groups"
        )


def default_params(
    workload: str, replicas: int, sim: SimParams, given: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The arena's parameters, ``given`` ones winning; shared-prefix groups are sized for
    the prefix length in effect unless given."""
    if workload not in FIXED_PARAMS:
        raise SizingError(f"unknown arena workload {workload!r}; choose from {WORKLOAD_NAMES}")
    params = {**FIXED_PARAMS[workload], **(given or {})}
    if workload == "shared-prefix" and "num_groups" not in params:
        prefix_tokens = int(params["system_prompt_len"])
        params["num_groups"] = default_groups(replicas, sim, prefix_tokens)
    return params


# --- token ids, as the simulated engine sees them ----------------------------------------


def prompt_ids(spec: RequestSpec, tokenizer: SimTokenizer) -> tuple[int, ...]:
    if spec.prompt is not None:
        return tokenizer.encode(spec.prompt)
    return tokenizer.encode_chat(list(spec.messages or ()))


def trace_of(specs: Sequence[RequestSpec], tokenizer: SimTokenizer) -> list[TraceRequest]:
    return [TraceRequest("all", prompt_ids(s, tokenizer), s.max_tokens) for s in specs]


def router_settings(
    specs: Sequence[RequestSpec], trace: Sequence[TraceRequest], sim: SimParams
) -> dict[str, Any]:
    """RayFleet's approximate index sized like the engines: one character block per KV
    block (the schedule's measured characters per token) and the engine's capacity."""
    chars = sum(len(s.prompt or "".join(m["content"] for m in s.messages or ())) for s in specs)
    tokens = sum(len(r.prompt_token_ids) for r in trace)
    per_token = chars / tokens if tokens else 4.0
    return {
        "chars_per_token": round(per_token, 3),
        "block_chars": max(16, round(sim.block_size * per_token)),
        "block_tokens": sim.block_size,
        "cache_capacity_blocks": sim.num_kv_blocks,
    }


def oracle(trace: Sequence[TraceRequest], sim: SimParams, replicas: int) -> float:
    return oracle_hit_rate(trace, sim.num_kv_blocks * replicas, sim.block_size)


# --- capacity and load --------------------------------------------------------------------


@dataclass(frozen=True)
class Capacity:
    replica_rps_sim: float  # one replica, simulated seconds
    fleet_rps_sim: float
    requests_simulated: int
    makespan_sim_s: float

    def describe(self) -> dict[str, Any]:
        return {
            "method": "simulator step model in virtual time: one replica serves every "
            "N-th request of the schedule with N replicas' KV blocks (the fleet's caches "
            "as one, as for the oracle); the first half of that share warms the cache, "
            "the second half arrives at once and is timed; capacity = timed requests / "
            "makespan × N",
            "replica_requests_per_sim_s": self.replica_rps_sim,
            "fleet_requests_per_sim_s": self.fleet_rps_sim,
            "requests_simulated": self.requests_simulated,
            "makespan_sim_s": self.makespan_sim_s,
        }


def estimate_capacity(trace: Sequence[TraceRequest], sim: SimParams, replicas: int) -> Capacity:
    """The fleet's steady-state request rate with its caches used as one.

    One replica takes every N-th request (its 1/N share) with N replicas' KV blocks, the
    oracle's view of the fleet's cache: what routing could at best make of the reuse.
    The first half of the share warms that cache; the second half, all at once, is timed.
    A cache-blind router falls short of this capacity; that gap is what the arena shows.
    """
    share = list(trace[::replicas])[:CAPACITY_REQUESTS_PER_REPLICA]
    if len(share) < 2:
        raise SizingError("too few requests to estimate the capacity from")
    pooled = sim.model_copy(update={"num_kv_blocks": sim.num_kv_blocks * replicas})
    core = SimEngineCore(pooled)
    half = len(share) // 2

    def batch(part: Sequence[TraceRequest], at: float, tag: str) -> list[SimRequest]:
        return [
            SimRequest(f"cap-{tag}{i}", r.prompt_token_ids, r.output_tokens, arrival_s=at)
            for i, r in enumerate(part)
        ]

    warmed = run_virtual(core, batch(share[:half], 0.0, "warm-"))
    start = max(r.finished_s or 0.0 for r in warmed)
    timed = run_virtual(core, batch(share[half:], start, ""))
    makespan = max(r.finished_s or 0.0 for r in timed) - start
    per_replica = len(timed) / makespan
    return Capacity(per_replica, per_replica * replicas, len(timed), makespan)


@dataclass(frozen=True)
class LoadChoice:
    wall_rate: float
    time_scale: float
    sim_rate: float
    how: str

    def describe(self) -> dict[str, Any]:
        return {
            "wall_requests_per_s": self.wall_rate,
            "sim_requests_per_s": self.sim_rate,
            "time_scale": self.time_scale,
            "how": self.how,
        }


def choose_load(
    capacity: Capacity,
    rate: float | None = None,
    time_scale: float | None = None,
    max_wall_rate: float = DEFAULT_MAX_WALL_RATE,
) -> LoadChoice:
    """The offered wall rate and the engines' time scale.

    By default the load is ``LOAD_SHARE`` of capacity; the time scale (simulated seconds
    per wall second) is the largest ≤ 1 that keeps the wall rate ≤ ``max_wall_rate``.
    """
    target_sim = LOAD_SHARE * capacity.fleet_rps_sim
    if time_scale is None:
        time_scale = min(1.0, max_wall_rate / target_sim)
    if time_scale <= 0:
        raise SizingError(f"time_scale must be positive, got {time_scale}")
    if rate is not None:
        if rate <= 0:
            raise SizingError(f"--rate must be positive, got {rate}")
        share = rate / time_scale / capacity.fleet_rps_sim
        how = f"given: --rate {rate:g} req/s = {share:.0%} of the estimated capacity"
        return LoadChoice(rate, time_scale, rate / time_scale, how)
    how = f"{LOAD_SHARE:.0%} of the estimated fleet capacity, scaled to wall time"
    return LoadChoice(target_sim * time_scale, time_scale, target_sim, how)


def sim_params(overrides: Mapping[str, Any] | None = None) -> SimParams:
    return SimParams.model_validate({**DEFAULT_SIM, **(overrides or {})})
