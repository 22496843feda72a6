"""Plain records shared by workloads, the load generator, metrics and reports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

ErrorKind = Literal["http_4xx", "http_5xx", "timeout", "connection", "stream_error"]
ERROR_KINDS: tuple[ErrorKind, ...] = (
    "http_4xx",
    "http_5xx",
    "timeout",
    "connection",
    "stream_error",
)


@dataclass(frozen=True)
class RequestSpec:
    """One request a workload wants sent: a completion prompt or a chat conversation."""

    max_tokens: int
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    # Tokens of the prompt text (or of all message contents) without special or
    # chat-template tokens; None when unknown (datasets of chats).
    input_tokens: int | None = None
    ignore_eos: bool = True
    # Turns of one session are sent in order, each after the previous one ended.
    session_id: str | None = None
    turn: int = 0
    group: str | None = None  # a label for reports: shared-prefix group, long/short

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a request needs exactly one of prompt or messages")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")


@dataclass
class RequestRecord:
    """What happened to one request. Times are seconds; chunk times count from send."""

    index: int
    scheduled_s: float  # when the arrival process wanted it sent (from run start)
    send_s: float  # when it was actually sent (from run start)
    max_tokens: int
    expected_input_tokens: int | None = None
    session_id: str | None = None
    group: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    chunk_s: list[float] = field(default_factory=list)
    input_tokens: int | None = None  # from the server's usage
    output_tokens: int | None = None  # from the server's usage
    status: int | None = None  # HTTP status, if a response arrived
    error_kind: ErrorKind | None = None
    error: str | None = None
    stage: int = 0

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def end_s(self) -> float | None:
        return None if self.e2e_s is None else self.send_s + self.e2e_s

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RequestRecord:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**fields)
