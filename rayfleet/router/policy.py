"""The "sticky while cheaper" policy: pure Python, no Ray, one call per decision.

Order of preference for rank 0:

1. session     - the replica the request's session is pinned to, unless saturated;
2. cache_hit   - among candidates holding the longest cached prefix, the least loaded
                 one whose engine does not report a full KV cache;
   spill       - ...unless the least loaded other replica is cheaper: its in-flight
                 backlog plus the extra prefill it would do (weighted) below the holder's
                 backlog. A hot prefix then gets a second holder;
3. exploration - only for requests no candidate has cached: with probability
                 ``exploration``, a random unsaturated candidate;
4. load_balance - among unsaturated candidates within one request's load of the least
                  in-flight token load, the least recently picked (an idle fleet is
                  used round-robin);
5. fallback    - everything is saturated: the least loaded candidate anyway (with a
                 cached prefix, its holders are still weighed against it).

"Saturated" means past any threshold: router token load, Serve's queue length, or the
engine's stats (waiting requests, KV use). Those keep new prefixes off busy replicas, but
only a full KV cache rules a holder out: a cold prefill elsewhere usually costs more than
queueing behind cached requests, so a busy holder is weighed by the spill rule instead
(virtual arena, docs/benchmarks.md, issue 4).

Rank 1 offers ``fallback_replicas`` lightly loaded other candidates, so Serve has
somewhere to go when rank 0 turns out to be full without calling us again.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from rayfleet.platform.spec import Router
from rayfleet.router.hashing import BlockKey
from rayfleet.router.index import BlockIndex, ReplicaId
from rayfleet.router.load import ReplicaStats
from rayfleet.router.lru import LruMap

Reason = Literal["cache_hit", "spill", "load_balance", "exploration", "session", "fallback"]
REASONS: tuple[str, ...] = get_args(Reason)
IndexMode = Literal["approximate", "precise"]
# Any, not ReplicaId: Serve's queue-length cache takes its own ReplicaID type.
QueueLen = Callable[[Any], int | None]
Pick = tuple[ReplicaId, Reason, int | None]
FALLBACK_SAMPLE = 32
# A spill's extra prefill tokens count this many times against the holder's backlog: a
# cold prefill also delays the requests already running where it lands, and in-flight
# load keeps counting a request's prefill until the request completes (an overestimate
# of the holder's backlog). 1 and 2 spilled too eagerly in the virtual arena (more cold
# prefills than they saved queueing), 4 kept TTFT p90 at ray-prefix's at light load.
SPILL_PREFILL_WEIGHT = 4.0
# In-flight tokens an engine absorbs without delaying a new request: about one step's
# token budget (vLLM's default max_num_batched_tokens for chunked prefill).
STEP_TOKENS = 2048


def _backlog(load: float) -> float:
    return max(0.0, load - STEP_TOKENS)


@dataclass(slots=True)
class PreparedRequest:
    """What the policy needs from a request, computed once per request."""

    approx_keys: list[BlockKey]
    approx_tokens_per_block: float
    prompt_tokens: int
    decode_tokens: int
    token_keys: list[BlockKey] | None = None
    session: str | None = None

    def load(self, uncached_tokens: float, decode_token_weight: float) -> float:
        """Token load while in flight: uncached prefill plus weighted expected decode."""
        return uncached_tokens + decode_token_weight * self.decode_tokens


@dataclass(frozen=True, slots=True)
class CacheView:
    """The index a decision consults, with the request's keys in that index's terms."""

    index: BlockIndex
    keys: Sequence[BlockKey]
    tokens_per_block: float
    mode: IndexMode


@dataclass(slots=True)
class Decision:
    ranks: list[list[ReplicaId]]
    reason: Reason
    matched_blocks: int
    matched_tokens: int
    index: IndexMode
    stale_stats: int = 0

    @property
    def chosen(self) -> ReplicaId | None:
        return self.ranks[0][0] if self.ranks else None


@dataclass(slots=True)
class Saturation:
    """Per-decision memo: is a replica past any load threshold? Counts stale stats seen."""

    settings: Router
    loads: Mapping[ReplicaId, float]
    stats: Mapping[ReplicaId, ReplicaStats]
    queue_len: QueueLen | None
    now: float
    stale: int = 0
    _memo: dict[ReplicaId, bool] = field(default_factory=dict)
    _engine_memo: dict[ReplicaId, tuple[bool, bool]] = field(default_factory=dict)

    def __call__(self, replica: ReplicaId) -> bool:
        known = self._memo.get(replica)
        if known is None:
            known = self._memo[replica] = self._check(replica)
        return known

    def cache_full(self, replica: ReplicaId) -> bool:
        """The engine reports its KV cache full (or its stats are stale, if stale means
        saturated)."""
        return self._engine(replica)[0]

    def _check(self, replica: ReplicaId) -> bool:
        settings = self.settings
        if self.loads.get(replica, 0.0) >= settings.saturation_tokens:
            return True
        queue_len = self.queue_len(replica) if self.queue_len is not None else None
        if queue_len is not None and queue_len >= settings.saturation_queue_len:
            return True
        return any(self._engine(replica))

    def _engine(self, replica: ReplicaId) -> tuple[bool, bool]:
        """(KV cache full, too many waiting requests) by the engine's own report."""
        known = self._engine_memo.get(replica)
        if known is None:
            known = self._engine_memo[replica] = self._check_engine(replica)
        return known

    def _check_engine(self, replica: ReplicaId) -> tuple[bool, bool]:
        settings = self.settings
        stats = self.stats.get(replica)
        if stats is None:
            return False, False
        if stats.age(self.now) > settings.stats_staleness_s:
            self.stale += 1
            verdict = settings.stale_stats == "saturated"
            return verdict, verdict
        return (
            stats.kv_cache_usage >= settings.saturation_kv_usage,
            stats.num_waiting >= settings.saturation_waiting,
        )


