"""Fit the simulator's step-time costs to a real engine's run.

Input: the per-request records of one benchmark run against ONE engine replica
(``requests.jsonl`` of ``rayfleet bench ... --per-request``), best from a workload
without shared prefixes (otherwise pass the run's prefix-cache hit rate). The step
model being fitted is ``SimParams.step_time``::

    step = step_base_s + prefill_cost_per_token·P + decode_cost_per_seq·B
         + decode_cost_per_ctx_token·C

(P uncached prompt tokens computed in the step, B sequences decoding, C the sum of
their context lengths).

Reconstruction, per request i, with send time s, first token F = s + TTFT, end
E = s + E2E, prompt L, output O and uncached prompt U = L·(1 - hit_rate):

- request j decodes during (F_j, E_j]; its context grows linearly from L_j + 1 to
  L_j + O_j - 1. B_i and C_i are the means, over the steps of i's decode window
  (F_i, E_i], of the number of decoding requests and the sum of their contexts
  (i included); a step is sampled at the midpoint between two of i's tokens when the
  stream has one chunk per token, else at evenly spaced times;
- Q_i = (sum of U_j of the other requests whose first token came in (F_i, E_i]) / (O_i - 1):
  prompt tokens computed per step of i's decode (a prefill ends in the step that
  yields its first token);
- Bp_i, Cp_i: the same, just before F_i (in i's last prefill step);
- Bs_i, Cs_i: the same, at s_i: a request sent while the engine decodes first waits
  for the running step to end, on average half of it.

Fits (ordinary least squares, or least absolute deviations with ``statistic="median"``):

1. decode, requests with O ≥ 2:
   ``TPOT_i = step_base_s + decode_cost_per_seq·B_i + decode_cost_per_ctx_token·C_i
   + prefill_cost_per_token·Q_i`` (the Q column is dropped when Q is always 0);
2. prefill, requests during whose wait no other request got its first token (so no
   other prefill competed), with n_i = ceil(U_i / max_num_batched_tokens) steps:
   ``TTFT_i - n_i·(step_base_s + decode_cost_per_seq·Bp_i + decode_cost_per_ctx_token·Cp_i)
   - [Bs_i > 0]·(step_base_s + decode_cost_per_seq·Bs_i + decode_cost_per_ctx_token·Cs_i)/2
   = overhead_s + prefill_cost_per_token·U_i``.

The prefill fit gives ``prefill_cost_per_token``; ``overhead_s`` absorbs what the
model lacks (client, proxy and ingress time) and is reported, not simulated. Costs
are fitted non-negative (a column that would go negative is dropped and the rest
refitted).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from rayfleet.bench.records import RequestRecord
from rayfleet.bench.sim.params import SimParams

_JUST_BEFORE_S = 1e-6
_LAD_ITERATIONS = 50
_LAD_FLOOR_S = 1e-6  # residuals below a microsecond count as a microsecond
Statistic = Literal["mean", "median"]
COST_FIELDS = (
    "step_base_s",
    "prefill_cost_per_token",
    "decode_cost_per_seq",
    "decode_cost_per_ctx_token",
)


@dataclass(frozen=True)
class Sample:
    """One request's timings and the load it saw (see the module docstring)."""

    uncached_tokens: float  # U
    output_tokens: int  # O
    ttft_s: float
    tpot_s: float | None
    decode_batch: float  # B
    decode_context: float  # C
    decode_prefill_tokens: float  # Q
    prefill_batch: float  # Bp
    prefill_context: float  # Cp
    send_batch: float  # Bs: decoding requests when i was sent
    send_context: float  # Cs
    prefill_alone: bool  # no other first token during its wait


@dataclass(frozen=True)
class Calibration:
    step_base_s: float
    prefill_cost_per_token: float
    decode_cost_per_seq: float
    decode_cost_per_ctx_token: float
    overhead_s: float
    decode_rows: int
    prefill_rows: int
    decode_rms_s: float
    prefill_rms_s: float

    def costs(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in COST_FIELDS}

    def apply(self, params: SimParams) -> SimParams:
        return params.model_copy(update=self.costs())


def load_records(run_dir: str | Path) -> list[RequestRecord]:
    lines = (Path(run_dir) / "requests.jsonl").read_text().splitlines()
    return [RequestRecord.from_json(json.loads(line)) for line in lines if line.strip()]


