"""vLLM-named engine metrics of a simulated replica, through ``ray.util.metrics``.

Names and tags follow vLLM's Ray metrics wrappers (``vllm:x`` becomes ``vllm_x``, tags
``model_name``, ``engine`` and ``ReplicaId``), so Ray's metrics endpoint shows
``ray_vllm_prefix_cache_hits_total`` etc. exactly as for a real engine and the bench
harness reads them unchanged. Times are simulated seconds.
"""

from __future__ import annotations

from ray.util import metrics

from rayfleet.bench.sim.engine import SimEngineCore, StepPlan, TokenEvent

TAG_KEYS = ("model_name", "engine", "ReplicaId")
# vLLM's time_to_first_token_seconds buckets.
TTFT_BUCKETS = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
]


def replica_id() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:  # outside a Serve replica
        return ""


class SimMetrics:
    def __init__(self, core: SimEngineCore, model_name: str) -> None:
        self._core = core
        self._tags = {"model_name": model_name, "engine": "0", "ReplicaId": replica_id()}
        self._hits = metrics.Counter(
            "vllm_prefix_cache_hits",
            description="Prefix cache hits, in terms of number of cached tokens.",
            tag_keys=TAG_KEYS,
        )
        self._queries = metrics.Counter(
            "vllm_prefix_cache_queries",
            description="Prefix cache queries, in terms of number of queried tokens.",
            tag_keys=TAG_KEYS,
        )
        self._running = self._gauge("vllm_num_requests_running", "Requests in model execution.")
        self._waiting = self._gauge("vllm_num_requests_waiting", "Requests waiting.")
        self._kv_usage = self._gauge("vllm_kv_cache_usage_perc", "KV-cache usage, 1 = full.")
        self._ttft = metrics.Histogram(
            "vllm_time_to_first_token_seconds",
            description="Histogram of time to first token in seconds.",
            boundaries=TTFT_BUCKETS,
            tag_keys=TAG_KEYS,
        )
        self._seen_hits = 0
        self._seen_queries = 0

    @staticmethod
    def _gauge(name: str, description: str) -> metrics.Gauge:
        return metrics.Gauge(name, description=description, tag_keys=TAG_KEYS)

    def on_step(self, plan: StepPlan, events: list[TokenEvent]) -> None:
        core = self._core
        self._count(self._hits, core.prefix_cache_hits - self._seen_hits)
        self._count(self._queries, core.prefix_cache_queries - self._seen_queries)
        self._seen_hits = core.prefix_cache_hits
        self._seen_queries = core.prefix_cache_queries
        for event in events:
            request = event.request
            if len(request.token_times) == 1:
                self._ttft.observe(request.token_times[0] - request.arrival_s, tags=self._tags)
        self.update_gauges()

    def update_gauges(self) -> None:
        self._running.set(len(self._core.running), tags=self._tags)
        self._waiting.set(len(self._core.waiting), tags=self._tags)
        self._kv_usage.set(self._core.kv_cache_usage, tags=self._tags)

    def _count(self, counter: metrics.Counter, amount: int) -> None:
        if amount > 0:
            counter.inc(amount, tags=self._tags)
