"""RayFleet's engine deployment: ray.serve.llm's LLMServer with three changes.

1. Each CPU engine pins its threads to its own cores (replicas share one
   runtime_env, so the choice is made here from the replica's rank).
2. TPU replicas check their slice with jax before loading the model.
3. Streams are batched on the leading edge (see streaming.py), so the first
   token is not held back for a whole batching interval.
4. Ray's telemetry actor starts while the engine loads (see replica_start.py).
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from ray import serve
from ray.llm._internal.serve.core.server.llm_server import LLMServer

from rayfleet.deployments import preflight
from rayfleet.deployments.llm_config import ENV_CORE_OFFSET, ENV_CPUS_PER_ENGINE, ENV_EXPECT_TPU
from rayfleet.deployments.replica_start import start_telemetry_agent
from rayfleet.deployments.routing_stats import engine_client, load_stats
from rayfleet.deployments.streaming import leading_edge_batches
from rayfleet.platform.tiny_model import ensure_tiny, tiny_path

T = TypeVar("T")


def _replica_rank() -> int:
    try:
        return int(serve.get_replica_context().rank.rank)
    except Exception:  # outside a replica (tests, offline use)
        return 0


def prepare_replica(llm_config: Any) -> Any:
    """Environment and model checks done before the engine starts."""
    if ENV_CORE_OFFSET in os.environ and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = preflight.cpu_bind(
            int(os.environ[ENV_CORE_OFFSET]),
            int(os.environ.get(ENV_CPUS_PER_ENGINE, "1")),
            _replica_rank(),
            preflight.available_cores(),
        )
    if ENV_EXPECT_TPU in os.environ:
        preflight.check_tpu_with_jax(os.environ[ENV_EXPECT_TPU])
    if llm_config.model_loading_config.model_source == str(tiny_path()):
        ensure_tiny()  # this node may not have made it yet (the app was built elsewhere)
    return llm_config


class RayFleetLLMServer(LLMServer):
    async def __init__(self, llm_config: Any, **kwargs: Any) -> None:  # type: ignore[misc]
        start_telemetry_agent()
        await super().__init__(prepare_replica(llm_config), **kwargs)

    async def record_routing_stats(self) -> dict[str, Any]:
        """The parent's stats (e.g. kv_event_metadata) plus the engine's load: num_running,
        num_waiting, kv_cache_usage and reported_at (see routing_stats.py)."""
        stats = dict(await super().record_routing_stats() or {})
        stats.update(load_stats(engine_client(self.engine)))
        return stats

    def _batch_output_stream(self, generator: AsyncGenerator[T, None]) -> Any:
        return leading_edge_batches(generator, self._get_batch_interval_ms() / 1000)
