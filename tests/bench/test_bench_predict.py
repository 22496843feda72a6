"""Predictions from the calibrated simulator, and their held-out errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from fixtures.profile_fixtures import CPU, CPU_COSTS, save_run, spec

from rayfleet.bench import predict
from rayfleet.bench.profiles import measured_points, rate_runs
from rayfleet.bench.sim.calibrate import samples_from_records
from rayfleet.bench.store import ProfileStore


@pytest.fixture(scope="module")
def cpu_store(tmp_path_factory: pytest.TempPathFactory) -> ProfileStore:
    store = ProfileStore(tmp_path_factory.mktemp("predict"))
    save_run(store, "one", spec(CPU, 1), CPU_COSTS, [1, 2, 4, 6])
    save_run(store, "two", spec(CPU, 2), CPU_COSTS, [2, 4, 8])
    return store


def _stages(store: ProfileStore, run_id: str) -> list[predict.StageData]:
    grouped = measured_points(rate_runs(store))
    entry = store.get(run_id)
    assert entry is not None
    points = next(ps for ps in grouped.values() if ps[0].source.startswith(f"{run_id}#"))
    return predict.stage_data(entry, points)


def test_calibration_recovers_the_engine_that_made_the_runs(cpu_store: ProfileStore) -> None:
    stages = _stages(cpu_store, "one")
    config = stages[0].measured.config
    model = predict.calibrate(stages, predict.engine_params(config))
    costs = model.calibration
    assert costs.decode_cost_per_seq == pytest.approx(CPU_COSTS.decode_cost_per_seq, rel=0.3)
    assert costs.step_base_s == pytest.approx(CPU_COSTS.step_base_s, rel=0.3)
    assert model.params.max_num_seqs == 32  # the pool's max_ongoing_requests
    assert len(model.sources) == len(stages) == 4


def test_leave_one_out_predicts_held_out_stages_closely(cpu_store: ProfileStore) -> None:
    stages = _stages(cpu_store, "one")
    rows = predict.leave_one_out(stages, predict.engine_params(stages[0].measured.config))
    assert len(rows) == 3  # the saturated last stage is not scored
    assert all(row["predicted"].predicted for row in rows)
    error = predict.error_summary(rows)
    assert error["stages"] == 3
    assert error["tpot_p90_s"] < 0.15
    assert error["output_tokens_per_s"] < 0.15
    assert error["ttft_p90_s"] < 0.5


def test_transfer_to_two_replicas_is_scored_against_their_measurements(
    cpu_store: ProfileStore,
) -> None:
    stages = _stages(cpu_store, "one")
    model = predict.calibrate(stages, predict.engine_params(stages[0].measured.config))
    two = [s.measured for s in _stages(cpu_store, "two")]
    rows = predict.transfer_errors(model, two, duration_s=10)
    assert [row["load"] for row in rows] == [2, 4, 8]
    assert predict.error_summary(rows)["tpot_p90_s"] < 0.2


def test_more_replicas_lower_latency_and_overload_is_flagged(cpu_store: ProfileStore) -> None:
    stages = _stages(cpu_store, "one")
    config = stages[0].measured.config
    model = predict.calibrate(stages, predict.engine_params(config))
    one = predict.predicted_point(model, config, rate=6, duration_s=10)
    three = predict.predicted_point(model, config.with_replicas("unified", 3), 6, 10)
    assert three.tpot_p90_s is not None and one.tpot_p90_s is not None
    assert three.tpot_p90_s < one.tpot_p90_s
    overloaded = predict.predicted_point(model, config, rate=20, duration_s=10)
    assert overloaded.saturated and "predicted to answer" in overloaded.saturated
    assert three.saturated is None


def test_runs_without_request_records_give_no_stage_data(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    entry = save_run(store, "bare", spec(CPU, 1), CPU_COSTS, [1, 2])
    (Path(entry.run_dir) / "requests.jsonl").unlink()
    points = next(iter(measured_points(rate_runs(store)).values()))
    assert predict.stage_data(entry, points) == []


def test_relative_errors_are_against_the_measurement(cpu_store: ProfileStore) -> None:
    measured = _stages(cpu_store, "one")[0].measured
    assert measured.ttft_p90_s is not None
    guess = replace(measured, ttft_p90_s=measured.ttft_p90_s * 1.5, tpot_p90_s=None)
    errors = predict.relative_errors(guess, measured)
    assert errors["ttft_p90_s"] == pytest.approx(0.5)
    assert errors["output_tokens_per_s"] == 0
    assert "tpot_p90_s" not in errors


def test_one_disturbed_stage_does_not_skew_the_calibration(cpu_store: ProfileStore) -> None:
    stages = _stages(cpu_store, "one")
    # Something else took the core during stage 1: every decode ran 8 times slower.
    slowed = [
        replace(r, e2e_s=r.ttft_s + 8 * (r.e2e_s - r.ttft_s), chunk_s=[])
        for r in stages[1].records
        if r.ttft_s is not None and r.e2e_s is not None
    ]
    disturbed = replace(stages[1], records=slowed, samples=samples_from_records(slowed))
    mixed = [stages[0], disturbed, *stages[2:]]
    model = predict.calibrate(mixed, predict.engine_params(stages[0].measured.config))
    truth = CPU_COSTS.decode_cost_per_seq
    assert model.calibration.decode_cost_per_seq == pytest.approx(truth, rel=0.3)
