"""Which replica holds which cached blocks: a global key → replicas map plus per-replica LRUs.

The global map makes a prefix lookup cost O(blocks in the prompt), whatever the number
of replicas; the per-replica LRU bounds memory at the engine's cache size and forgets
blocks in the order an engine would evict them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence, Set
from dataclasses import dataclass

from rayfleet.router.hashing import BlockKey

ReplicaId = Hashable


@dataclass(frozen=True, slots=True)
class PrefixMatch:
    """The longest cached prefix: its length in blocks and the candidates holding all of it."""

    blocks: int
    replicas: Set[ReplicaId]


NO_MATCH = PrefixMatch(0, frozenset())


class BlockIndex:
    """Per-replica LRU sets of block keys with a shared inverted index."""

    def __init__(self, capacity_blocks: int) -> None:
        if capacity_blocks < 1:
            raise ValueError("capacity_blocks must be at least 1")
        self.capacity_blocks = capacity_blocks
        self._holders: dict[BlockKey, set[ReplicaId]] = {}
        self._lru: dict[ReplicaId, OrderedDict[BlockKey, None]] = {}

    # --- replicas ---------------------------------------------------------------------

    def replicas(self) -> Iterable[ReplicaId]:
        return self._lru.keys()

    def remove_replica(self, replica: ReplicaId) -> None:
        self.clear_replica(replica)
        self._lru.pop(replica, None)

    def clear_replica(self, replica: ReplicaId) -> None:
        """Forget every block of ``replica`` (the engine dropped its whole cache)."""
        lru = self._lru.get(replica)
        if not lru:
            return
        for key in lru:
            self._drop_holder(key, replica)
        lru.clear()

    def replica_blocks(self, replica: ReplicaId) -> int:
        lru = self._lru.get(replica)
        return len(lru) if lru else 0

    def __len__(self) -> int:
        """Distinct block keys held by any replica."""
        return len(self._holders)

    # --- blocks -----------------------------------------------------------------------

    def insert_chain(self, replica: ReplicaId, keys: Sequence[BlockKey]) -> None:
        """Record that ``replica`` holds the chain ``keys`` (block 0 first).

        Touching the chain tail-first leaves block 0 the most recently used, so the LRU
        evicts leaves before their parents, as vLLM does, and the held keys stay
        prefix-closed: holding block i implies holding blocks 0..i-1.
        """
        if not keys:
            return
        lru = self._lru.get(replica)
        if lru is None:
            lru = self._lru[replica] = OrderedDict()
        holders = self._holders
        for key in reversed(keys):
            if key in lru:
                lru.move_to_end(key)
                continue
            lru[key] = None
            holder_set = holders.get(key)
            if holder_set is None:
                holders[key] = {replica}
            else:
                holder_set.add(replica)
        while len(lru) > self.capacity_blocks:
            evicted, _ = lru.popitem(last=False)
            self._drop_holder(evicted, replica)

    def remove_block(self, replica: ReplicaId, key: BlockKey) -> None:
        lru = self._lru.get(replica)
        if lru is not None and key in lru:
            del lru[key]
            self._drop_holder(key, replica)

    def holds(self, replica: ReplicaId, key: BlockKey) -> bool:
        lru = self._lru.get(replica)
        return lru is not None and key in lru

    def matched_blocks(self, replica: ReplicaId, keys: Sequence[BlockKey]) -> int:
        """How many leading blocks of ``keys`` ``replica`` holds."""
        lru = self._lru.get(replica)
        if not lru:
            return 0
        matched = 0
        for key in keys:
            if key not in lru:
                break
            matched += 1
        return matched

    def longest_match(
        self, keys: Sequence[BlockKey], candidates: Set[ReplicaId] | None = None
    ) -> PrefixMatch:
        """The deepest block of ``keys`` some candidate holds, and all candidates holding it.

        Walks forward while any replica holds the next block (one dict lookup each), then
        back until a level has a candidate: usually the deepest level already does.
        """
        levels: list[set[ReplicaId]] = []
        holders = self._holders
        for key in keys:
            level = holders.get(key)
            if not level:
                break
            levels.append(level)
        for depth in range(len(levels), 0, -1):
            level = levels[depth - 1]
            found = set(level) if candidates is None else level & candidates
            if found:
                return PrefixMatch(depth, found)
        return NO_MATCH

    def _drop_holder(self, key: BlockKey, replica: ReplicaId) -> None:
        holder_set = self._holders.get(key)
        if holder_set is None:
            return
        holder_set.discard(replica)
        if not holder_set:
            del self._holders[key]
