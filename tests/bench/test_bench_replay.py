"""Held-out prediction: calibrate on one run, replay another through the fitted engine.

The "measured" runs are made by the simulator itself with known costs (TRUTH), on
prompts rebuilt from real workloads, so a correct fit and replay must land close.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fixtures.profile_fixtures import CPU_COSTS

from rayfleet.bench import report
from rayfleet.bench.records import RequestRecord
from rayfleet.bench.replay import predict_run, replay_records, run_prompts
from rayfleet.bench.runs import make_workload
from rayfleet.bench.sim.calibrate import calibrate_run

TRUTH = CPU_COSTS
OVERHEAD_S = 0.004


def make_run(
    folder: Path, tiny_dir: Path, workload: dict[str, object], rate: float, count: int
) -> Path:
    """A run folder as `bench run --per-request` writes it, served by TRUTH."""
    described = dict(workload)
    name, seed = str(described.pop("name")), int(str(described.pop("seed")))
    specs = make_workload(name, described, str(tiny_dir), seed).take(count)
    templates = [
        RequestRecord(index=k, scheduled_s=k / rate, send_s=k / rate, max_tokens=s.max_tokens)
        for k, s in enumerate(specs)
    ]
    summary = {"run": {"workload": workload, "tokenizer": str(tiny_dir)}}
    prompts, how = run_prompts(summary, templates)
    assert how == "regenerated"
    records, _ = replay_records(TRUTH, OVERHEAD_S, templates, prompts)
    folder.mkdir(parents=True)
    report.write_records(folder / "requests.jsonl", records)
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("replay")
    synthetic = {
        "name": "synthetic",
        "seed": 1,
        "input_len": "uniform:128:384",
        "output_len": "uniform:32:96",
    }
    shared = {"name": "shared-prefix", "seed": 2}
    return {
        "fit": make_run(root / "a", tiny_dir, synthetic, rate=4, count=120),
        "held": make_run(root / "b", tiny_dir, shared, rate=2, count=60),
    }


def test_replay_of_a_shared_prefix_run_hits_the_prefix_cache(runs: dict[str, Path]) -> None:
    held = predict_run(TRUTH, OVERHEAD_S, runs["held"])
    assert held.prompts == "regenerated"
    assert held.sim_hit_rate > 0.3  # 256 shared of ~320 prompt tokens, whole blocks only
    assert held.errors["ttft_p50_s"] < 1e-9 and held.errors["tpot_p50_s"] < 1e-9


def test_calibrated_on_one_run_predicts_a_held_out_run(runs: dict[str, Path]) -> None:
    fitted = calibrate_run(runs["fit"], TRUTH.max_num_batched_tokens)
    params = fitted.apply(TRUTH)  # only the cost fields come from the fit
    held = predict_run(params, fitted.overhead_s, runs["held"])
    assert held.requests == 60
    assert held.errors["ttft_p50_s"] < 0.1
    assert held.errors["tpot_p50_s"] < 0.1


def test_without_the_workload_prompts_are_random_of_the_measured_lengths() -> None:
    records = [
        RequestRecord(index=k, scheduled_s=k, send_s=k, max_tokens=4, input_tokens=10 + k)
        for k in range(3)
    ]
    prompts, how = run_prompts({}, records)
    assert how == "random"
    assert [len(p) for p in prompts] == [10, 11, 12]


def test_a_run_without_records_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--per-request"):
        predict_run(TRUTH, 0.0, tmp_path)


def test_failed_requests_load_the_replay_but_are_not_scored(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "with-failure"
    shutil.copytree(runs["held"], folder)
    failed = RequestRecord(
        index=60, scheduled_s=30.0, send_s=30.0, max_tokens=64, error_kind="timeout"
    )
    with (folder / "requests.jsonl").open("a") as lines:
        lines.write(json.dumps(failed.to_json()) + "\n")
    held = predict_run(TRUTH, OVERHEAD_S, folder)
    assert held.requests == 60 and held.prompts == "regenerated"
