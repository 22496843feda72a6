"""Per-pool figures from Prometheus text, the Grafana dashboard, and secrets in renders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from rayfleet.deployments.metrics import (
    ENGINE_COUNTERS,
    ENGINE_GAUGES,
    INGRESS_ERRORS,
    INGRESS_RETRIES,
    IngressMetrics,
    ingress_error_totals,
    kind_for,
    pool_figures,
    pool_row,
)
from rayfleet.router.metrics import DECISIONS

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "docs/grafana/rayfleet-dashboard.json"

SCRAPE = """\
# TYPE ray_vllm_num_requests_running gauge
ray_vllm_num_requests_running{ReplicaId="a1",model_name="m"} 3
ray_vllm_num_requests_running{ReplicaId="a2",model_name="m"} 1
ray_vllm_num_requests_running{ReplicaId="zz",model_name="m"} 7
# TYPE ray_vllm_kv_cache_usage_perc gauge
ray_vllm_kv_cache_usage_perc{ReplicaId="a1"} 0.25
ray_vllm_kv_cache_usage_perc{ReplicaId="a2"} 0.5
# TYPE ray_vllm_prefix_cache_hits counter
ray_vllm_prefix_cache_hits_total{ReplicaId="a1"} 30
# TYPE ray_vllm_prefix_cache_queries counter
ray_vllm_prefix_cache_queries_total{ReplicaId="a1"} 100
ray_vllm_prefix_cache_queries_total{ReplicaId="a2"} 20
# TYPE ray_vllm_time_to_first_token_seconds histogram
ray_vllm_time_to_first_token_seconds_sum{ReplicaId="b1"} 2.0
ray_vllm_time_to_first_token_seconds_count{ReplicaId="b1"} 40
# TYPE ray_rayfleet_ingress_errors counter
ray_rayfleet_ingress_errors_total{kind="overloaded",status="429"} 12
ray_rayfleet_ingress_errors_total{kind="unauthorized",status="401"} 2
"""


def test_engine_series_are_summed_into_their_pool() -> None:
    figures = pool_figures(SCRAPE, {"m-unified": ["a1", "a2"], "m-decode": ["b1"]})
    unified, decode = figures["m-unified"], figures["m-decode"]
    assert (unified.replicas, unified.running, unified.kv_use) == (2, 4, 0.5)
    assert unified.prefix_hit_rate == pytest.approx(30 / 120)
    assert decode.ttft_mean_s == pytest.approx(0.05) and decode.prefix_hit_rate is None
    assert pool_row(decode)[5] == "50 ms"


def test_ingress_error_totals_by_kind_and_status() -> None:
    assert ingress_error_totals(SCRAPE) == {"overloaded 429": 12, "unauthorized 401": 2}


def test_error_kinds_are_a_bounded_set() -> None:
    assert kind_for(429) == "overloaded" and kind_for(418) == "client_error"
    assert kind_for(502) == "server_error"
    counts = IngressMetrics()
    counts.record_error(400, "invalid_json")
    counts.record_error(503)
    assert counts.errors == {("invalid_json", 400): 1, ("unavailable", 503): 1}


def _exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def test_dashboard_covers_the_issue_panels() -> None:
    board = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for topic in ("ttft", "tpot", "throughput", "queue", "kv", "prefix", "router", "errors"):
        assert topic in titles
    assert {v["name"] for v in board["templating"]["list"]} >= {"datasource", "pool"}


def test_dashboard_queries_name_series_that_exist() -> None:
    known = {
        *ENGINE_GAUGES.values(),
        *ENGINE_COUNTERS.values(),
        f"ray_{DECISIONS}",
        f"ray_{INGRESS_ERRORS}",
        f"ray_{INGRESS_RETRIES}",
        "ray_vllm_prompt_tokens_total",
        "ray_vllm_request_success_total",
        "ray_vllm_time_to_first_token_seconds_bucket",
        "ray_vllm_request_time_per_output_token_seconds_bucket",
        "ray_serve_deployment_queued_queries",
    }
    for expr in _exprs():
        names = set(re.findall(r"\b(ray_[a-z_]+)\b", expr))
        assert names and names <= known, expr
        assert "$pool" in expr or "$replicas" in expr or "rayfleet" in expr, expr


def test_rendered_serve_config_names_the_key_variable_never_its_value(monkeypatch) -> None:
    from rayfleet.deployments.serve_config import render_serve_config
    from rayfleet.platform.plan import resolve
    from rayfleet.platform.spec import Spec

    monkeypatch.setenv("RAYFLEET_SECRET_KEY", "sk-do-not-render")
    spec = Spec.model_validate(
        {
            **yaml.safe_load((REPO / "rayfleet/platform/default-spec.yaml").read_text()),
            "auth": {"api_key_env": "RAYFLEET_SECRET_KEY"},
        }
    )
    rendered = yaml.safe_dump(render_serve_config(resolve(spec)))
    assert "RAYFLEET_SECRET_KEY" in rendered and "sk-do-not-render" not in rendered
