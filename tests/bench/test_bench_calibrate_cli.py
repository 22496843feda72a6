"""`rayfleet bench calibrate` and `bench predict-run` on simulator-made runs."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from test_bench_replay import TRUTH, make_run
from typer.testing import CliRunner

from rayfleet.bench.calibrate_cli import read_params
from rayfleet.bench.cli import bench_app

runner = CliRunner()


def invoke(command: str, expect: int = 0) -> str:
    result = runner.invoke(bench_app, shlex.split(command), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result.output


@pytest.fixture(scope="module")
def run_a(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    workload = {"name": "synthetic", "seed": 5, "input_len": "uniform:128:384", "output_len": 48}
    return make_run(tmp_path_factory.mktemp("cli") / "a", tiny_dir, workload, rate=4, count=100)


@pytest.fixture(scope="module")
def run_b(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> Path:
    workload = {"name": "shared-prefix", "seed": 6}
    return make_run(tmp_path_factory.mktemp("cli") / "b", tiny_dir, workload, rate=3, count=60)


def test_calibrate_writes_params_the_simulator_accepts(run_a: Path, tmp_path: Path) -> None:
    out = tmp_path / "params.yaml"
    invoke(f"calibrate {run_a} --out {out}")
    doc = yaml.safe_load(out.read_text())
    assert doc["fit"]["source"] == str(run_a) and doc["fit"]["decode_rows"] == 100
    params, overhead = read_params(out)
    assert params.decode_cost_per_seq == pytest.approx(TRUTH.decode_cost_per_seq, rel=0.3)
    assert overhead >= 0


def test_predict_run_reports_held_out_errors(run_a: Path, run_b: Path, tmp_path: Path) -> None:
    params, result = tmp_path / "params.yaml", tmp_path / "held.json"
    invoke(f"calibrate {run_a} --out {params}")
    output = invoke(f"predict-run {params} {run_b} --out {result}")
    assert "ttft p50" in output and "prompts regenerated" in output
    held = json.loads(result.read_text())
    assert held["requests"] == 60 and held["prompts"] == "regenerated"
    assert held["errors"]["ttft_p50_s"] < 0.1 and held["errors"]["tpot_p50_s"] < 0.1


def test_calibrate_needs_per_request_records(tmp_path: Path) -> None:
    output = invoke(f"calibrate {tmp_path} --out {tmp_path / 'p.yaml'}", expect=2)
    assert "--per-request" in output
