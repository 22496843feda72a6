"""RayFleetLLMServer.record_routing_stats: the engine's load, merged with the parent's stats.

The engine is a small fake of Ray Serve LLM's VLLMEngine holding a fake AsyncLLM with
vLLM's stat-logger manager shape (``logger_manager.stat_loggers``) and output processor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from rayfleet.deployments.routing_stats import SchedulerStatsProbe, attach_probe, load_stats
from rayfleet.deployments.server import RayFleetLLMServer
from rayfleet.router.load import parse_routing_stats

KV_META = {"kv_event_metadata": {"endpoint": "tcp://10.0.0.1:5557", "block_size": 128}}


@dataclass
class SchedulerStats:  # the fields of vllm.v1.metrics.stats.SchedulerStats used
    num_running_reqs: int = 0
    num_waiting_reqs: int = 0
    num_skipped_waiting_reqs: int = 0
    kv_cache_usage: float = 0.0


@dataclass
class FakeLoggerManager:
    stat_loggers: list[Any] = field(default_factory=list)

    def record(self, scheduler_stats: Any, iteration_stats: Any, engine_idx: int = 0) -> None:
        for logger in self.stat_loggers:  # what vLLM's StatLoggerManager.record does
            logger.record(scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0)


@dataclass
class FakeOutputProcessor:
    unfinished: int = 0

    def has_unfinished_requests(self) -> bool:
        return self.unfinished > 0


@dataclass
class FakeAsyncLLM:
    logger_manager: FakeLoggerManager = field(default_factory=FakeLoggerManager)
    output_processor: FakeOutputProcessor = field(default_factory=FakeOutputProcessor)


class FakeVLLMEngine:
    def __init__(self) -> None:
        self._engine_client = FakeAsyncLLM()

    def routing_stats(self) -> dict[str, Any]:
        return dict(KV_META)


class UnstartedServer(RayFleetLLMServer):
    def __del__(self) -> None:  # LLMServer's is a coroutine meant for a started server
        pass


def server_with(engine: Any) -> RayFleetLLMServer:
    server = object.__new__(UnstartedServer)  # no engine start: only the stats path
    server.engine = engine
    return server


def stats_of(server: RayFleetLLMServer) -> dict[str, Any]:
    return asyncio.run(server.record_routing_stats())


def test_busy_engine_reports_the_schedulers_last_stats_with_kv_metadata() -> None:
    engine = FakeVLLMEngine()
    client = engine._engine_client
    server = server_with(engine)
    client.output_processor.unfinished = 5
    assert stats_of(server) == KV_META  # probe attached, no step seen yet
    client.logger_manager.record(SchedulerStats(3, 1, 1, 0.42), None)
    stats = stats_of(server)
    assert stats["kv_event_metadata"] == KV_META["kv_event_metadata"]
    assert (stats["num_running"], stats["num_waiting"], stats["kv_cache_usage"]) == (3, 2, 0.42)
    parsed = parse_routing_stats(stats, received_at=0.0)  # what the router reads
    assert parsed is not None and parsed.num_waiting == 2
    assert parsed.reported_at == stats["reported_at"] > 0
    assert len(client.logger_manager.stat_loggers) == 1  # attached once


def test_idle_engine_reports_zeros_however_old_its_last_step() -> None:
    engine = FakeVLLMEngine()
    client = engine._engine_client
    client.output_processor.unfinished = 1
    server = server_with(engine)
    stats_of(server)
    client.logger_manager.record(SchedulerStats(1, 0, 0, 0.3), None)
    client.output_processor.unfinished = 0
    stats = stats_of(server)
    assert (stats["num_running"], stats["num_waiting"], stats["kv_cache_usage"]) == (0, 0, 0.0)


def test_without_an_engine_or_its_internals_stats_stay_the_parents() -> None:
    assert stats_of(server_with(None)) == {}
    assert load_stats(object()) == {}  # no logger manager, no output processor
    assert attach_probe(object()) is None


def test_probe_ignores_steps_without_scheduler_stats() -> None:
    probe = SchedulerStatsProbe(clock=lambda: 12.5)
    probe.record(None, None)
    assert probe.reported_at is None
    probe.record(SchedulerStats(2, 0, 0, 0.1), None)
    assert (probe.num_running, probe.reported_at) == (2, 12.5)
