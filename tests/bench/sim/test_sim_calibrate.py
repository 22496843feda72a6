"""Calibration recovers the step costs of records the simulator itself produced."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from rayfleet.bench.records import RequestRecord
from rayfleet.bench.sim.calibrate import (
    COST_FIELDS,
    _least_squares,
    calibrate_run,
    fit,
    samples_from_records,
)
from rayfleet.bench.sim.engine import SimEngineCore, SimRequest
from rayfleet.bench.sim.params import SimParams
from rayfleet.bench.sim.virtual import run_virtual

TRUTH = SimParams(
    step_base_s=0.01,
    prefill_cost_per_token=2e-4,
    decode_cost_per_seq=2e-3,
    decode_cost_per_ctx_token=1e-5,
    num_kv_blocks=4000,
    max_num_batched_tokens=2048,
    max_model_len=8192,
)


def simulated_run(rate: float, requests: int = 600, seed: int = 7) -> list[RequestRecord]:
    """Poisson arrivals of distinct prompts (no cache hits), as the loadgen records them."""
    rng = random.Random(seed)
    arrival = 0.0
    batch = []
    for i in range(requests):
        arrival += rng.expovariate(rate)
        prompt = tuple(rng.randrange(50_000) for _ in range(rng.randint(32, 900)))
        batch.append(SimRequest(str(i), prompt, rng.randint(2, 64), arrival_s=arrival))
    run_virtual(SimEngineCore(TRUTH), batch)
    return [
        RequestRecord(
            index=i,
            scheduled_s=r.arrival_s,
            send_s=r.arrival_s,
            max_tokens=r.max_tokens,
            ttft_s=r.token_times[0] - r.arrival_s,
            e2e_s=r.token_times[-1] - r.arrival_s,
            chunk_s=[t - r.arrival_s for t in r.token_times],
            input_tokens=r.prompt_len,
            output_tokens=len(r.output_token_ids),
        )
        for i, r in enumerate(batch)
    ]


@pytest.fixture(scope="module")
def records() -> list[RequestRecord]:
    return simulated_run(rate=1.5)


def test_fit_recovers_the_known_costs(records: list[RequestRecord]) -> None:
    samples = samples_from_records(records)
    assert max(s.decode_batch for s in samples) >= 4  # the load really varied
    result = fit(samples, TRUTH.max_num_batched_tokens)
    for name in COST_FIELDS:
        assert getattr(result, name) == pytest.approx(getattr(TRUTH, name), rel=0.05), name
    assert result.decode_rows == len(records) and result.prefill_rows > len(records) / 2


def test_batched_streams_still_give_usable_estimates(records: list[RequestRecord]) -> None:
    # Keep only every fourth chunk, as a server batching its stream would send them.
    batched = [_with_chunks(r, r.chunk_s[::4]) for r in records]
    result = fit(samples_from_records(batched), TRUTH.max_num_batched_tokens)
    assert result.decode_cost_per_seq == pytest.approx(TRUTH.decode_cost_per_seq, rel=0.25)
    assert result.prefill_cost_per_token == pytest.approx(TRUTH.prefill_cost_per_token, rel=0.1)


def _with_chunks(record: RequestRecord, chunks: list[float]) -> RequestRecord:
    data = record.to_json()
    data["chunk_s"] = chunks
    return RequestRecord.from_json(data)


def test_calibrate_a_stored_run(tmp_path: Path, records: list[RequestRecord]) -> None:
    failed = RequestRecord(index=-1, scheduled_s=0, send_s=0, max_tokens=4, error_kind="timeout")
    lines = [json.dumps(r.to_json()) for r in [*records, failed]]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    result = calibrate_run(tmp_path, TRUTH.max_num_batched_tokens)
    assert result == fit(samples_from_records(records), TRUTH.max_num_batched_tokens)
    tuned = result.apply(SimParams())
    assert tuned.step_base_s == result.step_base_s and tuned.block_size == 128


def test_too_few_records_are_refused(records: list[RequestRecord]) -> None:
    with pytest.raises(ValueError, match="too few"):
        fit(samples_from_records(records[:3]), TRUTH.max_num_batched_tokens)


def _delayed(record: RequestRecord, delay_s: float) -> RequestRecord:
    """The record as if the client saw everything ``delay_s`` late (an OS stall)."""
    data = record.to_json()
    data["ttft_s"] += delay_s
    data["e2e_s"] += delay_s
    data["chunk_s"] = [t + delay_s for t in record.chunk_s]
    return RequestRecord.from_json(data)


def test_median_fit_is_not_dragged_by_a_heavy_tail(records: list[RequestRecord]) -> None:
    # One request in ten stalls 50 ms before its first token: the mean overhead moves by
    # ~5 ms, the median one hardly at all.
    stalled = [_delayed(r, 0.05) if r.index % 10 == 0 else r for r in records]
    samples = samples_from_records(stalled)
    mean, median = (fit(samples, TRUTH.max_num_batched_tokens, how) for how in ("mean", "median"))
    assert mean.overhead_s > 0.003
    assert median.overhead_s < 0.001
    assert median.prefill_cost_per_token == pytest.approx(TRUTH.prefill_cost_per_token, rel=0.1)


def test_a_cost_that_would_go_negative_is_dropped_and_the_rest_refitted() -> None:
    x = np.arange(1.0, 11.0)
    target = 2.0 * x - 0.5  # least squares: intercept -0.5, which no cost may be
    coef, _ = _least_squares([np.ones_like(x), x], target)
    assert coef[0] == 0.0
    assert coef[1] == pytest.approx(float(x @ target / (x @ x)))  # refitted through 0
