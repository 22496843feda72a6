"""Ray Serve adapter: a thin ``RequestRouter`` that hands every decision to the core.

Opt in with ``request_router_config={"request_router_class":
"rayfleet.router.ray_router:RayFleetRouter", "request_router_kwargs": {"settings":
<spec Router as a dict>, "tokenizer": <model path, precise mode only>}}``.

Replica ids are Serve's ``ReplicaID`` objects; the prompt is read from
``pending_request.args[0]`` (a Completion/ChatCompletion request) and the session from
the request metadata, ``args[1]``'s headers or the body's ``user`` field.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ray.serve.request_router import (
    PendingRequest,
    ReplicaID,
    ReplicaResult,
    RequestRouter,
    RunningReplica,
)

from rayfleet.platform.spec import Router
from rayfleet.router.core import CacheAwareRouter
from rayfleet.router.kv_subscriber import KvEventSubscriber
from rayfleet.router.metrics import NullMetrics, RayMetrics, RouterMetrics
from rayfleet.router.policy import PreparedRequest
from rayfleet.router.prompt import PromptInput, prompt_input
from rayfleet.router.tokens import CachedTokenizer

log = logging.getLogger(__name__)


class RayFleetRouter(RequestRouter):
    """Cache- and load-aware replica choice ("sticky while cheaper")."""

    def initialize_state(
        self, settings: dict[str, Any] | None = None, tokenizer: str | None = None, **_: Any
    ) -> None:
        self._settings = Router.model_validate(settings or {"policy": "rayfleet"})
        self._core = CacheAwareRouter(
            self._settings,
            tokenizer=self._tokenizer(tokenizer),
            subscriber=KvEventSubscriber() if self._settings.index == "precise" else None,
            metrics=self._metrics(),
        )
        self._id_source: Sequence[RunningReplica] | None = None
        self._ids: tuple[ReplicaID, ...] = ()

    def _tokenizer(self, name: str | None) -> CachedTokenizer | None:
        if self._settings.index != "precise":
            return None
        if not name:
            log.warning("precise index without a tokenizer: routing stays approximate")
            return None
        return CachedTokenizer.from_pretrained(name, self._settings.tokenizer_cache_size)

    def _metrics(self) -> RouterMetrics:
        try:
            return RayMetrics(self._deployment_id.name if self._deployment_id else "")
        except Exception:  # metrics must never stop routing (e.g. outside a Ray worker)
            log.warning("Ray metrics unavailable; router metrics disabled", exc_info=True)
            return NullMetrics()

    # --- replica set ------------------------------------------------------------------

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self._core.sync_replicas({r.replica_id: r.routing_stats for r in replicas})

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._core.remove_replica(replica_id)

    # --- routing ----------------------------------------------------------------------

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is not None:
            # We already rank every candidate: when all ranks are full, back off
            # instead of spinning on an identical answer.
            pending_request.routing_context.should_backoff = True
        decision = self._core.choose(
            self._candidate_ids(candidate_replicas),
            self._prepare(pending_request),
            self.replica_queue_len_cache.get,
        )
        replicas = self._replicas
        return [[replicas[rid] for rid in rank if rid in replicas] for rank in decision.ranks]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult
    ) -> None:
        request_id = pending_request.metadata.internal_request_id
        self._core.on_routed(request_id, replica_id, self._prepare(pending_request))

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        self._core.on_completed(internal_request_id, replica_id)

    # --- helpers ----------------------------------------------------------------------

    def _candidate_ids(self, candidates: Sequence[RunningReplica]) -> tuple[ReplicaID, ...]:
        # Serve passes the same list object until its replicas change: convert it once,
        # and hand the core the same tuple so it can reuse its candidate set too.
        if candidates is not self._id_source:
            self._id_source = candidates
            self._ids = tuple(r.replica_id for r in candidates)
        return self._ids

    def _prepare(self, pending_request: PendingRequest | None) -> PreparedRequest:
        if pending_request is None:
            return self._core.prepare(None)
        request_id = pending_request.metadata.internal_request_id
        cached = self._core.prepared(request_id)
        if cached is not None:  # Serve retries choose_replicas; read the prompt once
            return cached
        return self._core.prepare(self._prompt(pending_request), request_id)

    def _prompt(self, pending_request: PendingRequest) -> PromptInput | None:
        try:
            return prompt_input(
                pending_request.args,
                pending_request.kwargs,
                metadata_session=pending_request.metadata.session_id or None,
                session_source=self._settings.session_affinity,
                session_header=self._settings.session_header,
            )
        except Exception:  # an odd request is routed by load, never dropped
            log.debug("could not read a prompt from the request", exc_info=True)
            return None
