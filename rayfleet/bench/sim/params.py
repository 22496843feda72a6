"""The simulated engine's parameters: capacity, scheduling limits and the step-time model.

One engine step costs (in simulated seconds)::

    step_time = step_base_s
              + prefill_cost_per_token    × uncached prompt tokens computed this step
              + decode_cost_per_seq       × sequences decoding this step
              + decode_cost_per_ctx_token × sum of those sequences' context lengths
              + kv_transfer_s_per_token   × tokens imported from a prefill engine this step

``rayfleet.bench.sim.calibrate`` fits the cost fields from a real run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["unified", "prefill", "decode"]

# vLLM engine kwargs the simulator honours when the sim config does not set them.
ENGINE_KWARG_FIELDS = (
    "block_size",
    "max_num_seqs",
    "max_num_batched_tokens",
    "max_model_len",
    "enable_prefix_caching",
)


class SimParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = Field(
        "unified",
        description="unified: prefill and decode; prefill: stop after the first token and "
        "return kv_transfer_params; decode: import the blocks named in kv_transfer_params.",
    )
    block_size: int = Field(128, ge=1, description="Tokens per KV block (vLLM CPU uses 128).")
    num_kv_blocks: int = Field(
        512,
        ge=1,
        description="KV-cache capacity in blocks, shared by running sequences and the prefix "
        "cache, as in vLLM's block pool.",
    )
    enable_prefix_caching: bool = Field(True, description="Reuse cached prompt blocks.")
    max_num_seqs: int = Field(256, ge=1, description="Most sequences running at once.")
    max_num_batched_tokens: int = Field(
        2048, ge=1, description="Chunked-prefill token budget of one step (decodes count 1)."
    )
    max_model_len: int = Field(4096, ge=2, description="Longest prompt + output, in tokens.")
    step_base_s: float = Field(0.006, ge=0, description="Fixed cost of every step, seconds.")
    prefill_cost_per_token: float = Field(
        8e-5, ge=0, description="Seconds per uncached prompt token computed in a step."
    )
    decode_cost_per_seq: float = Field(
        2e-4, ge=0, description="Seconds per sequence decoding in a step."
    )
    decode_cost_per_ctx_token: float = Field(
        2e-7, ge=0, description="Seconds per context token attended to by decoding sequences."
    )
    kv_transfer_s_per_token: float = Field(
        1e-5, ge=0, description="Seconds per prompt token imported from a prefill engine."
    )
    time_scale: float = Field(
        1.0,
        gt=0,
        description="Simulated seconds per wall second: below 1 the engine runs slower than "
        "real time, so a small machine can offer proportionally lower request rates.",
    )
    tokenizer: str = Field(
        "auto",
        description="auto (the model folder's tokenizer.json, else words), words (a fast "
        "hashing word tokenizer), tiny (RayFleet's tiny model) or a tokenizer path.",
    )
    seed: int = Field(0, description="Seed of the deterministic pseudo output tokens.")

    def step_time(
        self, prefill_tokens: int, decode_seqs: int, context_tokens: int, imported_tokens: int
    ) -> float:
        """Simulated seconds of one step (the model in the module docstring)."""
        return (
            self.step_base_s
            + self.prefill_cost_per_token * prefill_tokens
            + self.decode_cost_per_seq * decode_seqs
            + self.decode_cost_per_ctx_token * context_tokens
            + self.kv_transfer_s_per_token * imported_tokens
        )

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)


def sim_params_from(sim: Mapping[str, Any] | None, engine_kwargs: Mapping[str, Any]) -> SimParams:
    """SimParams from an LLMConfig's ``experimental_configs["sim"]`` and engine kwargs.

    Engine kwargs that mean the same thing in vLLM (block size, max_num_seqs, ...) fill
    fields the sim config leaves out, so a rendered RayFleet config simulates as served.
    """
    merged = {k: engine_kwargs[k] for k in ENGINE_KWARG_FIELDS if k in engine_kwargs}
    merged.update(sim or {})
    return SimParams.model_validate(merged)
