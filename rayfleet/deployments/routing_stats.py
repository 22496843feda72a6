"""Load stats of a vLLM engine for ``record_routing_stats``, the keys router/load.py reads.

vLLM's AsyncLLM hands the scheduler's stats (running and waiting requests, KV-cache
usage) to its stat loggers after every engine step that produced output. A
``SchedulerStatsProbe`` joins those loggers and keeps the latest. An engine with no
unfinished request is idle whatever its last step said, so it reports zeros, fresh.

Everything reached inside vLLM is optional: without it the stats stay as the parent
returned them (e.g. only ``kv_event_metadata``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class SchedulerStatsProbe:
    """A vLLM stat logger (duck-typed) that remembers the last scheduler stats."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.num_running = 0
        self.num_waiting = 0
        self.kv_cache_usage = 0.0
        self.reported_at: float | None = None

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any = None,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        if scheduler_stats is None:
            return
        self.num_running = int(scheduler_stats.num_running_reqs)
        self.num_waiting = int(scheduler_stats.num_waiting_reqs) + int(
            getattr(scheduler_stats, "num_skipped_waiting_reqs", 0)
        )
        self.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
        self.reported_at = self._clock()

    # The rest of vLLM's stat-logger interface: nothing to do.
    def log(self) -> None:
        pass

    def log_engine_initialized(self) -> None:
        pass

    def record_sleep_state(self, is_awake: int = 1, level: int = 0) -> None:
        pass

    def record_admission_rejection(self, reason: str) -> None:
        pass


def engine_client(engine: Any) -> Any:
    """vLLM's AsyncLLM inside Ray Serve LLM's VLLMEngine, if there is one."""
    return getattr(engine, "_engine_client", None)


def attach_probe(client: Any) -> SchedulerStatsProbe | None:
    """The probe among the client's stat loggers, added on first use; None if it has none."""
    manager = getattr(client, "logger_manager", None)
    loggers = getattr(manager, "stat_loggers", None)
    if not isinstance(loggers, list):
        return None
    for logger in loggers:
        if isinstance(logger, SchedulerStatsProbe):
            return logger
    probe = SchedulerStatsProbe()
    loggers.append(probe)
    return probe


def _idle(client: Any) -> bool:
    processor = getattr(client, "output_processor", None)
    has_unfinished = getattr(processor, "has_unfinished_requests", None)
    return callable(has_unfinished) and not has_unfinished()


def load_stats(client: Any, clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """num_running, num_waiting, kv_cache_usage and reported_at, or {} when unknown."""
    if client is None:
        return {}
    if _idle(client):
        return {"num_running": 0, "num_waiting": 0, "kv_cache_usage": 0.0, "reported_at": clock()}
    probe = attach_probe(client)
    if probe is None or probe.reported_at is None:
        return {}
    return {
        "num_running": probe.num_running,
        "num_waiting": probe.num_waiting,
        "kv_cache_usage": probe.kv_cache_usage,
        "reported_at": probe.reported_at,
    }