class StickyPolicy:
    def __init__(
        self,
        settings: Router,
        loads: Mapping[ReplicaId, float],
        stats: Mapping[ReplicaId, ReplicaStats],
        sessions: LruMap[str, ReplicaId],
    ) -> None:
        self.settings = settings
        self._loads = loads
        self._stats = stats
        self._sessions = sessions
        self._rng = random.Random(settings.seed)
        # Decision number of each replica's last pick (0: never), to spread near-ties.
        self._last_pick: dict[ReplicaId, int] = {}
        self._picks = 0

    def forget(self, replica: ReplicaId) -> None:
        """Drop what the policy remembers of a replica that left."""
        self._last_pick.pop(replica, None)

    def decide(
        self,
        candidates: Sequence[ReplicaId],
        candidate_set: Set[ReplicaId],
        request: PreparedRequest,
        cache: CacheView,
        queue_len: QueueLen | None,
        now: float,
    ) -> Decision:
        """Rank ``candidates`` (every one must be known to ``loads``) for ``request``."""
        if not candidates:
            return Decision([], "fallback", 0, 0, cache.mode)
        saturated = Saturation(self.settings, self._loads, self._stats, queue_len, now)
        # Exploration only takes requests no replica has cached: exploring with a hit
        # would turn it into a cold prefill (about a whole prompt of extra work).
        chosen, reason, matched = (
            self._by_session(request, candidate_set, saturated)
            or self._by_cache(cache, candidates, candidate_set, saturated)
            or self._by_exploration(candidates, saturated)
            or self._by_load(
                candidates,
                saturated,
                request.load(request.prompt_tokens, self.settings.decode_token_weight),
            )
        )
        if matched is None:
            matched = cache.index.matched_blocks(chosen, cache.keys)
        self._picks += 1
        self._last_pick[chosen] = self._picks
        ranks = [[chosen]]
        fallbacks = self._fallbacks(candidates, chosen)
        if fallbacks:
            ranks.append(fallbacks)
        matched_tokens = round(matched * cache.tokens_per_block)
        return Decision(ranks, reason, matched, matched_tokens, cache.mode, saturated.stale)

    def _by_session(
        self, request: PreparedRequest, candidate_set: Set[ReplicaId], saturated: Saturation
    ) -> Pick | None:
        if request.session is None:
            return None
        pinned = self._sessions.get(request.session)
        if pinned is None or pinned not in candidate_set or saturated(pinned):
            return None
        return pinned, "session", None

    def _by_exploration(
        self, candidates: Sequence[ReplicaId], saturated: Saturation
    ) -> Pick | None:
        share = self.settings.exploration
        # Draw on every decision so a seed fixes the whole sequence of choices.
        if share <= 0 or self._rng.random() >= share:
            return None
        pick = candidates[self._rng.randrange(len(candidates))]
        return None if saturated(pick) else (pick, "exploration", None)

    def _by_cache(
        self,
        cache: CacheView,
        candidates: Sequence[ReplicaId],
        candidate_set: Set[ReplicaId],
        saturated: Saturation,
    ) -> Pick | None:
        """The cheaper of: the least loaded replica holding the longest prefix ("hit"),
        and the least loaded replica overall ("spill"; unsaturated if any is).

        Cost = in-flight token load + the prompt tokens it must prefill, the spill's
        extra prefill weighted ``SPILL_PREFILL_WEIGHT``. A hot prefix stays where it is
        cached until that replica's backlog outweighs a cold prefill elsewhere; then it
        spills, and the prefix is cached on both. Only a full KV cache rules a holder
        out: load (token load, queue length, waiting requests) is weighed by the cost
        instead, since a cold prefill on an idler replica usually costs more than
        queueing behind cached requests. Waiting requests as a veto made 15% more cold
        prefills and doubled TTFT p90 at 20 groups (virtual arena, issue 4).
        """
        match = cache.index.longest_match(cache.keys, candidate_set)
        if match.blocks < self.settings.min_match_blocks:
            return None
        loads = self._loads
        hit = None
        for replica in sorted(match.replicas, key=loads.__getitem__):
            if not saturated.cache_full(replica):
                hit = replica
                break
        spill, spill_reason = self._least_loaded(candidates, saturated)
        if hit is None:
            if spill_reason == "load_balance":
                return spill, spill_reason, None
            # Everything is saturated: weigh the holders against a cold spill anyway.
            hit = min(match.replicas, key=loads.__getitem__)
        if spill in match.replicas:
            return hit, "cache_hit", match.blocks
        spill_blocks = cache.index.matched_blocks(spill, cache.keys)
        extra = (match.blocks - spill_blocks) * cache.tokens_per_block
        if _backlog(loads[spill]) + SPILL_PREFILL_WEIGHT * extra < _backlog(loads[hit]):
            return spill, "spill", spill_blocks
        return hit, "cache_hit", match.blocks

    def _least_loaded(
        self, candidates: Sequence[ReplicaId], saturated: Saturation
    ) -> tuple[ReplicaId, Reason]:
        # Among a random window when there are many, to keep a hit's decision O(1).
        return self._least_unsaturated(self._sample(candidates), saturated)

    def _by_load(
        self, candidates: Sequence[ReplicaId], saturated: Saturation, slack: float
    ) -> Pick:
        """The least recently picked unsaturated replica within ``slack`` (one request's
        load) of the least loaded; among a random window when there are many.

        Strictly least loaded sends a burst of arrivals to one replica while it stays
        lowest, and their prefills queue behind each other: in-flight load cannot see a
        prefill finish. Spreading near-ties by recency kept TTFT p90 at round-robin's
        (0.10 s vs 0.26 s, virtual synthetic arena, issue 4).
        """
        pool = self._sample(candidates)
        loads = self._loads
        floor = min(loads[replica] for replica in pool) + slack
        near = [r for r in pool if loads[r] <= floor and not saturated(r)]
        if near:
            last_pick = self._last_pick
            return min(near, key=lambda r: last_pick.get(r, 0)), "load_balance", None
        return (*self._least_unsaturated(pool, saturated), None)

    def _least_unsaturated(
        self, pool: Sequence[ReplicaId], saturated: Saturation
    ) -> tuple[ReplicaId, Reason]:
        """The least loaded unsaturated replica of ``pool``, else the least loaded
        ("fallback"). Ties go to the earliest in ``pool``."""
        least = min(pool, key=self._loads.__getitem__)
        if not saturated(least):
            return least, "load_balance"
        by_load = sorted(pool, key=self._loads.__getitem__)
        for replica in by_load:
            if not saturated(replica):
                return replica, "load_balance"
        return by_load[0], "fallback"

    def _sample(self, candidates: Sequence[ReplicaId]) -> Sequence[ReplicaId]:
        if len(candidates) <= FALLBACK_SAMPLE:
            return candidates
        # A window at a random offset: one RNG draw instead of random.sample's 32.
        start = self._rng.randrange(len(candidates))
        wrap = max(0, start + FALLBACK_SAMPLE - len(candidates))
        return [*candidates[start : start + FALLBACK_SAMPLE], *candidates[:wrap]]

    def _fallbacks(self, candidates: Sequence[ReplicaId], chosen: ReplicaId) -> list[ReplicaId]:
        """The least loaded other candidates; among a random sample when there are many.

        Rank 1 only matters when rank 0 is full, and Serve probes it by queue length
        anyway, so "power of k choices" keeps a 1,000-replica decision cheap.
        """
        wanted = self.settings.fallback_replicas
        if wanted == 0 or len(candidates) < 2:
            return []
        pool = self._sample(candidates)
        nearest = heapq.nsmallest(wanted + 1, pool, key=self._loads.__getitem__)
        return [replica for replica in nearest if replica != chosen][:wanted]
