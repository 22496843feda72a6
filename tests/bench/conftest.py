"""A fake OpenAI-style SSE server (aiohttp, own thread, random port) with known delays.

Markers in the prompt pick a failure: FAIL400, FAIL500, HANG (never answers),
BREAK (drops the connection mid-stream), ERRCHUNK (an error event in the stream).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from rayfleet.bench.text import TextMaker, load_tokenizer
from rayfleet.platform.tiny_model import ensure_tiny


class FakeServer:
    def __init__(self, ttft_s: float = 0.05, itl_s: float = 0.02, root: str = "/nonexistent"):
        self.ttft_s = ttft_s
        self.itl_s = itl_s
        self.root = root
        self.in_flight = 0
        self.max_in_flight = 0
        self.bodies: list[dict[str, Any]] = []
        self.hits = 0
        self.queries = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.complete)
        app.router.add_post("/v1/chat/completions", self.complete)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        return app

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.app())
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._started.set()
        self._loop.run_forever()

    def start(self) -> FakeServer:
        self._thread.start()
        self._started.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def models(self, request: web.Request) -> web.Response:
        model = {"id": "fake-model", "object": "model", "root": self.root, "owned_by": "fake"}
        return web.json_response({"object": "list", "data": [model]})

    async def metrics(self, request: web.Request) -> web.Response:
        lines = [
            "# TYPE vllm:prefix_cache_hits_total counter",
            f'vllm:prefix_cache_hits_total{{engine="0"}} {self.hits}',
            "# TYPE vllm:prefix_cache_queries_total counter",
            f'vllm:prefix_cache_queries_total{{engine="0"}} {self.queries}',
        ]
        return web.Response(text="\n".join(lines) + "\n")

    async def complete(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request, body)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        chat = "messages" in body
        text = " ".join(m["content"] for m in body["messages"]) if chat else body["prompt"]
        if "FAIL400" in text or "FAIL500" in text:
            status = 400 if "FAIL400" in text else 500
            return web.json_response({"error": {"message": "nope"}}, status=status)
        if "HANG" in text:
            await asyncio.sleep(30)
        prompt_tokens = len(text.split())
        self.queries += prompt_tokens
        self.hits += prompt_tokens // 2
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if chat:  # like vLLM: a role-only chunk before any token
            await self._send(response, {"choices": [{"delta": {"role": "assistant"}}]})
        await asyncio.sleep(self.ttft_s)
        for i in range(body["max_tokens"]):
            if i:
                await asyncio.sleep(self.itl_s)
            if "BREAK" in text and i == 2:
                request.transport.close()  # type: ignore[union-attr]
                return response
            token = {"delta": {"content": f" t{i}"}} if chat else {"text": f" t{i}"}
            await self._send(response, {"choices": [token]})
        if "ERRCHUNK" in text:
            await self._send(response, {"error": {"message": "engine died"}})
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": body["max_tokens"]}
        await self._send(response, {"choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        return response

    @staticmethod
    async def _send(response: web.StreamResponse, payload: dict[str, Any]) -> None:
        await response.write(f"data: {json.dumps(payload)}\n\n".encode())


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    return ensure_tiny()


@pytest.fixture(scope="session")
def maker(tiny_dir: Path) -> TextMaker:
    return TextMaker(load_tokenizer(tiny_dir))
