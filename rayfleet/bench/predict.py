"""Predict unmeasured load points with the simulator, calibrated from stored runs.

The step-time costs come from ``rayfleet.bench.sim.calibrate`` fitted to the
per-request records (``requests.jsonl``) of single-replica unified runs; the
simulator core then serves a replay of the measured prompt/output lengths at the
requested rate in virtual time. N replicas are N independent engines fed round-robin
(state-blind routing, so each engine is simulated on its own share of arrivals).

Every prediction carries its error on held-out data: leave-one-out over the stored
stages (calibrate on all other stages, predict the one left out, compare p90 TTFT,
p90 TPOT and output tokens/s).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rayfleet.bench.profiles import MIN_ANSWERED, FleetConfig, Point
from rayfleet.bench.records import RequestRecord
from rayfleet.bench.sim.calibrate import Calibration, Sample, fit, samples_from_records
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.virtual import run_virtual
from rayfleet.bench.store import RunEntry

METRICS = ("ttft_p90_s", "tpot_p90_s", "output_tokens_per_s")
DEFAULT_BATCHED_TOKENS = 2048  # vLLM's chunked-prefill budget for online serving
KV_BLOCKS = 4096  # ample: the fitted costs, not KV capacity, limit the tiny CPU runs


@dataclass(frozen=True)
class StageData:
    """One stored stage: its request records and what was measured."""

    run_id: str
    stage: int
    rate: float
    duration_s: float
    records: list[RequestRecord]
    measured: Point
    samples: list[Sample]  # the calibration's per-request view, computed once


@dataclass(frozen=True)
class Calibrated:
    calibration: Calibration
    params: SimParams
    lengths: list[tuple[int, int]]  # (prompt, output) tokens of the measured requests
    sources: list[str]  # RUN_ID#STAGE the fit used
    # Measured over simulated p90 on the fitted stages: the step model fits mean times,
    # while real p90s carry jitter (OS, proxy, stream batching) the simulator lacks.
    tail: dict[str, float] = field(default_factory=dict)


def stage_data(entry: RunEntry, points: Sequence[Point]) -> list[StageData]:
    """Stages of a run that kept its per-request records (``--per-request``)."""
    path = Path(entry.run_dir) / "requests.jsonl"
    if not path.is_file():
        return []
    by_stage: dict[int, list[RequestRecord]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = RequestRecord.from_json(json.loads(line))
            by_stage.setdefault(record.stage, []).append(record)
    duration = float(entry.load.get("duration_s") or 0.0)
    measured = {p.source: p for p in points}
    return [
        StageData(
            entry.run_id, index, point.load, duration, records, point, samples_from_records(records)
        )
        for index, records in sorted(by_stage.items())
        if (point := measured.get(f"{entry.run_id}#{index}")) is not None
    ]


def engine_params(config: FleetConfig) -> SimParams:
    """Scheduling limits of one engine of the configuration's unified pool."""
    pool = config.pools()["unified"]
    kwargs: dict[str, Any] = {**config.details().get("engine_kwargs", {}), **pool.engine_kwargs}
    return SimParams(
        num_kv_blocks=KV_BLOCKS,
        max_num_batched_tokens=int(kwargs.get("max_num_batched_tokens", DEFAULT_BATCHED_TOKENS)),
        # Ray Serve admits max_ongoing_requests per replica; the rest wait, as in a queue.
        max_num_seqs=min(int(kwargs.get("max_num_seqs", 256)), pool.max_ongoing_requests),
    )


def calibrate(stages: Sequence[StageData], params: SimParams) -> Calibrated:
    """Fit step costs on the stages' records (each stage keeps its own time base).

    A stage disturbed by something outside the engine (another process taking the
    core for seconds) fits absurd costs and would skew one pooled fit, so stages whose
    own fit puts a typical decode step more than ``OUTLIER_FACTOR`` off the median
    stage's are left out of the pooled fit.
    """
    kept = _without_disturbed(stages, params.max_num_batched_tokens)
    samples = [sample for stage in kept for sample in stage.samples]
    calibration = fit(samples, params.max_num_batched_tokens)
    lengths = [
        (r.input_tokens or r.expected_input_tokens or 1, r.output_tokens or r.max_tokens)
        for stage in kept
        for r in stage.records
        if r.ok
    ]
    sources = [f"{s.run_id}#{s.stage}" for s in kept]
    model = Calibrated(calibration, calibration.apply(params), lengths, sources)
    return replace(model, tail=_tail_factors(model, kept))


def _tail_factors(model: Calibrated, stages: Sequence[StageData]) -> dict[str, float]:
    """Median of measured / simulated p90 TTFT and TPOT over the unsaturated fitted stages."""
    ratios: dict[str, list[float]] = {"ttft_p90_s": [], "tpot_p90_s": []}
    for stage in stages:
        if stage.measured.saturated:
            continue
        simulated = simulate(model, 1, stage.rate, stage.duration_s)
        for name, values in ratios.items():
            want, got = getattr(stage.measured, name), simulated[name]
            if want and got:
                values.append(want / got)
    return {name: float(np.median(values)) for name, values in ratios.items() if values}


OUTLIER_FACTOR = 3.0
_TYPICAL_BATCH = 4  # sequences, each with ~300 tokens of context


def _typical_step_s(costs: Calibration) -> float:
    batch = _TYPICAL_BATCH
    return (
        costs.step_base_s
        + costs.decode_cost_per_seq * batch
        + costs.decode_cost_per_ctx_token * batch * 300
    )


