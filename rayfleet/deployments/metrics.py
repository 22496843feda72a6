"""RayFleet's own ingress metrics, exported through Ray's metrics agent.

``ray.util.metrics`` series appear on the node's Prometheus endpoint (the
``--metrics-export-port``, 127.0.0.1:8080 locally) next to Ray Serve's and vLLM's,
prefixed ``ray_``:

- ``ray_rayfleet_ingress_errors_total{kind, status}``: every error the ingress
  answered, by kind (bounded set, see ``KINDS``) and HTTP status;
- ``ray_rayfleet_ingress_retries_total{reason}``: requests re-sent to another
  engine replica before anything reached the client.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

INGRESS_ERRORS = "rayfleet_ingress_errors_total"
INGRESS_RETRIES = "rayfleet_ingress_retries_total"

# Status → kind; a small fixed set keeps the series' cardinality bounded.
KINDS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "too_large",
    422: "invalid_request",
    429: "overloaded",
    503: "unavailable",
}


def kind_for(status: int) -> str:
    return KINDS.get(status, "server_error" if status >= 500 else "client_error")


class IngressMetrics:
    """Counts in memory (for tests and `rayfleet status`) and in Ray's exporter."""

    def __init__(self) -> None:
        self.errors: Counter[tuple[str, int]] = Counter()
        self.retries: Counter[str] = Counter()
        self._ray_errors: Any = None
        self._ray_retries: Any = None

    def _ray_counters(self) -> tuple[Any, Any]:
        # Created on first use, inside the replica, where Ray's exporter runs.
        if self._ray_errors is None:
            from ray.util.metrics import Counter as RayCounter

            self._ray_errors = RayCounter(
                INGRESS_ERRORS,
                description="Errors the RayFleet ingress answered, by kind and HTTP status.",
                tag_keys=("kind", "status"),
            )
            self._ray_retries = RayCounter(
                INGRESS_RETRIES,
                description="Requests re-sent to another engine replica, by reason.",
                tag_keys=("reason",),
            )
        return self._ray_errors, self._ray_retries

    def record_error(self, status: int, kind: str | None = None) -> None:
        kind = kind or kind_for(status)
        self.errors[(kind, status)] += 1
        self._ray_counters()[0].inc(1, tags={"kind": kind, "status": str(status)})

    def record_retry(self, reason: str) -> None:
        self.retries[reason] += 1
        self._ray_counters()[1].inc(1, tags={"reason": reason})


INGRESS_METRICS = IngressMetrics()


# --- live per-pool figures (`rayfleet status`) -----------------------------------------

ENGINE_GAUGES = {
    "running": "ray_vllm_num_requests_running",
    "waiting": "ray_vllm_num_requests_waiting",
    "kv_use": "ray_vllm_kv_cache_usage_perc",
}
ENGINE_COUNTERS = {
    "output_tokens": "ray_vllm_generation_tokens_total",
    "prefix_hits": "ray_vllm_prefix_cache_hits_total",
    "prefix_queries": "ray_vllm_prefix_cache_queries_total",
    "ttft_sum": "ray_vllm_time_to_first_token_seconds_sum",
    "ttft_count": "ray_vllm_time_to_first_token_seconds_count",
}


@dataclass
class PoolFigures:
    """What one pool's engines report right now (gauges) and so far (counters)."""

    replicas: int = 0
    running: float = 0.0
    waiting: float = 0.0
    kv_use: float = 0.0  # the fullest replica's share of its KV cache
    output_tokens: float = 0.0
    prefix_hits: float = 0.0
    prefix_queries: float = 0.0
    ttft_sum: float = 0.0
    ttft_count: float = 0.0

    @property
    def prefix_hit_rate(self) -> float | None:
        return self.prefix_hits / self.prefix_queries if self.prefix_queries else None

    @property
    def ttft_mean_s(self) -> float | None:
        return self.ttft_sum / self.ttft_count if self.ttft_count else None


def pool_figures(
    metrics_text: str, replicas_by_pool: dict[str, list[str]]
) -> dict[str, PoolFigures]:
    """Sum vLLM's per-replica series (label ``ReplicaId``) into the pools they belong to.

    ``replicas_by_pool`` maps a Serve deployment (pool) to its replica ids, as Serve's
    details report them.
    """
    pool_of = {rid: pool for pool, rids in replicas_by_pool.items() for rid in rids}
    figures = {pool: PoolFigures(replicas=len(rids)) for pool, rids in replicas_by_pool.items()}
    fields = {
        **{v: k for k, v in ENGINE_GAUGES.items()},
        **{v: k for k, v in ENGINE_COUNTERS.items()},
    }
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            field = fields.get(sample.name)
            pool = pool_of.get(sample.labels.get("ReplicaId", ""))
            if field is None or pool is None:
                continue
            current = getattr(figures[pool], field)
            value = max(current, sample.value) if field == "kv_use" else current + sample.value
            setattr(figures[pool], field, value)
    return figures


def ingress_error_totals(metrics_text: str) -> Counter[str]:
    """``kind status`` → count, from ``ray_rayfleet_ingress_errors_total``."""
    totals: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == f"ray_{INGRESS_ERRORS}":
                key = f"{sample.labels.get('kind')} {sample.labels.get('status')}"
                totals[key] += int(sample.value)
    return totals


POOL_COLUMNS = (
    "pool",
    "replicas",
    "running",
    "waiting",
    "KV use",
    "prefix hits",
    "TTFT mean",
    "output tokens",
)


def pool_row(figures: PoolFigures) -> list[str]:
    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.0%}"

    ttft = figures.ttft_mean_s
    return [
        str(figures.replicas),
        f"{figures.running:g}",
        f"{figures.waiting:g}",
        share(figures.kv_use),
        share(figures.prefix_hit_rate),
        "-" if ttft is None else f"{ttft * 1000:.0f} ms",
        f"{figures.output_tokens:g}",
    ]
