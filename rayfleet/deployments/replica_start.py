"""Replica start without two waits Ray Serve LLM puts before an engine serves.

Measured on a 2-core host (docs/benchmarks.md), each costs seconds of every replica
start, hence of every `rayfleet up`, scale-out and recovery:

1. **The per-node download.** Before an engine starts, Ray runs a task on every node
   of the replica's placement group to fetch the model from a cloud mirror. With no
   mirror and no s3:// or gs:// source (a local folder, or a Hugging Face id that
   vLLM fetches itself) the task only creates torch's kernel cache folder and
   returns the source unchanged, yet it starts a Ray worker that imports vLLM
   (about 7 s). When the placement group is on the replica's own node,
   ``SkipEmptyNodeDownload`` does that one side effect itself and skips the task,
   through Ray Serve LLM's callback hook (``LLMConfig.callback_config``,
   ``ctx.run_init_node``). On several nodes Ray's step runs as before.
2. **The telemetry actor.** After the engine starts, Ray Serve LLM creates its
   usage-telemetry actor and waits for it, whose worker then starts from nothing
   (about 2.5 s). ``start_telemetry_agent`` creates it the same way (same name,
   ``get_if_exists``) when the replica starts, so that worker starts while the
   engine loads; Ray's later call finds it running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import ray
from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.llm._internal.common.utils.cloud_utils import is_remote_path
from ray.llm._internal.serve.observability.usage_telemetry.usage import (
    _get_or_create_telemetry_agent,
)

logger = logging.getLogger(__name__)


def download_is_empty(source: str | None, mirror: Any | None) -> bool:
    """True when Ray's per-node download would fetch nothing for this model."""
    return mirror is None and bool(source) and not is_remote_path(str(source))


def can_skip_node_download(
    source: str | None, mirror: Any | None, bundle_nodes: Iterable[str], this_node: str
) -> bool:
    """Skip only on one node: elsewhere the step may be what makes a node ready."""
    nodes = set(bundle_nodes)
    return download_is_empty(source, mirror) and nodes == {this_node}


def _make_torch_kernel_cache() -> None:
    # The task's only side effect: torch cannot create this folder if its parent is missing.
    import torch

    os.makedirs(os.path.join(torch.hub._get_torch_home(), "kernels"), exist_ok=True)


def _bundle_nodes(placement_group: Any) -> list[str]:
    table = ray.util.placement_group_table(placement_group)
    return list(table.get("bundles_to_node_id", {}).values())


class SkipEmptyNodeDownload(CallbackBase):
    async def on_before_node_init(self) -> None:
        engine = self.llm_config.get_engine_config()
        if self.ctx.placement_group is None or engine is None:
            return
        if can_skip_node_download(
            engine.actual_hf_model_id,
            engine.mirror_config,
            _bundle_nodes(self.ctx.placement_group),
            ray.get_runtime_context().get_node_id(),
        ):
            _make_torch_kernel_cache()
            self.ctx.run_init_node = False


def start_telemetry_agent() -> None:
    """Create Ray Serve LLM's telemetry actor now instead of after the engine start."""
    if not ray.is_initialized():  # outside a replica: creating an actor would start Ray
        return
    try:
        _get_or_create_telemetry_agent()
    except Exception as error:  # telemetry must never stop a replica; Ray retries later
        logger.info("telemetry actor not created early: %s", error)