class _Timeline:
    """Every usable request's send, first-token and end times, as arrays."""

    def __init__(self, records: Sequence[RequestRecord], hit_rate: float) -> None:
        self.records = [r for r in records if _usable(r)]
        self.send = np.array([r.send_s for r in self.records])
        self.first = self.send + np.array([r.ttft_s for r in self.records])
        self.end = self.send + np.array([r.e2e_s for r in self.records])
        self.prompt = np.array([_prompt_tokens(r) for r in self.records], dtype=float)
        self.output = np.array([r.output_tokens for r in self.records], dtype=float)
        self.uncached = self.prompt * (1.0 - hit_rate)

    def load_at(self, t: np.ndarray) -> tuple[float, float]:
        """Mean decode batch and summed context at the times ``t``."""
        if t.size == 0:
            return 0.0, 0.0
        decoding = (self.first[None, :] < t[:, None]) & (t[:, None] <= self.end[None, :])
        span = np.maximum(self.end - self.first, 1e-12)
        progress = np.clip((t[:, None] - self.first[None, :]) / span[None, :], 0.0, 1.0)
        context = self.prompt + 1 + np.maximum(self.output - 2, 0) * progress
        return float(decoding.sum(1).mean()), float((decoding * context).sum(1).mean())

    def decode_times(self, i: int, grid: int) -> np.ndarray:
        """One time inside each decode step of request i.

        With one chunk per token, each gap between chunks is one engine step, so gap
        midpoints weight every step once, as TPOT does; batched streams fall back to an
        even grid.
        """
        record = self.records[i]
        if len(record.chunk_s) == int(self.output[i]) >= 2:
            chunks = self.send[i] + np.asarray(record.chunk_s)
            return (chunks[1:] + chunks[:-1]) / 2
        start, stop = self.first[i], self.end[i]
        return start + (np.arange(grid) + 0.5) / grid * (stop - start)

    def prefills_in(self, start: float, stop: float, exclude: int) -> tuple[int, float]:
        """Other requests whose first token came in (start, stop], and their U sum."""
        inside = (self.first > start) & (self.first <= stop)
        inside[exclude] = False
        return int(inside.sum()), float(self.uncached[inside].sum())


def _usable(record: RequestRecord) -> bool:
    return (
        record.ok
        and record.ttft_s is not None
        and record.e2e_s is not None
        and record.output_tokens is not None
        and _prompt_tokens(record) is not None
    )


def _prompt_tokens(record: RequestRecord) -> int | None:
    return record.input_tokens if record.input_tokens is not None else record.expected_input_tokens


def samples_from_records(
    records: Sequence[RequestRecord], hit_rate: float = 0.0, grid: int = 16
) -> list[Sample]:
    """Per-request samples for the fits, reconstructed from one engine's records."""
    line = _Timeline(records, hit_rate)
    samples = []
    for i in range(len(line.records)):
        out = int(line.output[i])
        batch, context = line.load_at(line.decode_times(i, grid))
        _, decode_prefill = line.prefills_in(line.first[i], line.end[i], i)
        # The load of i's own (last) prefill step, just before its first token.
        p_batch, p_context = line.load_at(np.array([line.first[i] - _JUST_BEFORE_S]))
        s_batch, s_context = line.load_at(np.array([line.send[i]]))
        competing, _ = line.prefills_in(line.send[i], line.first[i], i)
        samples.append(
            Sample(
                uncached_tokens=float(line.uncached[i]),
                output_tokens=out,
                ttft_s=float(line.first[i] - line.send[i]),
                tpot_s=float(line.end[i] - line.first[i]) / (out - 1) if out >= 2 else None,
                decode_batch=batch,
                decode_context=context,
                decode_prefill_tokens=decode_prefill / (out - 1) if out >= 2 else 0.0,
                prefill_batch=p_batch,
                prefill_context=p_context,
                send_batch=s_batch,
                send_context=s_context,
                prefill_alone=competing == 0,
            )
        )
    return samples


