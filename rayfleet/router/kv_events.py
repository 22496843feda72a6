"""vLLM KV-cache events → an exact per-replica index of cached token blocks.

vLLM publishes ``(topic, seq, payload)`` ZMQ multipart messages; the payload is a
msgpack ``KVEventBatch`` encoded by msgspec: ``[ts, [event, ...], dp_rank]`` where each
event is a map tagged by ``"type"``: ``BlockStored`` (block_hashes, parent_block_hash,
token_ids, block_size, ...), ``BlockRemoved`` (block_hashes) or ``AllBlocksCleared``.

Events carry vLLM's block hashes, but a router can only compute a request's blocks
from its tokens. So each stored block is re-keyed by its *content*: the router's own
chained token hash, built from the event's token ids and its parent's key. A
per-replica map vLLM-hash → content key lets ``BlockRemoved`` find what to forget.
Looking a request up is then ``token_block_keys(tokens)`` against the same index,
without depending on vLLM's hash function, seed or algorithm.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from rayfleet.router.hashing import BlockKey, chain_token_block
from rayfleet.router.index import BlockIndex, ReplicaId

EngineHash = Hashable  # bytes (sha256) or int, as vLLM publishes it
INDEXED_MEDIA = (None, "GPU")  # vLLM labels its main KV pool "GPU", also on the CPU backend


@dataclass(frozen=True, slots=True)
class BlocksStored:
    block_hashes: tuple[EngineHash, ...]
    parent_block_hash: EngineHash | None
    token_ids: tuple[int, ...]
    block_size: int
    plain: bool  # no LoRA / multimodal / salt keys, main medium, first KV group


@dataclass(frozen=True, slots=True)
class BlocksRemoved:
    block_hashes: tuple[EngineHash, ...]
    plain: bool


@dataclass(frozen=True, slots=True)
class AllCleared:
    pass


KvEvent = BlocksStored | BlocksRemoved | AllCleared


@dataclass(frozen=True, slots=True)
class EventBatch:
    ts: float
    events: tuple[KvEvent, ...]
    data_parallel_rank: int | None = None


def _plain_location(event: dict[str, Any]) -> bool:
    return event.get("medium") in INDEXED_MEDIA and event.get("group_idx") in (None, 0)


def _decode_event(event: dict[str, Any]) -> KvEvent | None:
    kind = event.get("type")
    hashes = tuple(event.get("block_hashes") or ())
    if kind == "BlockStored":
        extra = event.get("extra_keys") or ()
        plain = (
            _plain_location(event)
            and event.get("lora_id") is None
            and event.get("lora_name") is None
            and not any(extra)
        )
        return BlocksStored(
            block_hashes=hashes,
            parent_block_hash=event.get("parent_block_hash"),
            token_ids=tuple(event.get("token_ids") or ()),
            block_size=int(event.get("block_size") or 0),
            plain=plain,
        )
    if kind == "BlockRemoved":
        return BlocksRemoved(block_hashes=hashes, plain=_plain_location(event))
    if kind == "AllBlocksCleared":
        return AllCleared()
    return None  # an event type this router does not know: skip it


def decode_event_batch(payload: bytes) -> EventBatch:
    """Decode one msgpack ``KVEventBatch`` payload (the last ZMQ frame)."""
    raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    ts, events = raw[0], raw[1]
    rank = raw[2] if len(raw) > 2 else None
    decoded = (_decode_event(event) for event in events if isinstance(event, dict))
    return EventBatch(float(ts), tuple(e for e in decoded if e is not None), rank)


class PreciseIndex:
    """Content-keyed block index fed by KV events, plus event freshness per replica."""

    def __init__(self, capacity_blocks: int, block_tokens: int, staleness_s: float) -> None:
        self.index = BlockIndex(capacity_blocks)
        self.block_tokens = block_tokens
        self.staleness_s = staleness_s
        self.skipped_blocks = 0
        self._engine_keys: dict[ReplicaId, dict[EngineHash, BlockKey]] = {}
        self._watched: set[ReplicaId] = set()
        self._unconfirmed_since: dict[ReplicaId, float] = {}

    # --- events -----------------------------------------------------------------------

    def watch(self, replica: ReplicaId) -> None:
        """Events from ``replica`` are subscribed to: its index can be trusted when fresh."""
        self._watched.add(replica)

    def apply(self, replica: ReplicaId, batch: EventBatch) -> None:
        self._watched.add(replica)
        self._unconfirmed_since.pop(replica, None)
        engine_keys = self._engine_keys.setdefault(replica, {})
        for event in batch.events:
            if isinstance(event, BlocksStored):
                self._store(replica, engine_keys, event)
            elif isinstance(event, BlocksRemoved):
                self._remove(replica, engine_keys, event)
            else:
                self.index.clear_replica(replica)
                engine_keys.clear()

    def _store(
        self, replica: ReplicaId, engine_keys: dict[EngineHash, BlockKey], event: BlocksStored
    ) -> None:
        count = len(event.block_hashes)
        parent: BlockKey | None = None
        if event.parent_block_hash is not None:
            parent = engine_keys.get(event.parent_block_hash)
        usable = (
            event.plain
            and event.block_size == self.block_tokens
            and len(event.token_ids) == count * event.block_size
            # A parent we never saw stored means lost events: the chain can't be keyed.
            and (event.parent_block_hash is None or parent is not None)
        )
        if not usable:
            self.skipped_blocks += count
            return
        keys: list[BlockKey] = []
        size = event.block_size
        for i, engine_hash in enumerate(event.block_hashes):
            parent = chain_token_block(parent, event.token_ids[i * size : (i + 1) * size])
            engine_keys[engine_hash] = parent
            keys.append(parent)
        self.index.insert_chain(replica, keys)
        self._bound(engine_keys)

    def _remove(
        self, replica: ReplicaId, engine_keys: dict[EngineHash, BlockKey], event: BlocksRemoved
    ) -> None:
        if not event.plain:
            return
        for engine_hash in event.block_hashes:
            key = engine_keys.pop(engine_hash, None)
            if key is not None:
                self.index.remove_block(replica, key)

    def _bound(self, engine_keys: dict[EngineHash, BlockKey]) -> None:
        # Removals keep this map at the engine's cache size; lost events must not grow it.
        excess = len(engine_keys) - 2 * self.index.capacity_blocks
        for engine_hash in list(engine_keys)[: max(0, excess)]:
            del engine_keys[engine_hash]

    # --- routed requests and freshness ------------------------------------------------

    def note_routed(self, replica: ReplicaId, keys: Sequence[BlockKey], now: float) -> None:
        """Index a routed prompt optimistically; expect events if it adds blocks.

        The optimistic entry covers the gap until the engine's events arrive; a request
        that adds no new full block produces no event, so it raises no expectation.
        """
        if not keys:
            return
        if self.index.matched_blocks(replica, keys) < len(keys):
            self._unconfirmed_since.setdefault(replica, now)
        self.index.insert_chain(replica, keys)

    def is_fresh(self, replica: ReplicaId, now: float) -> bool:
        """``replica``'s events are subscribed to and none is overdue.

        An idle replica sends no events and owes none, so it stays fresh.
        """
        if replica not in self._watched:
            return False
        since = self._unconfirmed_since.get(replica)
        return since is None or now - since <= self.staleness_s

    def remove_replica(self, replica: ReplicaId) -> None:
        self.index.remove_replica(replica)
        self._engine_keys.pop(replica, None)
        self._watched.discard(replica)
        self._unconfirmed_since.pop(replica, None)
