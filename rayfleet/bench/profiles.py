"""Stored runs as fleet configurations and their measured load points.

A configuration is what a recommendation can choose: the model, its pools (unified,
or prefill + decode), each pool's accelerator and replica count, and the router.
Runs of the same configuration under the same workload pool their sweep stages.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rayfleet.bench.costs import (
    PriceTable,
    accelerator_units,
    parse_pools,
    pools_hourly_usd,
    token_costs,
)
from rayfleet.bench.served import accelerator_name
from rayfleet.bench.store import ProfileStore, RunEntry, RunFilter
from rayfleet.platform.spec import Pool

MIN_ANSWERED = 0.9  # a stage whose answered req/s fell below this share of the offered rate


@dataclass(frozen=True)
class FleetConfig:
    model: str
    accelerator: str  # as the store names it: cpu, nvidia-l4x1, tpu-v6e-2x4, ...
    replicas: tuple[tuple[str, int], ...]  # (role, replicas), roles in spec order
    router: str
    workload: str  # name and parameters, without the seed
    pools_json: str = field(compare=False, default="{}")  # the stored pools, for --emit
    details_json: str = field(compare=False, default="{}")  # spec name, source, ...

    @property
    def disaggregated(self) -> bool:
        return dict(self.replicas).get("prefill") is not None

    @property
    def layout(self) -> str:
        counts = dict(self.replicas)
        if self.disaggregated:
            return f"PD {counts['prefill']}:{counts.get('decode', 0)}"
        return f"unified ×{counts.get('unified', 0)}"

    @property
    def label(self) -> str:
        return f"{self.accelerator} {self.layout} {self.router}"

    def pools(self) -> dict[str, Pool]:
        return parse_pools(json.loads(self.pools_json))

    def details(self) -> dict[str, Any]:
        return dict(json.loads(self.details_json))

    def hourly_usd(self, prices: PriceTable) -> float:
        return pools_hourly_usd(self.pools(), prices)

    def with_replicas(self, role: str, count: int) -> FleetConfig:
        """The same configuration with another replica count in one pool."""
        stored = json.loads(self.pools_json)
        stored[role] = {**stored[role], "replicas": count, "autoscaling": None}
        replicas = tuple((r, count if r == role else n) for r, n in self.replicas)
        return FleetConfig(
            self.model,
            self.accelerator,
            replicas,
            self.router,
            self.workload,
            json.dumps(stored, sort_keys=True),
            self.details_json,
        )


@dataclass(frozen=True)
class Point:
    """One load level of one configuration: measured (a stored stage) or predicted."""

    config: FleetConfig
    load: float  # offered requests/s
    requests_per_s: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    ttft_p90_s: float | None
    tpot_p90_s: float | None
    saturated: str | None
    source: str  # RUN_ID#STAGE, or what the prediction was calibrated from
    predicted: bool = False
    held_out_error: dict[str, float] | None = None  # mean |relative error| per metric

    def meets(self, ttft_p90_s: float, tpot_p90_s: float) -> bool:
        return (
            self.saturated is None
            and self.ttft_p90_s is not None
            and self.tpot_p90_s is not None
            and self.ttft_p90_s <= ttft_p90_s
            and self.tpot_p90_s <= tpot_p90_s
        )

    def costs(self, prices: PriceTable) -> tuple[float, float | None, float | None]:
        """$/hour, $/M output tokens and $/M input tokens at this point's throughput."""
        hourly = self.config.hourly_usd(prices)
        tokens = token_costs(
            hourly,
            self.input_tokens_per_s,
            self.output_tokens_per_s,
            prices.output_input_cost_ratio,
        )
        if tokens is None:
            return hourly, None, None
        return hourly, tokens.per_million_output, tokens.per_million_input


def workload_key(workload: dict[str, Any]) -> str:
    params = {k: v for k, v in workload.items() if k not in ("name", "seed")}
    return f"{workload.get('name')} {json.dumps(params, sort_keys=True, default=str)}"


def config_of(entry: RunEntry) -> FleetConfig:
    served = entry.served
    pools = parse_pools(served.pools) if served.pools else {}
    return FleetConfig(
        model=served.model,
        accelerator=served.accelerator,
        replicas=tuple((role, pool.min_replicas) for role, pool in pools.items()),
        router=served.router_policy,
        workload=workload_key(entry.workload),
        pools_json=json.dumps(served.pools, sort_keys=True),
        details_json=json.dumps(served.details, sort_keys=True),
    )


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def stage_point(config: FleetConfig, run_id: str, stage: dict[str, Any]) -> Point:
    load = _float(stage.get("load"))
    answered = stage.get("completion_rate_per_s")
    saturated = stage.get("saturated")
    if saturated is None and answered is not None and answered < MIN_ANSWERED * load:
        saturated = f"answered {answered:.2f} of {load:g} req/s offered"
    return Point(
        config=config,
        load=load,
        requests_per_s=_float(stage.get("requests_per_s")),
        input_tokens_per_s=_float(stage.get("input_tokens_per_s")),
        output_tokens_per_s=_float(stage.get("output_tokens_per_s")),
        ttft_p90_s=(stage.get("ttft_s") or {}).get("p90"),
        tpot_p90_s=(stage.get("tpot_s") or {}).get("p90"),
        saturated=saturated,
        source=f"{run_id}#{stage.get('stage', 0)}",
    )


def rate_runs(
    store: ProfileStore, model: str | None = None, accelerators: Iterable[str] | None = None
) -> list[RunEntry]:
    """Stored open-loop (request-rate) runs of served configurations, newest first."""
    wanted = set(accelerators or [])
    runs = []
    for entry in store.runs(RunFilter(model=model)):
        if entry.load.get("mode") != "rate" or not entry.served.pools:
            continue  # closed-loop loads are not a QPS; server-tagged runs have no pools
        if wanted and not wanted & accelerator_units_of(entry):
            continue
        runs.append(entry)
    return runs


def accelerator_units_of(entry: RunEntry) -> set[str]:
    """Names an --accelerators filter can use for a run: store label and pool types."""
    names = {entry.served.accelerator}
    for pool in parse_pools(entry.served.pools).values():
        acc = pool.accelerator
        names.update((accelerator_name(acc), accelerator_units(acc)[0], acc.kind))
    return names


def measured_points(runs: Iterable[RunEntry]) -> dict[FleetConfig, list[Point]]:
    """Every stage of every run, grouped by configuration, by offered load."""
    grouped: dict[FleetConfig, list[Point]] = {}
    for entry in runs:
        config = config_of(entry)
        points = grouped.setdefault(config, [])
        points.extend(stage_point(config, entry.run_id, s) for s in entry.stages)
    for points in grouped.values():
        points.sort(key=lambda p: p.load)
    return grouped
