"""Token blocks and a vLLM-style block pool with prefix caching.

Block hashes are chained like vLLM's: ``h_i = hash((h_{i-1}, tokens of block i))``, so
two prompts share hash i exactly when they share their first i+1 blocks. Only full
prompt blocks get a hash. Python's hash of a tuple of ints is not salted, so hashes are
the same in every process.

The pool mirrors vLLM's ``BlockPool``: a fixed number of physical blocks; a block whose
reference count drops to zero keeps its hash and joins one LRU free queue; allocation
takes the queue's front and evicts whatever it cached. A request frees its blocks
last-first, so its tail is evicted before its prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

BlockHash = int
_CHAIN_SEED: BlockHash = 0x51_B10C


def chain_hash(parent: BlockHash | None, block: Sequence[int]) -> BlockHash:
    return hash((_CHAIN_SEED if parent is None else parent, tuple(block)))


def block_hashes(token_ids: Sequence[int], block_size: int) -> list[BlockHash]:
    """Chained hashes of the full ``block_size``-token blocks of ``token_ids``."""
    hashes: list[BlockHash] = []
    parent: BlockHash | None = None
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent = chain_hash(parent, token_ids[start : start + block_size])
        hashes.append(parent)
    return hashes


def max_hit_blocks(prompt_tokens: int, block_size: int) -> int:
    """Most prompt blocks a cache (or a KV transfer) may supply.

    Like vLLM, at least the prompt's last token is always computed, so its logits exist.
    """
    return max(0, (prompt_tokens - 1) // block_size)


class KvBlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self._refs = [0] * num_blocks
        self._hash_of: list[BlockHash | None] = [None] * num_blocks
        self._cached: dict[BlockHash, int] = {}  # hash → physical block
        # Free blocks, least recently used first; values unused.
        self._free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self._free)

    @property
    def usage(self) -> float:
        """Share of blocks held by running requests (vLLM's kv_cache_usage)."""
        return 1.0 - self.num_free / self.num_blocks

    def cached_prefix(self, hashes: Sequence[BlockHash]) -> list[int]:
        """Physical blocks caching the longest cached prefix of ``hashes``."""
        found: list[int] = []
        if not self.enable_caching:
            return found
        for block_hash in hashes:
            block = self._cached.get(block_hash)
            if block is None:
                break
            found.append(block)
        return found

    def free_among(self, blocks: Iterable[int]) -> int:
        """How many of ``blocks`` sit in the free queue (taking them uses free capacity)."""
        return sum(1 for b in blocks if self._refs[b] == 0)

    def acquire(self, blocks: Iterable[int]) -> None:
        """Hold cached blocks for a request (a cache hit)."""
        for block in blocks:
            if self._refs[block] == 0:
                del self._free[block]
            self._refs[block] += 1

    def allocate(self, count: int) -> list[int]:
        """``count`` fresh blocks from the LRU front, evicting what they cached."""
        if count > len(self._free):
            raise RuntimeError(f"KV pool exhausted: need {count}, have {len(self._free)} free")
        blocks = []
        for _ in range(count):
            block, _ = self._free.popitem(last=False)
            self.forget(block)
            self._refs[block] = 1
            blocks.append(block)
        return blocks

    def register(self, block: int, block_hash: BlockHash) -> None:
        """Cache a full block, unless another block already caches that hash."""
        if self.enable_caching and block_hash not in self._cached:
            self._cached[block_hash] = block
            self._hash_of[block] = block_hash

    def release(self, blocks: Sequence[int]) -> None:
        """A request's blocks, in sequence order; freed last-first like vLLM."""
        for block in reversed(blocks):
            self._refs[block] -= 1
            if self._refs[block] == 0:
                self._free[block] = None

    def reset(self) -> bool:
        """Forget every cached hash (vLLM refuses while requests hold blocks)."""
        if self.num_free != self.num_blocks:
            return False
        for block in range(self.num_blocks):
            self.forget(block)
        return True

    def forget(self, block: int) -> None:
        """Stop caching what ``block`` holds."""
        block_hash = self._hash_of[block]
        if block_hash is not None:
            del self._cached[block_hash]
            self._hash_of[block] = None
