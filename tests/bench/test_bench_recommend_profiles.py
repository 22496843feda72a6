"""`rayfleet profiles list | show | export` on stored fixture sweeps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fixtures.profile_fixtures import standard_store
from typer.testing import CliRunner

from rayfleet.bench.store import ProfileStore
from rayfleet.platform.cli import app

WIDE = {"COLUMNS": "250"}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ProfileStore:
    return standard_store(tmp_path_factory.mktemp("profiles"))


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, ["profiles", *args], env=WIDE)
    assert result.exit_code == 0, result.output
    return result.output


def test_list_has_one_row_per_configuration(store: ProfileStore) -> None:
    out = _run("list", "--data-dir", str(store.data_dir))
    for label in ("cpu unified ×1 pow2", "cpu unified ×2 pow2", "nvidia-l4x1 unified ×1 pow2"):
        assert label in out
    assert "$0.710" in out  # the L4's example price per hour


def test_show_by_number_and_by_run_id(store: ProfileStore) -> None:
    by_number = _run("show", "1", "--data-dir", str(store.data_dir))
    assert "cpu unified ×1 pow2" in by_number
    by_run = _run("show", "l4-1x", "--data-dir", str(store.data_dir))
    assert "l4-1x#3" in by_run and "answered" in by_run  # the saturated stage is shown
    missing = CliRunner().invoke(
        app, ["profiles", "show", "nope", "--data-dir", str(store.data_dir)]
    )
    assert missing.exit_code == 2 and "no configuration 'nope'" in missing.output


def test_export_writes_points_with_costs_and_a_plot(store: ProfileStore, tmp_path: Path) -> None:
    _run("export", "--out", str(tmp_path), "--data-dir", str(store.data_dir))
    rows = list(csv.DictReader((tmp_path / "profiles.csv").open()))
    assert len(rows) == sum(len(e.stages) for e in store.runs())
    l4 = [r for r in rows if r["accelerator"] == "nvidia-l4x1"]
    first = l4[0]
    hourly = float(first["usd_per_hour"])
    weighted = float(first["input_tokens_per_s"]) / 4 + float(first["output_tokens_per_s"])
    assert float(first["usd_per_million_output"]) == pytest.approx(hourly / 3600 / weighted * 1e6)
    assert json.loads((tmp_path / "profiles.json").read_text())[0]["model"] == "tiny-llama"
    assert (tmp_path / "throughput_latency.png").read_bytes()[:4] == b"\x89PNG"


def test_export_of_an_empty_store_fails_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["profiles", "export", "--out", str(tmp_path / "o"), "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 2 and "no stored rate sweeps" in result.output
