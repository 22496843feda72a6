"""Recommend the cheapest configuration that meets latency targets at a request rate.

Evidence per configuration, in order of preference:

1. measured: the stored stage at the lowest offered rate ≥ the requested QPS. Latency
   rises with load, so a stage that meets the targets at a higher rate vouches for
   the requested one; a stage at (about) the requested rate that misses them rules
   the configuration out, and so does any measured stage below the rate that misses.
2. predicted: otherwise, and for replica counts never measured, the simulator
   calibrated on the stored single-replica stages (``rayfleet.bench.predict``),
   marked as predicted, with its leave-one-out error.

With a QPS the cheapest per hour wins (the fleet is sized for that rate); without
one, the lowest $/M output tokens at the best stage meeting the targets.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from rayfleet.bench import predict
from rayfleet.bench.costs import PriceTable
from rayfleet.bench.profiles import FleetConfig, Point, measured_points, rate_runs
from rayfleet.bench.store import ProfileStore, RunEntry
from rayfleet.platform.spec import EMBEDDED_TINY, parse_spec

SAME_RATE = 0.05  # a stage within 5% of the requested QPS measures that QPS


@dataclass(frozen=True)
class Targets:
    model: str
    ttft_p90_s: float
    tpot_p90_s: float
    qps: float | None = None
    accelerators: tuple[str, ...] = ()
    max_replicas: int = 4

    def __post_init__(self) -> None:
        if self.ttft_p90_s <= 0 or self.tpot_p90_s <= 0:
            raise ValueError("latency targets must be positive")
        if self.qps is not None and self.qps <= 0:
            raise ValueError(f"--qps must be positive, got {self.qps}")


@dataclass(frozen=True)
class Option:
    point: Point  # the evidence
    meets: bool
    hourly_usd: float
    per_million_output: float | None
    per_million_input: float | None
    note: str = ""

    @property
    def config(self) -> FleetConfig:
        return self.point.config


@dataclass
class Predictor:
    """A simulator calibrated on one accelerator's single-replica stages."""

    model: predict.Calibrated
    base: FleetConfig  # the single-replica configuration it was fitted on
    duration_s: float
    held_out: list[dict[str, Any]] = field(default_factory=list)  # leave-one-out
    transfer: list[dict[str, Any]] = field(default_factory=list)  # other replica counts

    @property
    def error(self) -> dict[str, float]:
        return predict.error_summary(self.held_out)

    @property
    def transfer_error(self) -> dict[str, float]:
        return predict.error_summary(self.transfer)

    def matches(self, config: FleetConfig) -> bool:
        """Same model, accelerator, router and workload, with one unified pool."""
        base = self.base
        return (
            set(dict(config.replicas)) == {"unified"}
            and (base.model, base.accelerator, base.router, base.workload)
            == (config.model, config.accelerator, config.router, config.workload)
            and base.pools()["unified"].accelerator == config.pools()["unified"].accelerator
        )

    def point(self, config: FleetConfig, rate: float) -> Point:
        return predict.predicted_point(self.model, config, rate, self.duration_s, self.error)


@dataclass
class Recommendation:
    targets: Targets
    best: Option | None
    options: list[Option]
    predictors: list[Predictor]


def build_predictors(
    runs: Sequence[RunEntry], grouped: dict[FleetConfig, list[Point]]
) -> list[Predictor]:
    """One per single-replica unified configuration with per-request records."""
    predictors = []
    for config, points in grouped.items():
        if dict(config.replicas) != {"unified": 1}:
            continue
        run_ids = {p.source.partition("#")[0] for p in points}
        mine = [e for e in runs if e.run_id in run_ids]
        stages = [s for e in mine for s in predict.stage_data(e, points)]
        if len(stages) < 2:
            continue
        params = predict.engine_params(config)
        try:
            model = predict.calibrate(stages, params)
        except ValueError:
            continue  # too few usable requests to fit
        duration = statistics.median(s.duration_s for s in stages) or 15.0
        predictor = Predictor(model, config, duration, predict.leave_one_out(stages, params))
        others = [
            p for c, ps in grouped.items() if c != config and predictor.matches(c) for p in ps
        ]
        predictor.transfer = predict.transfer_errors(model, others, duration)
        predictors.append(predictor)
    return predictors


def _option(point: Point, targets: Targets, prices: PriceTable, note: str = "") -> Option:
    hourly, per_out, per_in = point.costs(prices)
    meets = point.meets(targets.ttft_p90_s, targets.tpot_p90_s)
    return Option(point, meets, hourly, per_out, per_in, note)


