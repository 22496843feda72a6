"""Chained block keys, the vocabulary of the cache index.

Like vLLM's block hashes, key i covers the whole prefix up to the end of block i:
``h_i = hash((h_{i-1}, block_i))``. Two prompts share key i exactly when they share
their first i+1 blocks, so one dict lookup per block answers "is this prefix cached".
Only full blocks get keys: an engine never caches a partial block either.

Keys are Python ``hash`` values. They are compared only inside one router process,
so per-process string-hash salting does not matter, and a 64-bit collision at worst
costs one mis-routed request.
"""

from __future__ import annotations

from collections.abc import Sequence

BlockKey = int

# Seed of every chain, so block 0 of a chain is never the hash of a bare chunk.
_CHAIN_SEED: BlockKey = 0x5EED_B10C


def text_block_keys(text: str, block_chars: int) -> list[BlockKey]:
    """Chained keys of the full ``block_chars``-character chunks of ``text``."""
    keys: list[BlockKey] = []
    parent = _CHAIN_SEED
    for start in range(0, len(text) - block_chars + 1, block_chars):
        parent = hash((parent, text[start : start + block_chars]))
        keys.append(parent)
    return keys


def token_block_keys(token_ids: Sequence[int], block_tokens: int) -> list[BlockKey]:
    """Chained keys of the full ``block_tokens``-token blocks of ``token_ids``."""
    keys: list[BlockKey] = []
    parent = _CHAIN_SEED
    for start in range(0, len(token_ids) - block_tokens + 1, block_tokens):
        parent = chain_token_block(parent, token_ids[start : start + block_tokens])
        keys.append(parent)
    return keys


def chain_token_block(parent: BlockKey | None, block: Sequence[int]) -> BlockKey:
    """Key of one token block after ``parent`` (None: the first block of a chain)."""
    return hash((_CHAIN_SEED if parent is None else parent, tuple(block)))
