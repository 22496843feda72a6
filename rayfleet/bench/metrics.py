"""Latency and throughput metrics from request records, and prefix-cache counters.

Definitions (all in seconds): TTFT = first token chunk - send; E2E = end - send;
TPOT = (E2E - TTFT) / (output tokens - 1); normalized TPOT = E2E / output tokens;
ITL = every gap between consecutive token chunks. Servers that batch several
tokens into one chunk make ITL gaps fewer and longer; TPOT is unaffected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from rayfleet.bench.records import ERROR_KINDS, RequestRecord

LATENCY_METRICS = ("ttft_s", "tpot_s", "itl_s", "ntpot_s", "e2e_s")
# Each pair: (hits, queries). vLLM's own names first, then Ray Serve LLM's re-export.
PREFIX_CACHE_COUNTERS = (
    ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
    ("ray_vllm_prefix_cache_hits_total", "ray_vllm_prefix_cache_queries_total"),
)


@dataclass(frozen=True)
class Slo:
    ttft_s: float | None = None
    tpot_s: float | None = None


def stats(values: Iterable[float]) -> dict[str, float | None]:
    """mean, p50, p90 and p99 (linear interpolation); None for no values."""
    array = np.asarray(list(values), dtype=float)
    if array.size == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None}
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return {"mean": float(array.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def output_tokens(record: RequestRecord) -> int:
    """Tokens out from the server's usage; the chunk count if it sent none."""
    return record.output_tokens if record.output_tokens is not None else len(record.chunk_s)


def tpot(record: RequestRecord) -> float | None:
    out = output_tokens(record)
    if record.ttft_s is None or record.e2e_s is None or out < 2:
        return None
    return (record.e2e_s - record.ttft_s) / (out - 1)


def normalized_tpot(record: RequestRecord) -> float | None:
    out = output_tokens(record)
    return None if record.e2e_s is None or out < 1 else record.e2e_s / out


def itls(record: RequestRecord) -> list[float]:
    return [b - a for a, b in zip(record.chunk_s, record.chunk_s[1:], strict=False)]


def meets_slo(record: RequestRecord, slo: Slo) -> bool:
    """OK, and within both targets (a one-token answer has no TPOT to miss)."""
    if not record.ok or record.ttft_s is None:
        return False
    if slo.ttft_s is not None and record.ttft_s > slo.ttft_s:
        return False
    per_token = tpot(record)
    return slo.tpot_s is None or per_token is None or per_token <= slo.tpot_s


def _latencies(ok: Sequence[RequestRecord]) -> dict[str, dict[str, float | None]]:
    return {
        "ttft_s": stats(r.ttft_s for r in ok if r.ttft_s is not None),
        "tpot_s": stats(v for r in ok if (v := tpot(r)) is not None),
        "itl_s": stats(gap for r in ok for gap in itls(r)),
        "ntpot_s": stats(v for r in ok if (v := normalized_tpot(r)) is not None),
        "e2e_s": stats(r.e2e_s for r in ok if r.e2e_s is not None),
    }


def span_s(records: Sequence[RequestRecord]) -> float:
    """From the first send to the last end: the denominator of every rate."""
    ends = [r.end_s for r in records if r.end_s is not None]
    if not records or not ends:
        return 0.0
    return max(ends) - min(r.send_s for r in records)


def completion_rate(records: Sequence[RequestRecord]) -> float | None:
    """Requests/s at which answers came back: (n - 1) / (last end - first end).

    Unlike n / span it is not biased low by the last request's latency, so a short
    stage of a server that keeps up still shows the offered rate.
    """
    ends = sorted(end for r in records if r.ok and (end := r.end_s) is not None)
    if len(ends) < 2 or ends[-1] <= ends[0]:
        return None
    return (len(ends) - 1) / (ends[-1] - ends[0])


def summarize(
    records: Sequence[RequestRecord],
    slo: Slo | None = None,
    prefix_cache: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """The run's metrics as a JSON-ready dict."""
    slo = slo or Slo()
    ok = [r for r in records if r.ok]
    span = span_s(records)
    tokens_in = sum(r.input_tokens or 0 for r in ok)
    tokens_out = sum(output_tokens(r) for r in ok)
    good = sum(meets_slo(r, slo) for r in records)
    errors = Counter(r.error_kind for r in records if r.error_kind)

    def per_s(amount: float) -> float:
        return amount / span if span > 0 else 0.0

    return {
        "requests_total": len(records),
        "requests_ok": len(ok),
        "requests_failed": len(records) - len(ok),
        "errors": {kind: errors.get(kind, 0) for kind in ERROR_KINDS},
        **_latencies(ok),
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "duration_s": span,
        "requests_per_s": per_s(len(ok)),
        "completion_rate_per_s": completion_rate(records),
        "input_tokens_per_s": per_s(tokens_in),
        "output_tokens_per_s": per_s(tokens_out),
        "total_tokens_per_s": per_s(tokens_in + tokens_out),
        "goodput": {
            "slo_ttft_s": slo.ttft_s,
            "slo_tpot_s": slo.tpot_s,
            "requests_good": good,
            "fraction": good / len(records) if records else 0.0,
            "requests_per_s": per_s(good),
        },
        "usage_missing": sum(r.output_tokens is None for r in ok),
        "dispatch_lag_s": stats(r.send_s - r.scheduled_s for r in records),
        "prefix_cache": prefix_cache,
    }


def parse_prefix_counters(text: str) -> dict[str, float] | None:
    """Prefix-cache hits and queries (tokens) summed over engines/replicas, or None."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    for hits, queries in PREFIX_CACHE_COUNTERS:
        if hits in samples and queries in samples:
            return {"hits": samples[hits], "queries": samples[queries]}
    return None


def scrape_prefix_counters(url: str, timeout_s: float = 10.0) -> dict[str, float] | None:
    response = httpx.get(url, timeout=timeout_s)
    response.raise_for_status()
    return parse_prefix_counters(response.text)


def prefix_cache_delta(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, float | None] | None:
    """Hits, queries and hit rate over a run, from counters scraped around it."""
    if before is None or after is None:
        return None
    hits = after["hits"] - before["hits"]
    queries = after["queries"] - before["queries"]
    return {"hits": hits, "queries": queries, "hit_rate": hits / queries if queries > 0 else None}