def _without_disturbed(stages: Sequence[StageData], batched_tokens: int) -> list[StageData]:
    steps: dict[int, float] = {}
    for index, stage in enumerate(stages):
        try:
            steps[index] = _typical_step_s(fit(stage.samples, batched_tokens))
        except ValueError:
            continue  # too few requests to judge this stage alone: keep it
    if len(steps) < 3:
        return list(stages)  # no majority to tell the odd one out
    median = float(np.median(list(steps.values())))
    return [
        stage
        for index, stage in enumerate(stages)
        if index not in steps or median / OUTLIER_FACTOR <= steps[index] <= median * OUTLIER_FACTOR
    ]


def _requests(model: Calibrated, rate: float, duration_s: float, seed: int) -> list[SimRequest]:
    """Constant-rate arrivals (the bench default) replaying measured lengths."""
    rng = np.random.default_rng(seed)
    count = max(2, round(rate * duration_s))
    requests = []
    for k, pick in enumerate(rng.integers(len(model.lengths), size=count)):
        prompt, output = model.lengths[pick]
        tokens = rng.integers(2000, 30000, size=prompt).tolist()  # random: no shared prefixes
        requests.append(SimRequest(f"r{k}", tokens, max(1, output), arrival_s=k / rate))
    return requests


def simulate(
    model: Calibrated, replicas: int, rate: float, duration_s: float, seed: int = 0
) -> dict[str, float | None]:
    """Predicted p90 TTFT/TPOT, throughputs and answered rate at ``rate`` req/s."""
    requests = _requests(model, rate, duration_s, seed)
    for replica in range(replicas):  # round-robin: replica r gets every N-th request
        run_virtual(SimEngineCore(model.params), requests[replica::replicas])
    overhead = model.calibration.overhead_s
    ttft = [r.token_times[0] - r.arrival_s + overhead for r in requests]
    tpot = [
        (r.token_times[-1] - r.token_times[0]) / (len(r.token_times) - 1)
        for r in requests
        if len(r.token_times) >= 2
    ]
    ends = sorted(r.token_times[-1] + overhead for r in requests)
    span = ends[-1] - requests[0].arrival_s
    answered = (len(ends) - 1) / (ends[-1] - ends[0]) if ends[-1] > ends[0] else None
    return {
        "ttft_p90_s": float(np.percentile(ttft, 90)),
        "tpot_p90_s": float(np.percentile(tpot, 90)) if tpot else None,
        "requests_per_s": len(requests) / span,
        "input_tokens_per_s": sum(r.prompt_len for r in requests) / span,
        "output_tokens_per_s": sum(len(r.token_times) for r in requests) / span,
        "answered_per_s": answered,
    }


def predicted_point(
    model: Calibrated,
    config: FleetConfig,
    rate: float,
    duration_s: float,
    error: dict[str, float] | None = None,
) -> Point:
    replicas = dict(config.replicas)["unified"]
    got = simulate(model, replicas, rate, duration_s)
    answered = got["answered_per_s"]
    saturated = None
    if answered is not None and answered < MIN_ANSWERED * rate:
        saturated = f"predicted to answer {answered:.2f} of {rate:g} req/s"
    ttft, tpot = got["ttft_p90_s"], got["tpot_p90_s"]
    return Point(
        config=config,
        load=rate,
        requests_per_s=got["requests_per_s"] or 0.0,
        input_tokens_per_s=got["input_tokens_per_s"] or 0.0,
        output_tokens_per_s=got["output_tokens_per_s"] or 0.0,
        ttft_p90_s=None if ttft is None else ttft * model.tail.get("ttft_p90_s", 1.0),
        tpot_p90_s=None if tpot is None else tpot * model.tail.get("tpot_p90_s", 1.0),
        saturated=saturated,
        source=f"simulator calibrated on {len(model.sources)} stages",
        predicted=True,
        held_out_error=error,
    )


def relative_errors(predicted: Point, measured: Point) -> dict[str, float]:
    """|predicted - measured| / measured for each metric both have."""
    errors = {}
    for name in METRICS:
        want, got = getattr(measured, name), getattr(predicted, name)
        if want and got is not None:
            errors[name] = abs(got - want) / want
    return errors


def error_summary(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Per metric, the median and the largest |relative error| over the rows.

    The median is the typical error; the maximum shows the stage it failed worst on
    (a disturbed measurement, or a rate near saturation where queues explode).
    """
    summary: dict[str, float] = {"stages": float(len(rows))}
    for name in METRICS:
        values = [row[name] for row in rows if name in row]
        if values:
            summary[name] = float(np.median(values))
            summary[f"{name}_max"] = float(np.max(values))
    return summary


def leave_one_out(stages: Sequence[StageData], params: SimParams) -> list[dict[str, Any]]:
    """For each unsaturated stage: calibrate on the others, predict it, compare."""
    rows = []
    for index, held in enumerate(stages):
        if held.measured.saturated:
            continue  # its latency depends on how long the queue grew, not on the rate
        others = [s for i, s in enumerate(stages) if i != index]
        try:
            model = calibrate(others, params)
        except ValueError:
            continue  # too few requests left to fit
        guess = predicted_point(model, held.measured.config, held.rate, held.duration_s)
        rows.append(
            {"stage": f"{held.run_id}#{held.stage}", "load": held.rate, "predicted": guess}
            | relative_errors(guess, held.measured)
        )
    return rows


def transfer_errors(
    model: Calibrated, measured: Sequence[Point], duration_s: float
) -> list[dict[str, Any]]:
    """Predict measured points of other configurations (e.g. more replicas)."""
    rows = []
    for point in measured:
        if point.saturated or "unified" not in dict(point.config.replicas):
            continue
        guess = predicted_point(model, point.config, point.load, duration_s)
        rows.append(
            {"stage": point.source, "load": point.load, "predicted": guess}
            | relative_errors(guess, point)
        )
    return rows


def with_error(point: Point, error: dict[str, float]) -> Point:
    return replace(point, held_out_error=error)
