"""Prompt → token ids for the precise index, tokenizing each distinct prompt once.

Serve may call ``choose_replicas`` several times for one request and the router looks
at it again when it is routed; an LRU over the prompt text makes that one tokenization.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rayfleet.router.lru import LruMap
from rayfleet.router.prompt import PromptInput

EncodeText = Callable[[str], Sequence[int]]
EncodeChat = Callable[[Sequence[Any]], Sequence[int]]


class CachedTokenizer:
    def __init__(
        self, encode_text: EncodeText, encode_chat: EncodeChat | None = None, capacity: int = 1024
    ) -> None:
        self._encode_text = encode_text
        self._encode_chat = encode_chat
        self._cache: LruMap[tuple[bool, str], tuple[int, ...]] = LruMap(capacity)
        self.calls = 0

    @classmethod
    def from_pretrained(cls, name: str, capacity: int = 1024) -> CachedTokenizer:
        """Wrap a Hugging Face tokenizer the way vLLM's OpenAI server applies it."""
        from transformers import AutoTokenizer  # heavy: only precise mode pays for it

        tokenizer = AutoTokenizer.from_pretrained(name)

        def encode_text(text: str) -> Sequence[int]:
            return tokenizer.encode(text)

        def encode_chat(messages: Sequence[Any]) -> Sequence[int]:
            ids: Any = tokenizer.apply_chat_template(
                [dict(message) for message in messages],
                tokenize=True,
                add_generation_prompt=True,
            )
            # transformers 5 returns a BatchEncoding; 4.x returned the list itself.
            return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

        chat = encode_chat if getattr(tokenizer, "chat_template", None) else None
        return cls(encode_text, chat, capacity)

    def encode(self, prompt: PromptInput) -> tuple[int, ...] | None:
        """Token ids of the prompt, or None when this tokenizer cannot encode it."""
        if prompt.token_ids is not None:
            return prompt.token_ids
        is_chat = prompt.messages is not None
        if is_chat and self._encode_chat is None:
            return None
        key = (is_chat, prompt.text)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        self.calls += 1
        if is_chat:
            assert self._encode_chat is not None and prompt.messages is not None
            ids = tuple(self._encode_chat(prompt.messages))
        else:
            ids = tuple(self._encode_text(prompt.text))
        self._cache.put(key, ids)
        return ids
