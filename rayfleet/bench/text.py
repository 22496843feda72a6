"""Tokenizer-aware text: random prompts with an exact number of tokens.

Prompts are built from vocabulary entries that are one whole " word" each, so a
text of k words is usually k tokens; every text is then re-encoded and words are
added or removed until the count is exact.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from tokenizers import Tokenizer

_WORD = re.compile(r" [A-Za-z]+")
_MAX_ADJUST_STEPS = 64


def load_tokenizer(name_or_path: str | Path) -> Tokenizer:
    """A fast tokenizer from a model folder, a tokenizer.json file, or a Hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / "tokenizer.json").is_file():
        path = path / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    if path.is_dir():  # e.g. only a sentencepiece model: let transformers convert it
        from transformers import AutoTokenizer

        backend: Tokenizer = AutoTokenizer.from_pretrained(str(path)).backend_tokenizer
        return backend
    return Tokenizer.from_pretrained(str(name_or_path))


class TextMaker:
    """Makes seeded random texts whose token count (without special tokens) is exact."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.words = self._single_token_words()
        if not self.words:
            raise ValueError("the tokenizer has no single-token words to build prompts from")

    def _single_token_words(self) -> list[str]:
        size = self.tokenizer.get_vocab_size()
        decoded = self.tokenizer.decode_batch([[i] for i in range(size)])
        candidates = sorted({w for w in decoded if _WORD.fullmatch(w)})
        encoded = self.tokenizer.encode_batch(candidates, add_special_tokens=False)
        return [w for w, enc in zip(candidates, encoded, strict=True) if len(enc.ids) == 1]

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def text(self, rng: random.Random, tokens: int) -> str:
        """A text of exactly ``tokens`` tokens."""
        return self.extend(rng, "", tokens)

    def extend(self, rng: random.Random, head: str, tokens: int) -> str:
        """A tail such that ``head + tail`` has exactly ``count(head) + tokens`` tokens.

        Adjusting against the whole text keeps the count exact even when the
        tokenizer merges across the boundary between head and tail.
        """
        if tokens < 0:
            raise ValueError(f"token count must be non-negative, got {tokens}")
        target = self.count(head) + tokens
        words = rng.choices(self.words, k=tokens)
        for _ in range(_MAX_ADJUST_STEPS):
            have = self.count(head + "".join(words))
            if have == target:
                return "".join(words)
            if have < target:
                words.extend(rng.choices(self.words, k=target - have))
            else:
                del words[max(0, len(words) - (have - target)) :]
        raise ValueError(f"could not build a text of exactly {tokens} tokens")
