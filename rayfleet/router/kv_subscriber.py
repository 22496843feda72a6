"""A background thread subscribing to each replica's vLLM KV-event publisher.

ZMQ sockets belong to the thread that uses them, and the index belongs to the router's
event loop. So the thread only receives and decodes; the router drains decoded batches
at its own pace (``drain``) and applies them itself, without locks on the index.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from rayfleet.router.index import ReplicaId
from rayfleet.router.kv_events import EventBatch, decode_event_batch

log = logging.getLogger(__name__)

Command = Callable[[], None]


class KvEventSubscriber:
    def __init__(self, max_pending: int = 10_000, poll_ms: int = 100) -> None:
        import zmq  # only precise mode needs pyzmq

        self._zmq = zmq
        self._context: Any = zmq.Context.instance()
        self._poll_ms = poll_ms
        self._poller = zmq.Poller()
        # A bounded queue: if the router falls behind, the oldest batches go first and
        # the staleness check takes over, instead of memory growing without end.
        self._batches: deque[tuple[ReplicaId, EventBatch]] = deque(maxlen=max_pending)
        self._commands: deque[Command] = deque()
        self._sockets: dict[ReplicaId, Any] = {}
        self._endpoints: dict[ReplicaId, str] = {}
        self._last_seq: dict[ReplicaId, int] = {}
        self.gaps = 0
        self.decode_errors = 0
        self._running = True
        self._thread = threading.Thread(target=self._run, name="rayfleet-kv-events", daemon=True)
        self._thread.start()

    # --- called from the router thread ------------------------------------------------

    def subscribe(self, replica: ReplicaId, endpoint: str) -> None:
        if self._endpoints.get(replica) == endpoint:
            return
        self._endpoints[replica] = endpoint
        self._commands.append(lambda: self._open(replica, endpoint))

    def unsubscribe(self, replica: ReplicaId) -> None:
        if self._endpoints.pop(replica, None) is not None:
            self._commands.append(lambda: self._close(replica))

    def drain(self, limit: int) -> list[tuple[ReplicaId, EventBatch]]:
        drained: list[tuple[ReplicaId, EventBatch]] = []
        while self._batches and len(drained) < limit:
            drained.append(self._batches.popleft())
        return drained

    def close(self, timeout_s: float = 1.0) -> None:
        self._running = False
        self._thread.join(timeout_s)

    # --- the subscriber thread --------------------------------------------------------

    def _open(self, replica: ReplicaId, endpoint: str) -> None:
        self._close(replica)
        socket = self._context.socket(self._zmq.SUB)
        socket.setsockopt(self._zmq.SUBSCRIBE, b"")
        socket.connect(endpoint)
        self._sockets[replica] = socket
        self._poller.register(socket, self._zmq.POLLIN)

    def _close(self, replica: ReplicaId) -> None:
        socket = self._sockets.pop(replica, None)
        self._last_seq.pop(replica, None)
        if socket is not None:
            self._poller.unregister(socket)
            socket.close(linger=0)

    def _run(self) -> None:
        try:
            while self._running:
                while self._commands:
                    self._commands.popleft()()
                ready = dict(self._poller.poll(self._poll_ms))
                for replica, socket in list(self._sockets.items()):
                    if socket in ready:
                        self._receive(replica, socket)
        finally:
            for replica in list(self._sockets):
                self._close(replica)

    def _receive(self, replica: ReplicaId, socket: Any) -> None:
        frames = socket.recv_multipart(self._zmq.NOBLOCK)
        try:
            # (topic, 8-byte big-endian sequence number, msgpack payload)
            seq = int.from_bytes(frames[-2], "big", signed=True)
            batch = decode_event_batch(frames[-1])
        except Exception:  # a malformed message must not kill the subscriber
            self.decode_errors += 1
            log.debug("undecodable KV-event message from %s", replica, exc_info=True)
            return
        last = self._last_seq.get(replica)
        if last is not None and seq != last + 1:
            self.gaps += 1
        self._last_seq[replica] = seq
        self._batches.append((replica, batch))
