"""The router's metrics behind a two-method interface, so the core never imports Ray.

Series (Ray's exporter prefixes them with ``ray_``):

- ``rayfleet_router_decisions_total{reason}``
- ``rayfleet_router_matched_prefix_tokens`` (histogram)
- ``rayfleet_router_decision_seconds`` (histogram)
- ``rayfleet_router_stale_stats_total``
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

DECISIONS = "rayfleet_router_decisions_total"
MATCHED = "rayfleet_router_matched_prefix_tokens"
LATENCY = "rayfleet_router_decision_seconds"
STALE = "rayfleet_router_stale_stats_total"

# Ray histograms need strictly positive bounds; a 0-token match lands in the first bucket.
MATCHED_BUCKETS = [1.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0]
LATENCY_BUCKETS = [5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3]


class RouterMetrics(Protocol):
    def record_decision(self, reason: str, matched_tokens: int, latency_s: float) -> None: ...

    def record_stale_stats(self, count: int) -> None: ...


class NullMetrics:
    def record_decision(self, reason: str, matched_tokens: int, latency_s: float) -> None:
        pass

    def record_stale_stats(self, count: int) -> None:
        pass


class MemoryMetrics:
    """Keeps everything in memory: for tests and the cost benchmark."""

    def __init__(self) -> None:
        self.decisions: Counter[str] = Counter()
        self.matched_tokens: list[int] = []
        self.latencies_s: list[float] = []
        self.stale_stats = 0

    def record_decision(self, reason: str, matched_tokens: int, latency_s: float) -> None:
        self.decisions[reason] += 1
        self.matched_tokens.append(matched_tokens)
        self.latencies_s.append(latency_s)

    def record_stale_stats(self, count: int) -> None:
        self.stale_stats += count


class PrometheusMetrics:
    """prometheus-client series, for a router running outside a Ray actor."""

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY, Counter, Histogram

        registry = registry if registry is not None else REGISTRY
        self._decisions = Counter(
            DECISIONS.removesuffix("_total"),
            "Routing decisions by reason.",
            ["reason"],
            registry=registry,
        )
        self._matched = Histogram(
            MATCHED, "Matched cached prefix, tokens.", buckets=MATCHED_BUCKETS, registry=registry
        )
        self._latency = Histogram(
            LATENCY, "Routing decision time.", buckets=LATENCY_BUCKETS, registry=registry
        )
        self._stale = Counter(
            STALE.removesuffix("_total"), "Stale routing stats seen.", registry=registry
        )

    def record_decision(self, reason: str, matched_tokens: int, latency_s: float) -> None:
        self._decisions.labels(reason=reason).inc()
        self._matched.observe(matched_tokens)
        self._latency.observe(latency_s)

    def record_stale_stats(self, count: int) -> None:
        if count:
            self._stale.inc(count)


class RayMetrics:
    """``ray.util.metrics`` series: exported on Ray's metrics port from any Ray actor."""

    def __init__(self, deployment: str = "") -> None:
        from ray.util import metrics

        tags = {"deployment": deployment}
        self._decisions = metrics.Counter(
            DECISIONS, "Routing decisions by reason.", ("deployment", "reason")
        ).set_default_tags(tags)
        self._matched = metrics.Histogram(
            MATCHED, "Matched cached prefix, tokens.", MATCHED_BUCKETS, ("deployment",)
        ).set_default_tags(tags)
        self._latency = metrics.Histogram(
            LATENCY, "Routing decision time.", LATENCY_BUCKETS, ("deployment",)
        ).set_default_tags(tags)
        self._stale = metrics.Counter(
            STALE, "Stale routing stats seen.", ("deployment",)
        ).set_default_tags(tags)

    def record_decision(self, reason: str, matched_tokens: int, latency_s: float) -> None:
        self._decisions.inc(tags={"reason": reason})
        self._matched.observe(matched_tokens)
        self._latency.observe(latency_s)

    def record_stale_stats(self, count: int) -> None:
        if count:
            self._stale.inc(count)
