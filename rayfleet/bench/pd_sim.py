"""Unified vs always-disaggregated vs conditional disaggregation, simulated in virtual time.

Every mode gets the same ``pd-mix`` requests at the same Poisson arrivals and the same
total number of simulated engines (``rayfleet.bench.sim``'s step model, KV import
costed by ``kv_transfer_s_per_token``). No Ray, no sleeping: a run takes seconds and
is exactly reproducible.

- unified: N unified engines, each request to the least busy one.
- disaggregated: P prefill + (N - P) decode engines; every request prefills remotely,
  then decodes with the prefill engine's blocks imported.
- conditional: the same pools; requests whose uncached prompt (on the chosen decode
  engine) is below ``min_uncached_tokens``, or that arrive while that decode engine
  already has more than ``max_prefill_queue`` requests in remote prefill, prefill on
  decode (pd_policy).

As in ``deployments.pd`` (decode as orchestrator), each request goes to the least
busy decode engine on arrival (requests in remote prefill count), which decides with
its own cache and its own remote-prefill count, and decodes the request either way.

Run: ``rayfleet bench pd-arena --replicas 4 --prefill 1 --rate 6 --out DIR``
(``--param long_input_len=8192`` changes the pd-mix workload, ``--sim`` the engines).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rayfleet.bench.sim.blocks import block_hashes, max_hit_blocks
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest, StepPlan, TokenEvent
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.tokens import load_sim_tokenizer
from rayfleet.bench.sim.virtual import StepHook, VirtualFleet
from rayfleet.bench.text import TextMaker, load_tokenizer
from rayfleet.bench.workloads import build_workload
from rayfleet.deployments.pd_policy import PDPolicy, choose_path
from rayfleet.platform.tiny_model import ensure_tiny

Mode = Literal["unified", "disaggregated", "conditional"]
MODES: tuple[Mode, ...] = ("unified", "disaggregated", "conditional")


@dataclass(frozen=True)
class Arrival:
    at_s: float
    prompt: tuple[int, ...]
    max_tokens: int


@dataclass
class Outcome:
    arrival: Arrival
    final: SimRequest | None = None  # the request that produced the client's tokens
    path: str = "local"


@dataclass
class _Engine:
    index: int  # in the VirtualFleet
    core: SimEngineCore
    # Decode role: its requests prefilling on the prefill pool (pd.py's ``_in_prefill``).
    in_prefill: int = 0

    @property
    def load(self) -> int:
        # Serve's router counts a decode replica's ongoing requests, remote prefills too.
        return len(self.core.waiting) + len(self.core.running) + self.in_prefill


class _Pools:
    """The prefill and decode pools (unified engines in unified mode) on one clock."""

    def __init__(
        self, prefill: list[SimEngineCore], decode: list[SimEngineCore], on_step: StepHook
    ) -> None:
        self.fleet = VirtualFleet([*prefill, *decode], on_step)
        self.prefill = [_Engine(i, core) for i, core in enumerate(prefill)]
        self.decode = [_Engine(len(prefill) + i, core) for i, core in enumerate(decode)]

    def submit(self, engine: _Engine, request: SimRequest, now: float) -> None:
        self.fleet.submit(engine.index, request, now)


def _params(role: str, base: SimParams) -> SimParams:
    return base.model_copy(update={"role": role})


def _least_loaded(engines: Sequence[_Engine]) -> _Engine:
    return min(engines, key=lambda e: e.load)


def _uncached(engine: _Engine, prompt: Sequence[int], block: int) -> int:
    hashes = block_hashes(prompt, block)[: max_hit_blocks(len(prompt), block)]
    return len(prompt) - len(engine.core.pool.cached_prefix(hashes)) * block


def simulate(
    mode: Mode,
    arrivals: Sequence[Arrival],
    replicas: int,
    prefill: int,
    params: SimParams,
    policy: PDPolicy,
) -> list[Outcome]:
    split = mode != "unified"
    handoffs: dict[str, tuple[Outcome, _Engine]] = {}
    ids = itertools.count()

    def hand_over(_: int, plan: StepPlan, events: list[TokenEvent]) -> None:
        for request, _chunk in plan.prefill:
            handed = handoffs.pop(request.request_id, None) if request.finished else None
            if handed is not None:
                _decode_after_prefill(pools, *handed, request, params.block_size, plan.end_s, ids)

    pools = _Pools(
        prefill=[SimEngineCore(_params("prefill", params)) for _ in range(prefill if split else 0)],
        decode=[
            SimEngineCore(_params("decode" if split else "unified", params))
            for _ in range(replicas - prefill if split else replicas)
        ],
        on_step=hand_over,
    )
    outcomes = [Outcome(a) for a in arrivals]
    for outcome in sorted(outcomes, key=lambda o: o.arrival.at_s):
        now = outcome.arrival.at_s
        pools.fleet.run_until(now)
        _arrive(pools, outcome, mode, policy, params.block_size, now, ids, handoffs)
    pools.fleet.run_until()
    pools.fleet.check_drained()
    return outcomes


def _arrive(
    pools: _Pools,
    outcome: Outcome,
    mode: Mode,
    policy: PDPolicy,
    block: int,
    now: float,
    ids: itertools.count,
    handoffs: dict[str, tuple[Outcome, _Engine]],
) -> None:
    arrival = outcome.arrival
    # Decode as orchestrator (pd.py): the ingress picks a decode replica, which decides
    # with what it knows (its own cache and its own requests in remote prefill) and
    # decodes the request itself whichever path it takes.
    decode = _least_loaded(pools.decode)
    if mode == "conditional":
        uncached = _uncached(decode, arrival.prompt, block)
        path = choose_path(uncached, decode.in_prefill, policy)
    else:
        path = "disaggregated" if mode == "disaggregated" else "local"
    outcome.path = path
    request = SimRequest(f"r{next(ids)}", arrival.prompt, arrival.max_tokens, arrival_s=now)
    if path == "local":
        outcome.final = request
        pools.submit(decode, request, now)
        return
    handoffs[request.request_id] = (outcome, decode)
    decode.in_prefill += 1
    pools.submit(_least_loaded(pools.prefill), request, now)


def _decode_after_prefill(
    pools: _Pools,
    outcome: Outcome,
    decode: _Engine,
    prefilled: SimRequest,
    block: int,
    now: float,
    ids: itertools.count,
) -> None:
    arrival = outcome.arrival
    request = SimRequest(
        f"r{next(ids)}",
        arrival.prompt,
        arrival.max_tokens,
        arrival_s=now,
        import_hashes=prefilled.transfer_hashes(block),
    )
    outcome.final = request
    decode.in_prefill -= 1
    pools.submit(decode, request, now)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(outcomes: Sequence[Outcome]) -> dict[str, float]:
    ttft, tpot = [], []
    for o in outcomes:
        final = o.final
        assert final is not None and final.first_token_s is not None
        ttft.append(final.first_token_s - o.arrival.at_s)
        if len(final.token_times) > 1:
            tpot.append(
                (final.token_times[-1] - final.token_times[0]) / (len(final.token_times) - 1)
            )
    return {
        "ttft_p50_s": _percentile(ttft, 0.5),
        "ttft_p90_s": _percentile(ttft, 0.9),
        "tpot_p50_s": _percentile(tpot, 0.5),
        "tpot_p99_s": _percentile(tpot, 0.99),
        "disaggregated": sum(o.path == "disaggregated" for o in outcomes),
        "requests": len(outcomes),
    }


def pd_mix_arrivals(
    count: int, rate: float, seed: int = 0, workload: Mapping[str, Any] | None = None
) -> list[Arrival]:
    """The pd-mix workload's first ``count`` requests at Poisson arrivals (tiny tokenizer)."""
    maker = TextMaker(load_tokenizer(ensure_tiny()))
    specs = build_workload("pd-mix", workload or {}, maker, seed).take(count)
    tokenizer = load_sim_tokenizer("tiny")
    rng = random.Random(seed)
    now, arrivals = 0.0, []
    for spec in specs:
        now += rng.expovariate(rate)
        arrivals.append(Arrival(now, tuple(tokenizer.encode(spec.prompt or "")), spec.max_tokens))
    return arrivals


def compare(
    replicas: int,
    prefill: int,
    rate: float,
    count: int,
    policy: PDPolicy,
    params: SimParams,
    workload: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    arrivals = pd_mix_arrivals(count, rate, seed, workload)
    return {
        mode: summarize(simulate(mode, arrivals, replicas, prefill, params, policy))
        for mode in MODES
    }
