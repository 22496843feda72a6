"""Metrics math on hand-built records, sweep parsing and saturation rules."""

from __future__ import annotations

import pytest

from rayfleet.bench.loadgen import LoadConfig
from rayfleet.bench.metrics import (
    Slo,
    parse_prefix_counters,
    prefix_cache_delta,
    stats,
    summarize,
)
from rayfleet.bench.records import RequestRecord
from rayfleet.bench.sweep import StopRule, parse_geometric, parse_sweep, saturation


def record(index: int, send: float, chunks: list[float], out: int | None = None, **kw):
    """An OK request whose last chunk ends it (e2e = last chunk time)."""
    return RequestRecord(
        index=index,
        scheduled_s=send,
        send_s=send,
        max_tokens=len(chunks),
        ttft_s=chunks[0],
        e2e_s=chunks[-1],
        chunk_s=chunks,
        input_tokens=10,
        output_tokens=len(chunks) if out is None else out,
        status=200,
        **kw,
    )


def failed(index: int, kind: str) -> RequestRecord:
    return RequestRecord(index=index, scheduled_s=0, send_s=0, max_tokens=4, error_kind=kind)


def test_stats_percentiles():
    values = stats(range(1, 101))
    assert values["mean"] == 50.5 and values["p50"] == 50.5
    assert values["p90"] == pytest.approx(90.1) and values["p99"] == pytest.approx(99.01)
    assert stats([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_summary_math():
    records = [
        record(0, 0.0, [0.1, 0.2, 0.3, 0.4, 0.5]),  # TPOT (0.5-0.1)/4 = 0.1
        record(1, 1.0, [0.2, 0.5, 0.8]),  # TPOT (0.8-0.2)/2 = 0.3, ends at 1.8
        failed(2, "http_5xx"),
        failed(3, "timeout"),
    ]
    s = summarize(records, Slo(ttft_s=0.15, tpot_s=0.2))
    assert (s["requests_total"], s["requests_ok"], s["requests_failed"]) == (4, 2, 2)
    assert s["errors"] == {
        "http_4xx": 0,
        "http_5xx": 1,
        "timeout": 1,
        "connection": 0,
        "stream_error": 0,
    }
    assert s["ttft_s"]["mean"] == pytest.approx(0.15)
    assert s["tpot_s"]["mean"] == pytest.approx(0.2)
    assert s["itl_s"]["mean"] == pytest.approx((0.1 * 4 + 0.3 * 2) / 6)
    assert s["ntpot_s"]["mean"] == pytest.approx((0.5 / 5 + 0.8 / 3) / 2)
    assert s["e2e_s"]["p50"] == pytest.approx(0.65)
    assert s["duration_s"] == pytest.approx(1.8)  # first send 0 → last end 1.8
    assert s["output_tokens_per_s"] == pytest.approx(8 / 1.8)
    assert s["input_tokens_per_s"] == pytest.approx(20 / 1.8)
    assert s["total_tokens_per_s"] == pytest.approx(28 / 1.8)
    assert s["requests_per_s"] == pytest.approx(2 / 1.8)
    assert s["completion_rate_per_s"] == pytest.approx(1 / 1.3)
    good = s["goodput"]  # only request 0 meets both TTFT ≤ 0.15 and TPOT ≤ 0.2
    assert good["requests_good"] == 1 and good["fraction"] == 0.25
    assert good["requests_per_s"] == pytest.approx(1 / 1.8)


def test_tpot_uses_usage_tokens_not_chunks():
    # One chunk carrying 5 tokens (a server that batches): TPOT from usage.
    s = summarize([record(0, 0.0, [0.1, 0.5], out=9)])
    assert s["tpot_s"]["p50"] == pytest.approx(0.4 / 8)
    assert s["output_tokens"] == 9


def test_no_usage_falls_back_to_chunks():
    r = record(0, 0.0, [0.1, 0.2, 0.3])
    r.output_tokens = None
    s = summarize([r])
    assert s["output_tokens"] == 3 and s["usage_missing"] == 1


def test_empty_summary():
    s = summarize([])
    assert s["requests_total"] == 0 and s["requests_per_s"] == 0.0
    assert s["ttft_s"]["p90"] is None


PROMETHEUS = """# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 30
vllm:prefix_cache_hits_total{engine="1",model_name="m"} 10
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 100
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 60
"""
RAY = """# TYPE ray_vllm_prefix_cache_hits_total counter
ray_vllm_prefix_cache_hits_total{ReplicaId="a"} 5
ray_vllm_prefix_cache_hits_total{ReplicaId="b"} 7
# TYPE ray_vllm_prefix_cache_queries_total counter
ray_vllm_prefix_cache_queries_total{ReplicaId="a"} 20
ray_vllm_prefix_cache_queries_total{ReplicaId="b"} 28
"""


def test_prefix_counters_sum_over_engines_and_replicas():
    assert parse_prefix_counters(PROMETHEUS) == {"hits": 40, "queries": 160}
    assert parse_prefix_counters(RAY) == {"hits": 12, "queries": 48}
    assert parse_prefix_counters("# nothing here\nup 1\n") is None
    delta = prefix_cache_delta({"hits": 10, "queries": 60}, {"hits": 40, "queries": 160})
    assert delta == {"hits": 30, "queries": 100, "hit_rate": 0.3}
    assert prefix_cache_delta(None, {"hits": 1, "queries": 1}) is None
    assert (
        prefix_cache_delta({"hits": 1, "queries": 1}, {"hits": 1, "queries": 1})["hit_rate"] is None
    )


def test_sweep_parsing():
    assert parse_sweep("1,2,4") == [1, 2, 4]
    assert parse_sweep("2:10:4") == [2, 6, 10]
    assert parse_sweep("0.5:1.5:0.5") == [0.5, 1.0, 1.5]
    assert parse_geometric("1:64:2") == [1, 2, 4, 8, 16, 32, 64]
    assert parse_geometric("1:10:3") == [1, 3, 9]
    for bad in ("", "a,b", "1:2", "0,1", "1:5:0"):
        with pytest.raises(ValueError):
            parse_sweep(bad)
    with pytest.raises(ValueError):
        parse_geometric("1:8:1")


def test_saturation_rules():
    cfg = LoadConfig(target="x", model="m", rate=10.0)
    records = [record(i, i * 0.1, [0.05, 0.06]) for i in range(20)]
    summary = summarize(records)
    assert saturation(summary, cfg, StopRule()) is None
    slow = [record(i, i * 0.1, [0.05, 0.06 + i * 0.1]) for i in range(20)]  # ends spread out
    assert "answered" in saturation(summarize(slow), cfg, StopRule())
    assert "TTFT p90" in saturation(summary, cfg, StopRule(max_ttft_p90_s=0.01))
    broken = records[:5] + [failed(i, "http_5xx") for i in range(5, 20)]
    assert "failed" in saturation(summarize(broken), cfg, StopRule())
    closed = LoadConfig(target="x", model="m", concurrency=2)
    assert saturation(summarize(slow), closed, StopRule()) is None
