"""`rayfleet recommend` and costs, on small simulated sweeps stored like real ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fixtures.profile_fixtures import CPU, CPU_COSTS, MODEL, save_run, spec, standard_store
from typer.testing import CliRunner

from rayfleet.bench.costs import (
    PriceError,
    PriceTable,
    load_prices,
    pools_hourly_usd,
    token_costs,
)
from rayfleet.bench.recommend import Targets, recommend, spec_data
from rayfleet.bench.store import ProfileStore
from rayfleet.platform.cli import app
from rayfleet.platform.spec import Pool, parse_spec

PRICES = PriceTable(per_hour={"cpu": 0.04, "nvidia-l4": 0.71, "tpu-v6e": 2.7})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProfileStore:
    return standard_store(tmp_path_factory.mktemp("profiles"))


def targets(qps: float | None, ttft_ms: float = 100, tpot_ms: float = 30, **kw: object) -> Targets:
    return Targets(MODEL, ttft_ms / 1000, tpot_ms / 1000, qps, **kw)  # type: ignore[arg-type]


# --- costs -----------------------------------------------------------------------------


def test_token_costs_follow_gke_inference_quickstart() -> None:
    # $/output token = $/s / (in/s / R + out/s); $/input token = that / R.
    costs = token_costs(hourly=3.6, input_tokens_per_s=800, output_tokens_per_s=200, ratio=4.0)
    assert costs is not None
    assert costs.per_million_output == pytest.approx(1e-3 / 400 * 1e6)  # $2.50
    assert costs.per_million_input == pytest.approx(2.5 / 4)
    assert token_costs(1.0, 0, 0, 4.0) is None


def test_hourly_cost_counts_units_per_replica() -> None:
    tpu = Pool.model_validate(
        {"accelerator": {"kind": "tpu", "version": "v6e", "topology": "2x4"}, "replicas": 2}
    )
    cpu = Pool.model_validate({"accelerator": {"kind": "cpu", "cpus": 3}, "replicas": 1})
    assert pools_hourly_usd({"unified": tpu}, PRICES) == pytest.approx(2 * 8 * 2.7)
    assert pools_hourly_usd({"prefill": cpu, "decode": cpu}, PRICES) == pytest.approx(0.24)


def test_packaged_prices_cover_the_catalogue_and_bad_tables_are_named(tmp_path: Path) -> None:
    prices = load_prices()
    assert prices.output_input_cost_ratio == 4.0
    assert {"cpu", "nvidia-l4", "nvidia-h100-80gb", "tpu-v6e"} <= set(prices.per_hour)
    with pytest.raises(PriceError, match="no price for 'nvidia-h200-141gb'"):
        PRICES.unit_price("nvidia-h200-141gb")
    bad = tmp_path / "prices.yaml"
    bad.write_text("per_hour: {cpu: cheap}\n")
    with pytest.raises(PriceError, match=str(bad)):
        load_prices(bad)


# --- choosing ----------------------------------------------------------------------------


def test_low_rate_picks_one_cpu_replica_from_measurements(store: ProfileStore) -> None:
    result = recommend(store, targets(qps=3), PRICES)
    assert result.best is not None
    assert result.best.config.label == "cpu unified ×1 pow2"
    assert not result.best.point.predicted
    assert result.best.point.source == "cpu-1x#2"  # 4 req/s: the lowest stage ≥ 3 req/s
    assert result.best.hourly_usd == pytest.approx(0.04)


def test_rate_one_replica_cannot_hold_picks_two_cpu_replicas_over_an_l4(
    store: ProfileStore,
) -> None:
    result = recommend(store, targets(qps=6), PRICES)
    by_label = {o.config.label: o for o in result.options}
    assert not by_label["cpu unified ×1 pow2"].meets  # measured saturated at 6 req/s
    assert by_label["nvidia-l4x1 unified ×1 pow2"].meets
    assert result.best is not None
    assert result.best.config.label == "cpu unified ×2 pow2"
    assert not result.best.point.predicted


def test_beyond_measurements_a_prediction_is_marked_with_its_error(store: ProfileStore) -> None:
    result = recommend(store, targets(qps=10), PRICES)
    assert result.best is not None
    assert result.best.point.predicted
    assert result.best.config.label == "cpu unified ×3 pow2"  # 2 are predicted to miss TPOT
    error = result.best.point.held_out_error
    assert error is not None and error["stages"] >= 2
    assert {"ttft_p90_s", "tpot_p90_s", "output_tokens_per_s"} <= set(error)


def test_accelerator_filter_and_unmeetable_targets(store: ProfileStore) -> None:
    only_l4 = recommend(store, targets(qps=6, accelerators=("nvidia-l4",)), PRICES)
    assert {o.config.accelerator for o in only_l4.options} == {"nvidia-l4x1"}
    assert recommend(store, targets(qps=1, ttft_ms=1), PRICES).best is None
    with pytest.raises(LookupError, match="tiny-llama"):
        recommend(store, targets(qps=1, accelerators=("tpu-v6e",)), PRICES)


def test_without_qps_the_lowest_cost_per_token_wins(store: ProfileStore) -> None:
    result = recommend(store, targets(qps=None), PRICES)
    assert result.best is not None
    meeting = [o for o in result.options if o.meets]
    assert all(o.per_million_output is not None for o in meeting)
    assert result.best.per_million_output == min(o.per_million_output or 0 for o in meeting)
    assert not any(o.point.predicted for o in result.options)


def test_pd_profile_is_chosen_and_emitted_with_its_ratio(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    save_run(store, "pd-2x1", spec(CPU, 0, pd=(2, 1)), CPU_COSTS, [2, 4, 8])
    result = recommend(store, targets(qps=4), PRICES)
    assert result.best is not None and result.best.config.layout == "PD 2:1"
    data = spec_data(result.best.config)
    model = parse_spec(data).models[0]
    assert model.disaggregation is not None
    assert (model.pools.prefill and model.pools.prefill.replicas) == 2
    assert (model.pools.decode and model.pools.decode.replicas) == 1


# --- the command ---------------------------------------------------------------------------


def test_command_shows_evidence_and_emits_a_renderable_spec(
    store: ProfileStore, tmp_path: Path
) -> None:
    runner = CliRunner()
    emitted, rayservice = tmp_path / "spec.yaml", tmp_path / "rs.yaml"
    args = ["recommend", "--model", MODEL, "--ttft-p90", "100", "--tpot-p90", "30"]
    args += ["--qps", "6", "--emit", str(emitted), "--data-dir", str(store.data_dir)]
    result = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "recommended: cpu unified ×2 pow2" in result.output
    assert "measured cpu-2x#2" in result.output
    assert "leave-one-out" in result.output
    assert yaml.safe_load(emitted.read_text())["models"][0]["pools"]["unified"]["replicas"] == 2
    rendered = runner.invoke(app, ["render", str(emitted), "--rayservice", str(rayservice)])
    assert rendered.exit_code == 0, rendered.output
    assert yaml.safe_load(rayservice.read_text())["kind"] == "RayService"


def test_command_errors_name_the_problem(store: ProfileStore, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["recommend", "--model", MODEL, "--ttft-p90", "1", "--tpot-p90", "1"]
    base += ["--data-dir", str(store.data_dir)]
    missed = runner.invoke(app, [*base, "--qps", "2"], env={"COLUMNS": "250"})
    assert missed.exit_code == 1 and "no configuration meets" in missed.output
    negative = runner.invoke(app, [*base, "--qps", "-1"], env={"COLUMNS": "250"})
    assert negative.exit_code == 2 and "--qps must be positive" in negative.output
    prices = tmp_path / "p.yaml"
    prices.write_text("per_hour: {gpu: 1}\n")
    unpriced = runner.invoke(app, [*base, "--prices", str(prices)], env={"COLUMNS": "250"})
    assert unpriced.exit_code == 2 and "no price for" in unpriced.output


def test_a_rate_above_every_measurement_without_records_does_not_count(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    entry = save_run(store, "pd", spec(CPU, 0, pd=(1, 1)), CPU_COSTS, [1, 2])
    (Path(entry.run_dir) / "requests.jsonl").unlink()
    result = recommend(store, targets(qps=5, ttft_ms=1000, tpot_ms=1000), PRICES)
    assert result.best is None
    assert "not measured at 5 req/s" in result.options[0].note


def test_a_miss_at_a_lower_measured_rate_overrides_a_prediction(store: ProfileStore) -> None:
    # cpu ×2 misses TPOT p90 ≤ 30 ms at 12 req/s (measured); at 14 it is not measured.
    result = recommend(store, targets(qps=14), PRICES)
    two = next(o for o in result.options if o.config.label == "cpu unified ×2 pow2")
    assert not two.meets and not two.point.predicted
    assert "misses the targets below 14 req/s" in two.note