def _predictor_for(config: FleetConfig, predictors: Sequence[Predictor]) -> Predictor | None:
    """Prefill/decode pools are not simulated here: only unified configurations."""
    return next((p for p in predictors if p.matches(config)), None)


def evidence_at(
    points: Sequence[Point], targets: Targets, prices: PriceTable, predictor: Predictor | None
) -> Option:
    """The option for one configuration at the requested QPS (see the module docstring)."""
    qps = targets.qps
    assert qps is not None
    above = [p for p in points if p.load >= qps * (1 - SAME_RATE)]
    first = min(above, key=lambda p: p.load) if above else None
    if first is not None:
        option = _option(first, targets, prices)
        if option.meets or first.load <= qps * (1 + SAME_RATE) or predictor is None:
            return option
    below = [_option(p, targets, prices) for p in points if p.load <= qps]
    failed = [o for o in below if not o.meets]
    if failed:  # it already missed the targets at a lower measured rate
        worst = max(failed, key=lambda o: o.point.load)
        return replace(worst, note=f"misses the targets below {qps:g} req/s")
    if predictor is not None:
        return _option(predictor.point(points[0].config, qps), targets, prices)
    # Measured only below the rate and nothing to predict with: no evidence it holds.
    highest = _option(max(points, key=lambda p: p.load), targets, prices)
    return replace(highest, meets=False, note=f"not measured at {qps:g} req/s")


def best_measured(points: Sequence[Point], targets: Targets, prices: PriceTable) -> Option:
    """Without a QPS: the stage with the most output tokens/s that meets the targets."""
    options = [_option(p, targets, prices) for p in points]
    meeting = [o for o in options if o.meets]
    if meeting:
        return max(meeting, key=lambda o: o.point.output_tokens_per_s)
    return min(options, key=lambda o: o.point.load)


def unmeasured_replicas(
    grouped: dict[FleetConfig, list[Point]], predictors: Sequence[Predictor], targets: Targets
) -> list[Point]:
    """Predicted points for replica counts of calibrated configurations never measured."""
    if targets.qps is None:
        return []
    measured = set(grouped)
    points = []
    for predictor in predictors:
        for count in range(1, targets.max_replicas + 1):
            config = predictor.base.with_replicas("unified", count)
            if config not in measured:
                points.append(predictor.point(config, targets.qps))
    return points


def _rank(option: Option, by_hour: bool) -> tuple[Any, ...]:
    cost = option.hourly_usd if by_hour else (option.per_million_output or float("inf"))
    return (not option.meets, cost, option.point.predicted, option.point.ttft_p90_s or 0.0)


def recommend(store: ProfileStore, targets: Targets, prices: PriceTable) -> Recommendation:
    runs = rate_runs(store, targets.model, targets.accelerators)
    grouped = measured_points(runs)
    if not grouped:
        wanted = f" on {', '.join(targets.accelerators)}" if targets.accelerators else ""
        raise LookupError(
            f"no stored rate-sweep runs of model {targets.model!r}{wanted} with a spec; "
            "run `rayfleet bench run --spec SPEC --sweep ...` first"
        )
    # Predictions fill gaps at a requested rate; without one, only measurements count.
    predictors = build_predictors(runs, grouped) if targets.qps is not None else []
    options = []
    for config, points in grouped.items():
        if targets.qps is None:
            options.append(best_measured(points, targets, prices))
        else:
            predictor = _predictor_for(config, predictors)
            options.append(evidence_at(points, targets, prices, predictor))
    options += [
        _option(p, targets, prices) for p in unmeasured_replicas(grouped, predictors, targets)
    ]
    options.sort(key=lambda o: _rank(o, by_hour=targets.qps is not None))
    best = options[0] if options and options[0].meets else None
    return Recommendation(targets, best, options, predictors)


def _clean(value: Any) -> Any:
    """Drop None fields so the emitted spec only says what matters."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    return value


def spec_data(config: FleetConfig) -> dict[str, Any]:
    """A spec (as YAML-ready data) serving the configuration, checked by the spec parser."""
    details = config.details()
    model: dict[str, Any] = {
        "id": config.model,
        "source": details.get("source") or EMBEDDED_TINY,
        "pools": _clean(json.loads(config.pools_json)),
    }
    if details.get("max_model_len"):
        model["max_model_len"] = details["max_model_len"]
    if config.disaggregated:
        model["disaggregation"] = {}
    data = {
        "name": details.get("spec_name") or "rayfleet",
        "models": [model],
        "router": {"policy": config.router},
        # For a RayService: the Serve proxies must listen beyond the pod's loopback.
        "http": {"host": "0.0.0.0"},
    }
    parse_spec(data, f"the spec for {config.label}")
    return data
