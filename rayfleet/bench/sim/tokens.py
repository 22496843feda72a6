"""Prompt → token ids for the simulator, and the words its pseudo outputs are made of.

The simulator needs token ids only to hash prompt blocks, so any deterministic
tokenizer works; a real one (the model folder's ``tokenizer.json``) gives realistic
token counts. Chats are rendered with RayFleet's tiny-model chat template. Outputs are
single-token words, so a follow-up turn that quotes an answer re-tokenizes it sensibly.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rayfleet.router.lru import LruMap

_WORDS_VOCAB = 32000
_PIECE = re.compile(r"\s*\S+|\s+")
# What the "words" tokenizer answers with.
_OUTPUT_WORDS = (
    "the", "cache", "serves", "a", "prefix", "while", "router", "sends", "each",
    "request", "to", "replica", "that", "holds", "its", "blocks", "so", "engine",
    "decodes", "more", "tokens", "in", "every", "batch", "and", "latency", "stays",
    "low", "under", "load",
)  # fmt: skip

Encode = Callable[[str], Sequence[int]]


class SimTokenizer:
    def __init__(
        self, encode: Encode, output_words: Sequence[tuple[int, str]], cache_size: int = 2048
    ) -> None:
        if not output_words:
            raise ValueError("the tokenizer needs at least one output word")
        self._encode = encode
        self._cache: LruMap[str, tuple[int, ...]] = LruMap(cache_size)
        self.output_token_ids = tuple(token for token, _ in output_words)
        self._text_of = dict(output_words)

    def encode(self, text: str) -> tuple[int, ...]:
        ids = self._cache.get(text)
        if ids is None:
            ids = tuple(self._encode(text))
            self._cache.put(text, ids)
        return ids

    def encode_chat(self, messages: Sequence[Any]) -> tuple[int, ...]:
        return self.encode(render_chat(messages))

    def output_text(self, token_id: int) -> str:
        return self._text_of.get(token_id, "")


def render_chat(messages: Sequence[Any]) -> str:
    """The tiny model's template: ``<|role|>\\ncontent</s>\\n`` per message, then the cue."""
    parts = [f"<|{_get(m, 'role')}|>\n{_content_text(_get(m, 'content'))}</s>\n" for m in messages]
    return "".join(parts) + "<|assistant|>\n"


def _get(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):  # a list of parts; only text parts count
        return "".join(_content_text(part) for part in content)
    return str(_get(content, "text") or "")


def word_piece_id(piece: str) -> int:
    """The "words" tokenizer's id of a piece: a stable hash (crc32) into a 32k vocabulary."""
    return zlib.crc32(piece.encode()) % _WORDS_VOCAB


def words_tokenizer() -> SimTokenizer:
    """Fast and dependency-free: one token per whitespace-led word."""

    def encode(text: str) -> list[int]:
        return [word_piece_id(piece) for piece in _PIECE.findall(text)]

    words = [(word_piece_id(" " + w), " " + w) for w in _OUTPUT_WORDS]
    return SimTokenizer(encode, words)


def file_tokenizer(path: str | Path) -> SimTokenizer:
    """A Hugging Face fast tokenizer (a tokenizer.json or a folder holding one)."""
    from rayfleet.bench.text import TextMaker, load_tokenizer

    tokenizer = load_tokenizer(path)

    def encode(text: str) -> list[int]:
        return list(tokenizer.encode(text).ids)

    words = TextMaker(tokenizer).words[:512]
    ids = [tokenizer.encode(w, add_special_tokens=False).ids[0] for w in words]
    return SimTokenizer(encode, list(zip(ids, words, strict=True)))


def load_sim_tokenizer(spec: str, model_source: str | None = None) -> SimTokenizer:
    """The tokenizer ``SimParams.tokenizer`` names (``auto`` looks at the model folder)."""
    if spec == "words":
        return words_tokenizer()
    if spec == "tiny":
        from rayfleet.platform.tiny_model import ensure_tiny

        return file_tokenizer(ensure_tiny())
    if spec == "auto":
        folder = Path(model_source).expanduser() if model_source else None
        if folder is not None and (folder / "tokenizer.json").is_file():
            return file_tokenizer(folder)
        return words_tokenizer()
    return file_tokenizer(spec)
