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

import heapq
import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from rayfleet.bench.sim.blocks import block_hashes, max_hit_blocks
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest, StepPlan
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.tokens import load_sim_tokenizer
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
    core: SimEngineCore
    busy: bool = False
    # Decode role: its requests prefilling on the prefill pool (pd.py's ``_in_prefill``).
    in_prefill: int = 0

    @property
    def load(self) -> int:
        # Serve's router counts a decode replica's ongoing requests, remote prefills too.
        return len(self.core.waiting) + len(self.core.running) + self.in_prefill


@dataclass
class Fleet:
    """Engines stepping independently, driven by one event queue in virtual time."""

    prefill: list[_Engine]
    decode: list[_Engine]  # unified engines in unified mode
    events: list[tuple[float, int, str, object]] = field(default_factory=list)
    _seq: itertools.count = field(default_factory=itertools.count)

    def push(self, at_s: float, kind: str, payload: object) -> None:
        heapq.heappush(self.events, (at_s, next(self._seq), kind, payload))

    def submit(self, engine: _Engine, request: SimRequest, now: float) -> None:
        engine.core.add(request)
        self.kick(engine, now)

    def kick(self, engine: _Engine, now: float) -> None:
        if engine.busy:
            return
        plan = engine.core.begin_step(now)
        if plan is not None:
            engine.busy = True
            self.push(plan.end_s, "step", (engine, plan))


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
    fleet = Fleet(
        prefill=[_Engine(SimEngineCore(_params("prefill", params))) for _ in range(prefill)]
        if split
        else [],
        decode=[
            _Engine(SimEngineCore(_params("decode" if split else "unified", params)))
            for _ in range(replicas - prefill if split else replicas)
        ],
    )
    outcomes = [Outcome(a) for a in arrivals]
    for outcome in outcomes:
        fleet.push(outcome.arrival.at_s, "arrive", outcome)
    handoffs: dict[str, tuple[Outcome, _Engine]] = {}
    ids = itertools.count()
    while fleet.events:
        now, _, kind, payload = heapq.heappop(fleet.events)
        if kind == "arrive":
            assert isinstance(payload, Outcome)
            _arrive(fleet, payload, mode, policy, params.block_size, now, ids, handoffs)
            continue
        engine, plan = cast(tuple[_Engine, StepPlan], payload)
        engine.core.finish_step(plan)
        engine.busy = False
        for request, _ in plan.prefill:
            handed = handoffs.pop(request.request_id, None) if request.finished else None
            if handed is not None:
                _decode_after_prefill(fleet, *handed, request, params.block_size, now, ids)
        fleet.kick(engine, now)
    return outcomes


def _arrive(
    fleet: Fleet,
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
    decode = _least_loaded(fleet.decode)
    if mode == "conditional":
        uncached = _uncached(decode, arrival.prompt, block)
        path = choose_path(uncached, decode.in_prefill, policy)
    else:
        path = "disaggregated" if mode == "disaggregated" else "local"
    outcome.path = path
    request = SimRequest(f"r{next(ids)}", arrival.prompt, arrival.max_tokens, arrival_s=now)
    if path == "local":
        outcome.final = request
        fleet.submit(decode, request, now)
        return
    handoffs[request.request_id] = (outcome, decode)
    decode.in_prefill += 1
    fleet.submit(_least_loaded(fleet.prefill), request, now)


def _decode_after_prefill(
    fleet: Fleet,
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
    fleet.submit(decode, request, now)


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