def _least_squares(
    columns: list[np.ndarray], target: np.ndarray, statistic: Statistic = "mean"
) -> tuple[np.ndarray, float]:
    """Non-negative least squares ("mean") or least absolute deviations ("median").

    Costs cannot be negative: a column whose coefficient comes out negative is dropped
    (its coefficient is 0) and the rest refitted, so the others absorb what it
    explained instead of being left as fitted beside it. LAD is solved by iteratively
    reweighted least squares (weights 1/|residual|).
    """
    matrix = np.column_stack(columns)
    active = list(range(matrix.shape[1]))
    coef = np.zeros(matrix.shape[1])
    while active:
        coef[:] = 0.0
        coef[active] = _solve(matrix[:, active], target, statistic)
        worst = min(active, key=lambda k: coef[k])
        if coef[worst] >= 0:
            break
        active.remove(worst)
    rms = float(np.sqrt(np.mean((matrix @ coef - target) ** 2)))
    return coef, rms


def _solve(matrix: np.ndarray, target: np.ndarray, statistic: Statistic) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(matrix, target, rcond=None)
    if statistic == "median":
        for _ in range(_LAD_ITERATIONS):
            residual = np.abs(matrix @ coef - target)
            root_weight = 1.0 / np.sqrt(np.maximum(residual, _LAD_FLOOR_S))
            coef, *_ = np.linalg.lstsq(
                matrix * root_weight[:, None], target * root_weight, rcond=None
            )
    return np.asarray(coef, dtype=float)


def fit(
    samples: Sequence[Sample], max_num_batched_tokens: int, statistic: Statistic = "mean"
) -> Calibration:
    """Both fits of the module docstring; raises ValueError on too little data.

    ``statistic="median"`` fits conditional medians (least absolute deviations): real
    timings have heavy right tails (OS stalls, proxy jitter) that pull a mean fit, and
    hence the simulator's deterministic latencies, above the measured p50s.
    """
    decode = [s for s in samples if s.tpot_s is not None]
    prefill = [s for s in samples if s.prefill_alone]
    if len(decode) < 8 or len(prefill) < 4:
        raise ValueError(
            f"too few usable requests: {len(decode)} decoded, {len(prefill)} prefilled alone"
        )
    tpot = np.array([s.tpot_s for s in decode], dtype=float)
    queued = np.array([s.decode_prefill_tokens for s in decode])
    columns = [
        np.ones(len(decode)),
        np.array([s.decode_batch for s in decode]),
        np.array([s.decode_context for s in decode]),
    ]
    if np.ptp(queued) > 0:
        columns.append(queued)
    coef, decode_rms = _least_squares(columns, tpot, statistic)
    base, per_seq, per_ctx = (max(0.0, float(c)) for c in coef[:3])

    uncached = np.array([s.uncached_tokens for s in prefill])
    steps = np.ceil(np.maximum(uncached, 1.0) / max_num_batched_tokens)
    step_cost = (
        base
        + per_seq * np.array([s.prefill_batch for s in prefill])
        + per_ctx * np.array([s.prefill_context for s in prefill])
    )
    # A request sent while a step runs waits for it to end (the simulator models that
    # too), on average half a step: without this term overhead_s would count it twice.
    send_batch = np.array([s.send_batch for s in prefill])
    send_step = base + per_seq * send_batch + per_ctx * np.array([s.send_context for s in prefill])
    residual = np.where(send_batch > 0, send_step / 2, 0.0)
    target = np.array([s.ttft_s for s in prefill]) - steps * step_cost - residual
    (overhead, per_token), prefill_rms = _least_squares(
        [np.ones(len(prefill)), uncached], target, statistic
    )
    return Calibration(
        step_base_s=base,
        prefill_cost_per_token=max(0.0, float(per_token)),
        decode_cost_per_seq=per_seq,
        decode_cost_per_ctx_token=per_ctx,
        overhead_s=max(0.0, float(overhead)),
        decode_rows=len(decode),
        prefill_rows=len(prefill),
        decode_rms_s=decode_rms,
        prefill_rms_s=prefill_rms,
    )


def calibrate_run(
    run_dir: str | Path,
    max_num_batched_tokens: int,
    hit_rate: float = 0.0,
    statistic: Statistic = "mean",
) -> Calibration:
    """Fit the costs from a stored run's ``requests.jsonl``."""
    samples = samples_from_records(load_records(run_dir), hit_rate)
    return fit(samples, max_num_batched_tokens, statistic)
