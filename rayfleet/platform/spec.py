"""The one declarative spec: strict pydantic models loaded from YAML.

Every section forbids unknown fields, so a typo is an error that names its path
instead of a setting that is silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rayfleet.platform.accelerators import gpu_type, tpu_slice

EMBEDDED_TINY = "rayfleet:tiny"
Role = Literal["unified", "prefill", "decode"]
DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CpuAccelerator(Strict):
    kind: Literal["cpu"] = "cpu"
    cpus: int = Field(1, ge=1, description="CPU cores given to each engine replica.")
    kv_cache_gib: int = Field(
        1, ge=1, description="KV-cache GiB per engine (VLLM_CPU_KVCACHE_SPACE, whole GiB only)."
    )


class GpuAccelerator(Strict):
    kind: Literal["gpu"] = "gpu"
    type: str = Field(description="GPU type as GKE labels it, e.g. nvidia-l4, nvidia-h100-80gb.")
    count: int = Field(1, ge=1, le=16, description="GPUs per engine replica (tensor parallel).")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        return gpu_type(value).gke_label


class TpuAccelerator(Strict):
    kind: Literal["tpu"] = "tpu"
    version: Literal["v4", "v5e", "v6e"] = Field(description="TPU generation.")
    topology: str = Field(description="Slice topology, e.g. 2x4 (v5e/v6e) or 2x2x2 (v4).")

    @model_validator(mode="after")
    def _valid_topology(self) -> TpuAccelerator:
        tpu_slice(self.version, self.topology)
        return self


Accelerator = Annotated[
    CpuAccelerator | GpuAccelerator | TpuAccelerator, Field(discriminator="kind")
]


class Autoscaling(Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(ge=1)
    target_ongoing_requests: float = Field(
        8, gt=0, description="Ongoing requests per replica that autoscaling aims for."
    )

    @model_validator(mode="after")
    def _ordered(self) -> Autoscaling:
        if self.max_replicas < self.min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) is below min_replicas ({self.min_replicas})"
            )
        return self


class Pool(Strict):
    accelerator: Accelerator = Field(default_factory=CpuAccelerator)
    replicas: int | None = Field(None, ge=1, description="Fixed replica count.")
    autoscaling: Autoscaling | None = Field(None, description="Replaces `replicas` when set.")
    max_ongoing_requests: int = Field(
        32, ge=1, description="Requests one replica works on at once."
    )
    # Ray Serve takes a positive queue limit (or -1, which the spec does not offer).
    max_queued_requests: int = Field(
        64, ge=1, description="Requests a deployment queues before it answers 429."
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments for this pool only."
    )

    @model_validator(mode="after")
    def _one_scaling_mode(self) -> Pool:
        if self.replicas is not None and self.autoscaling is not None:
            raise ValueError("set either replicas or autoscaling, not both")
        return self

    @property
    def min_replicas(self) -> int:
        return self.autoscaling.min_replicas if self.autoscaling else (self.replicas or 1)

    @property
    def max_replicas(self) -> int:
        return self.autoscaling.max_replicas if self.autoscaling else (self.replicas or 1)


class Pools(Strict):
    unified: Pool | None = None
    prefill: Pool | None = None
    decode: Pool | None = None

    @model_validator(mode="after")
    def _unified_or_split(self) -> Pools:
        split = (self.prefill is not None, self.decode is not None)
        if self.unified is not None and any(split):
            raise ValueError("use either a unified pool or prefill + decode pools, not both")
        if self.unified is None and split != (True, True):
            raise ValueError("define a unified pool, or both a prefill and a decode pool")
        return self

    def items(self) -> list[tuple[Role, Pool]]:
        named: list[tuple[Role, Pool | None]] = [
            ("unified", self.unified),
            ("prefill", self.prefill),
            ("decode", self.decode),
        ]
        return [(role, pool) for role, pool in named if pool is not None]


class Disaggregation(Strict):
    connector: Literal["auto", "nixl", "tpu", "shared-storage", "lmcache"] = "auto"
    min_uncached_tokens: int = Field(
        256, ge=0, description="Shorter uncached prompts are prefilled on the decode pool."
    )
    max_prefill_queue: int = Field(
        8, ge=0, description="Above this prefill queue, requests prefill on the decode pool."
    )


class Model(Strict):
    id: str = Field(description="Name served on the OpenAI API (`model` in requests).")
    source: str = Field(
        EMBEDDED_TINY,
        description="Local path or Hugging Face id; rayfleet:tiny is the embedded tiny model.",
    )
    tokenizer: str | None = Field(None, description="Tokenizer path or id, if not the source's.")
    chat_template: str | None = Field(
        None, description="Jinja chat template overriding the model's."
    )
    max_model_len: int = Field(2048, ge=16, description="Context length in tokens.")
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="vLLM engine arguments for every pool of this model."
    )
    pools: Pools = Field(default_factory=lambda: Pools(unified=Pool()))
    disaggregation: Disaggregation | None = None

    @field_validator("id")
    @classmethod
    def _nonblank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model id must not be blank")
        return value

    @model_validator(mode="after")
    def _disaggregation_needs_split(self) -> Model:
        if self.disaggregation is not None and self.pools.unified is not None:
            raise ValueError("disaggregation needs prefill and decode pools")
        return self


class Router(Strict):
    policy: Literal["pow2", "ray-prefix", "rayfleet"] = Field(
        "pow2",
        description="Replica choice: Ray's power-of-two, Ray's prefix affinity, or RayFleet's.",
    )
    stats_period_s: float = Field(
        1.0, gt=0, description="How often replicas report routing stats to the router."
    )
    # --- rayfleet policy: cache index -------------------------------------------------
    index: Literal["approximate", "precise"] = Field(
        "approximate",
        description="approximate: hash prompt characters, learn from routed requests. "
        "precise: index vLLM KV-cache events by token blocks (needs the tokenizer); "
        "falls back to approximate while events are stale.",
    )
    block_chars: int = Field(
        512, ge=16, description="Characters per approximate block (≈128 tokens × ~4 chars)."
    )
    block_tokens: int = Field(128, ge=1, description="Engine KV block size in tokens.")
    chars_per_token: float = Field(
        4.0, gt=0, description="Token estimate for prompts the router does not tokenize."
    )
    cache_capacity_blocks: int = Field(
        2048, ge=1, description="Blocks the router remembers per replica (≈ engine KV cache)."
    )
    min_match_blocks: int = Field(
        1, ge=1, description="Matched blocks needed before cache affinity applies."
    )
    kv_events_staleness_s: float = Field(
        10.0,
        gt=0,
        description="Precise mode: a routed request unconfirmed by KV events this long "
        "marks the replica's events stale.",
    )
    tokenizer_cache_size: int = Field(
        1024, ge=0, description="Prompts whose token ids the router keeps (LRU)."
    )
    # --- rayfleet policy: load ----------------------------------------------------
    saturation_tokens: int = Field(
        # 8192 marked healthy replicas saturated: at 70% load a replica holds ~30
        # decoding requests (~10k tokens) without queueing, and multi-turn hit rate
        # halved (virtual arena, docs/benchmarks.md); past ~12k the results are flat.
        16384,
        ge=1,
        description="In-flight token load (uncached prefill + expected decode) at which a "
        "replica stops being sticky.",
    )
    saturation_queue_len: int = Field(
        16, ge=1, description="Ongoing requests (Ray's queue length) that mark saturation."
    )
    saturation_waiting: int = Field(
        4, ge=1, description="Engine-reported waiting requests that mark saturation."
    )
    saturation_kv_usage: float = Field(
        0.95, gt=0, le=1, description="Engine-reported KV-cache usage that marks saturation."
    )
    decode_token_weight: float = Field(
        # A decode token re-reads its sequence's KV each step: at a 4k-token context it
        # costs ~13 prefill tokens of step time in the arena's engine model. 1 left hot
        # holders unspilled; 4 beat 8 on spurious spills (virtual arena, issue 4).
        4.0,
        ge=0,
        description="Weight of an expected decode token against a prefill token.",
    )
    default_decode_tokens: int = Field(
        128, ge=0, description="Expected output tokens when a request sets no max_tokens."
    )
    decode_tokens_cap: int = Field(
        1024, ge=0, description="Upper bound on the expected output tokens of one request."
    )
    stats_staleness_s: float = Field(
        5.0, gt=0, description="Routing stats older than this are stale."
    )
    stale_stats: Literal["ignore", "saturated"] = Field(
        "ignore",
        description="Stale stats are ignored (router-side load only) or mark the replica "
        "saturated.",
    )
    # --- rayfleet policy: choice ----------------------------------------------------
    exploration: float = Field(
        0.02, ge=0, le=1, description="Share of requests sent to a random unsaturated replica."
    )
    seed: int = Field(0, description="Seed of the exploration RNG.")
    fallback_replicas: int = Field(
        2, ge=0, description="Least-loaded replicas offered as the second rank."
    )
    session_affinity: Literal["off", "header", "user"] = Field(
        "off",
        description="Pin a session to its replica: by the session header or the request's "
        "`user` field.",
    )
    session_header: str = Field(
        "x-session-id", description="Header naming the session when session_affinity=header."
    )
    session_capacity: int = Field(100_000, ge=1, description="Sessions remembered (LRU).")


class Http(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    metrics_port: int = Field(8080, ge=1, le=65535, description="Prometheus metrics port.")
    request_timeout_s: float = Field(600, gt=0, description="Per-request end-to-end timeout.")
    ingress_replicas: int = Field(
        1, ge=1, description="OpenAI ingress replicas; one handles ~180 req/s on a 2-core host."
    )


class Auth(Strict):
    api_key_env: str | None = Field(
        None, description="Environment variable holding the bearer token; unset means no auth."
    )


class Kubernetes(Strict):
    namespace: str = "default"
    image: str = Field("rayfleet:cpu", description="Image the RayService pods run.")
    upgrade_strategy: Literal["NewCluster", "NewClusterWithIncrementalUpgrade"] = "NewCluster"
    hf_token_secret: str | None = Field(
        None, description="Secret holding HF_TOKEN (key `token`); referenced, never inlined."
    )


class Spec(Strict):
    name: str = Field("rayfleet", description="DNS label naming the app and the RayService.")
    models: list[Model] = Field(min_length=1)
    router: Router = Field(default_factory=Router)
    http: Http = Field(default_factory=Http)
    auth: Auth = Field(default_factory=Auth)
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not DNS_LABEL.match(value):
            raise ValueError("must be a lowercase DNS label of at most 40 characters")
        return value

    @model_validator(mode="after")
    def _unique_model_ids(self) -> Spec:
        ids = [m.id for m in self.models]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"model ids must be unique; repeated: {', '.join(dupes)}")
        return self

    def digest(self) -> str:
        """Stable hash of the spec's content, used to tag stored benchmark runs."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class SpecError(ValueError):
    """A spec that cannot be used; the message names each bad field and value."""


def format_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in item["loc"]).lstrip(".")
        path = re.sub(r"\.(cpu|gpu|tpu)(?=\.|$)", "", path)  # drop union-branch names
        message = item["msg"].removeprefix("Value error, ")
        bad = item.get("input")
        shown = "" if isinstance(bad, dict | list) else f" (got {bad!r})"
        lines.append(f"{path or '<root>'}: {message}{shown}")
    return "\n".join(lines)


def parse_spec(data: Any, origin: str = "spec") -> Spec:
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as error:
        raise SpecError(f"{origin} is invalid:\n{format_validation_error(error)}") from None


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise SpecError(f"cannot read spec {path}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpecError(f"{path} is not valid YAML: {error}") from None
    return parse_spec(data, str(path))


def default_spec_path() -> Path:
    return Path(__file__).with_name("default-spec.yaml")
