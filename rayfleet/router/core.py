"""The cache- and load-aware router without Ray: indexes, load, policy and metrics together.

A Serve adapter (``ray_router``) or a benchmark drives it through five calls:
``sync_replicas`` when replicas or their stats change, ``prepare`` once per request,
``choose`` per routing attempt, then ``on_routed`` and ``on_completed``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any

from rayfleet.platform.spec import Router
from rayfleet.router.hashing import text_block_keys, token_block_keys
from rayfleet.router.index import BlockIndex, ReplicaId
from rayfleet.router.kv_events import EventBatch, PreciseIndex
from rayfleet.router.kv_subscriber import KvEventSubscriber
from rayfleet.router.load import (
    InflightLoad,
    ReplicaStats,
    kv_events_endpoint,
    parse_routing_stats,
)
from rayfleet.router.lru import LruMap
from rayfleet.router.metrics import NullMetrics, RouterMetrics
from rayfleet.router.policy import CacheView, Decision, PreparedRequest, QueueLen, StickyPolicy
from rayfleet.router.prompt import PromptInput
from rayfleet.router.tokens import CachedTokenizer

# How long a "are all candidates' KV events fresh?" answer is reused: staleness is a
# matter of seconds, and re-checking 1,000 replicas per decision would dominate its cost.
FRESHNESS_MEMO_S = 0.5
EVENT_BATCHES_PER_DECISION = 256
PREPARED_REQUESTS_KEPT = 4096


class CacheAwareRouter:
    def __init__(
        self,
        settings: Router,
        *,
        tokenizer: CachedTokenizer | None = None,
        subscriber: KvEventSubscriber | None = None,
        metrics: RouterMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.subscriber = subscriber
        self.metrics: RouterMetrics = metrics or NullMetrics()
        self.clock = clock
        self.approx = BlockIndex(settings.cache_capacity_blocks)
        self.precise: PreciseIndex | None = None
        if settings.index == "precise":
            self.precise = PreciseIndex(
                settings.cache_capacity_blocks,
                settings.block_tokens,
                settings.kv_events_staleness_s,
            )
        self.inflight = InflightLoad()
        self.stats: dict[ReplicaId, ReplicaStats] = {}
        self.sessions: LruMap[str, ReplicaId] = LruMap(settings.session_capacity)
        self.policy = StickyPolicy(settings, self.inflight.loads, self.stats, self.sessions)
        self._prepared: LruMap[str, PreparedRequest] = LruMap(PREPARED_REQUESTS_KEPT)
        self._candidates: Sequence[ReplicaId] | None = None
        self._candidate_set: Set[ReplicaId] = frozenset()
        self._fresh_memo: tuple[Sequence[ReplicaId] | None, float, bool] = (None, -math.inf, False)

    # --- replicas ---------------------------------------------------------------------

    def sync_replicas(self, replicas: Mapping[ReplicaId, Mapping[str, Any] | None]) -> None:
        """Make the known replicas exactly ``replicas``, each with its raw routing stats."""
        for replica in [r for r in self.inflight.loads if r not in replicas]:
            self.remove_replica(replica)
        now = self.clock()
        for replica, raw in replicas.items():
            self.update_replica(replica, raw, now)

    def update_replica(self, replica: ReplicaId, raw: Mapping[str, Any] | None, now: float) -> None:
        self.inflight.add_replica(replica)
        stats = parse_routing_stats(raw, now)
        if stats is not None:
            self.stats[replica] = stats
        endpoint = kv_events_endpoint(raw)
        if endpoint is not None and self.precise is not None and self.subscriber is not None:
            self.subscriber.subscribe(replica, endpoint[0])
            self.precise.watch(replica)

    def remove_replica(self, replica: ReplicaId) -> None:
        self.approx.remove_replica(replica)
        if self.precise is not None:
            self.precise.remove_replica(replica)
        if self.subscriber is not None:
            self.subscriber.unsubscribe(replica)
        self.inflight.remove_replica(replica)
        self.stats.pop(replica, None)
        self.sessions.drop_values(replica)
        self.policy.forget(replica)
        self._candidates = None  # re-register whatever candidates the next call brings

    # --- requests ---------------------------------------------------------------------

    def prepared(self, request_id: str) -> PreparedRequest | None:
        """The request prepared earlier under ``request_id``, if still kept."""
        return self._prepared.get(request_id)

    def prepare(self, prompt: PromptInput | None, request_id: str | None = None) -> PreparedRequest:
        """Hash (and in precise mode tokenize) a request once; cached by request id."""
        if request_id is not None:
            cached = self._prepared.get(request_id)
            if cached is not None:
                return cached
        request = self._build(prompt)
        if request_id is not None:
            self._prepared.put(request_id, request)
        return request

    def _build(self, prompt: PromptInput | None) -> PreparedRequest:
        settings = self.settings
        if prompt is None:
            return PreparedRequest([], 1.0, 0, settings.default_decode_tokens)
        if prompt.token_ids is not None and not prompt.text:
            approx_keys = token_block_keys(prompt.token_ids, settings.block_tokens)
            per_block = float(settings.block_tokens)
        else:
            approx_keys = text_block_keys(prompt.text, settings.block_chars)
            per_block = settings.block_chars / settings.chars_per_token
        token_ids = self._token_ids(prompt)
        if token_ids is not None:
            prompt_tokens = len(token_ids)
        else:
            prompt_tokens = math.ceil(len(prompt.text) / settings.chars_per_token)
        wanted = settings.default_decode_tokens if prompt.max_tokens is None else prompt.max_tokens
        token_keys = None
        if self.precise is not None and token_ids is not None:
            token_keys = token_block_keys(token_ids, settings.block_tokens)
        return PreparedRequest(
            approx_keys=approx_keys,
            approx_tokens_per_block=per_block,
            prompt_tokens=prompt_tokens,
            decode_tokens=min(wanted, settings.decode_tokens_cap),
            token_keys=token_keys,
            session=prompt.session,
        )

    def _token_ids(self, prompt: PromptInput) -> Sequence[int] | None:
        if self.precise is not None and self.tokenizer is not None:
            return self.tokenizer.encode(prompt)
        return prompt.token_ids

    def choose(
        self,
        candidates: Sequence[ReplicaId],
        request: PreparedRequest,
        queue_len: QueueLen | None = None,
    ) -> Decision:
        """Rank ``candidates``; pass the same sequence object again to reuse its set."""
        started = time.perf_counter()
        now = self.clock()
        self.drain_kv_events()
        candidate_set = self._candidate_set_of(candidates)
        cache = self._cache_view(request, candidates, now)
        decision = self.policy.decide(candidates, candidate_set, request, cache, queue_len, now)
        self.metrics.record_decision(
            decision.reason, decision.matched_tokens, time.perf_counter() - started
        )
        if decision.stale_stats:
            self.metrics.record_stale_stats(decision.stale_stats)
        return decision

    def on_routed(
        self, request_id: str, replica: ReplicaId, request: PreparedRequest | None = None
    ) -> None:
        """Count the request's token load on ``replica`` and index its prompt there."""
        prepared = self._prepared.pop(request_id)
        request = request or prepared
        if request is None:
            return
        now = self.clock()
        uncached = max(0, request.prompt_tokens - self._matched_tokens(replica, request, now))
        load = request.load(uncached, self.settings.decode_token_weight)
        self.inflight.on_routed(request_id, replica, load)
        self.approx.insert_chain(replica, request.approx_keys)
        if self.precise is not None and request.token_keys:
            self.precise.note_routed(replica, request.token_keys, now)
        if request.session is not None:
            self.sessions.put(request.session, replica)

    def on_completed(self, request_id: str, replica: ReplicaId) -> None:
        self.inflight.on_completed(request_id, replica)
        self._prepared.pop(request_id)

    # --- KV events --------------------------------------------------------------------

    def apply_kv_events(self, replica: ReplicaId, batch: EventBatch) -> None:
        if self.precise is not None:
            self.precise.apply(replica, batch)

    def drain_kv_events(self, limit: int = EVENT_BATCHES_PER_DECISION) -> int:
        if self.subscriber is None or self.precise is None:
            return 0
        drained = self.subscriber.drain(limit)
        for replica, batch in drained:
            self.precise.apply(replica, batch)
        return len(drained)

    # --- helpers ----------------------------------------------------------------------

    def _candidate_set_of(self, candidates: Sequence[ReplicaId]) -> Set[ReplicaId]:
        if candidates is not self._candidates:
            for replica in candidates:
                self.inflight.add_replica(replica)
            self._candidates = candidates
            self._candidate_set = frozenset(candidates)
        return self._candidate_set

    def _cache_view(
        self, request: PreparedRequest, candidates: Sequence[ReplicaId], now: float
    ) -> CacheView:
        precise = self.precise
        if precise and request.token_keys is not None and self._precise_fresh(candidates, now):
            tokens = float(self.settings.block_tokens)
            return CacheView(precise.index, request.token_keys, tokens, "precise")
        return CacheView(
            self.approx, request.approx_keys, request.approx_tokens_per_block, "approximate"
        )

    def _precise_fresh(self, candidates: Sequence[ReplicaId], now: float) -> bool:
        """Precise mode only while every candidate's events are fresh; else approximate."""
        assert self.precise is not None
        memo_for, checked_at, fresh = self._fresh_memo
        if memo_for is candidates and now - checked_at < FRESHNESS_MEMO_S:
            return fresh
        precise = self.precise
        fresh = all(precise.is_fresh(replica, now) for replica in candidates)
        self._fresh_memo = (candidates, now, fresh)
        return fresh

    def _matched_tokens(self, replica: ReplicaId, request: PreparedRequest, now: float) -> float:
        precise = self.precise
        if precise is not None and request.token_keys and precise.is_fresh(replica, now):
            blocks = precise.index.matched_blocks(replica, request.token_keys)
            return blocks * self.settings.block_tokens
        blocks = self.approx.matched_blocks(replica, request.approx_keys)
        return blocks * request.approx_tokens_per_block
