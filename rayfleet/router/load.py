"""Load signals: engine-reported routing stats and the router's own in-flight token load.

Routing stats come from the replica's ``record_routing_stats()`` (polled by Serve). The
router reads these keys, all optional::

    {"num_running": int, "num_waiting": int, "kv_cache_usage": float (0..1),
     "reported_at": float (unix seconds; when the engine measured the rest),
     "kv_event_metadata": {"endpoint": "tcp://host:port", "block_size": int}}

``kv_event_metadata`` is the shape Ray Serve LLM's own engine already advertises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rayfleet.router.index import ReplicaId

LOAD_KEYS = ("num_running", "num_waiting", "kv_cache_usage")


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float
    reported_at: float

    def age(self, now: float) -> float:
        return now - self.reported_at


def parse_routing_stats(raw: Mapping[str, Any] | None, received_at: float) -> ReplicaStats | None:
    """The load part of a routing-stats dict, or None when it carries no load signal.

    Without ``reported_at`` the time the router received the dict stands in, which
    makes an engine that stopped reporting look fresh until the next update. With it,
    ages compare the replica's clock to the router's: keep node clocks in sync.
    """
    if not raw or not any(key in raw for key in LOAD_KEYS):
        return None
    return ReplicaStats(
        num_running=int(raw.get("num_running", 0)),
        num_waiting=int(raw.get("num_waiting", 0)),
        kv_cache_usage=float(raw.get("kv_cache_usage", 0.0)),
        reported_at=float(raw.get("reported_at", received_at)),
    )


def kv_events_endpoint(raw: Mapping[str, Any] | None) -> tuple[str, int | None] | None:
    """(endpoint, block size) of the replica's KV-event publisher, if it advertises one."""
    meta = (raw or {}).get("kv_event_metadata")
    if not isinstance(meta, Mapping) or not meta.get("endpoint"):
        return None
    block_size = meta.get("block_size")
    return str(meta["endpoint"]), int(block_size) if block_size else None


class InflightLoad:
    """Token load this router has sent to each replica and not yet seen finish.

    A request costs its uncached prefill tokens plus its weighted expected decode tokens.
    It is keyed by (replica, request id): Serve may report a rejected attempt on one
    replica as completed after the retry was routed to another.
    """

    def __init__(self) -> None:
        self._load: dict[ReplicaId, float] = {}
        self._requests: dict[tuple[ReplicaId, str], float] = {}

    @property
    def loads(self) -> Mapping[ReplicaId, float]:
        """Per-replica load; read-only view, every known replica present."""
        return self._load

    def load(self, replica: ReplicaId) -> float:
        return self._load.get(replica, 0.0)

    def add_replica(self, replica: ReplicaId) -> None:
        self._load.setdefault(replica, 0.0)

    def remove_replica(self, replica: ReplicaId) -> None:
        self._load.pop(replica, None)
        for key in [key for key in self._requests if key[0] == replica]:
            del self._requests[key]

    def on_routed(self, request_id: str, replica: ReplicaId, tokens: float) -> None:
        key = (replica, request_id)
        previous = self._requests.pop(key, 0.0)
        self._requests[key] = tokens
        self._load[replica] = self._load.get(replica, 0.0) - previous + tokens

    def on_completed(self, request_id: str, replica: ReplicaId) -> bool:
        """Release the request's load; False if this router never counted it."""
        tokens = self._requests.pop((replica, request_id), None)
        if tokens is None:
            return False
        # Clamp: float drift must never leave a replica looking negatively loaded.
        self._load[replica] = max(0.0, self._load.get(replica, 0.0) - tokens)
        return True

    def inflight_requests(self) -> int:
        return len(self._requests)
