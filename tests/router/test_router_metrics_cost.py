"""Metric series and the router-cost benchmark's output shape (no timing asserts)."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from rayfleet.router.cli import app
from rayfleet.router.cost import CostWorkload, measure, shared_prefix_prompts
from rayfleet.router.metrics import PrometheusMetrics

KEYS = {"p50_us", "p99_us", "total_p99_us"}


def test_prometheus_series_names() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    metrics.record_decision("cache_hit", 256, 20e-6)
    metrics.record_stale_stats(2)
    text = generate_latest(registry).decode()
    assert 'rayfleet_router_decisions_total{reason="cache_hit"} 1.0' in text
    assert "rayfleet_router_matched_prefix_tokens_bucket" in text
    assert "rayfleet_router_decision_seconds_bucket" in text
    assert "rayfleet_router_stale_stats_total 2.0" in text


def test_cost_prompts_share_prefixes_and_are_about_3000_chars() -> None:
    import random

    prompts = shared_prefix_prompts(CostWorkload(groups=2), 20, random.Random(1))
    assert all(2900 <= len(p) <= 3100 for p in prompts)
    assert len({p[:2000] for p in prompts}) <= 2


def test_measure_reports_both_policies() -> None:
    result = measure(4, CostWorkload(warm_requests=50, timed_requests=100))
    assert set(result) == {"rayfleet", "ray-prefix"}
    for figures in result.values():
        assert set(figures) == KEYS
        assert all(value > 0 for value in figures.values())


def test_cli_writes_router_cost_json(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(
        app, ["router-cost", "--replicas", "2,3", "--requests", "100", "--out", str(tmp_path)]
    )
    assert outcome.exit_code == 0, outcome.output
    written = json.loads((tmp_path / "router_cost.json").read_text())
    assert set(written) == {"rayfleet", "ray-prefix"}
    assert set(written["rayfleet"]) == {"2", "3"}
    assert set(written["ray-prefix"]["3"]) == KEYS


def test_cli_rejects_bad_replica_lists(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(app, ["router-cost", "--replicas", "x", "--out", str(tmp_path)])
    assert outcome.exit_code != 0
