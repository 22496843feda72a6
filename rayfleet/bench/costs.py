"""What a configuration costs: an editable price table and GKE Inference Quickstart's
$/M-token arithmetic.

GKE Inference Quickstart (the GKE Recommender API's ``Cost`` message) splits an
accelerator's cost between input and output tokens with an output-to-input cost
ratio R (default 4, i.e. an output token costs four input tokens)::

    $/output token = accelerator $/s / (input tokens/s / R + output tokens/s)
    $/input token  = ($/output token) / R
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rayfleet.platform.accelerators import gpu_type, tpu_slice
from rayfleet.platform.spec import CpuAccelerator, GpuAccelerator, Pool, TpuAccelerator

DEFAULT_OUTPUT_INPUT_COST_RATIO = 4.0


class PriceError(ValueError):
    """A price table that cannot be used, or an accelerator it has no price for."""


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = "USD"
    output_input_cost_ratio: float = Field(DEFAULT_OUTPUT_INPUT_COST_RATIO, gt=0)
    per_hour: dict[str, float] = Field(
        description="Price per accelerator-hour: cpu per core, GPU types per GPU, "
        "tpu-<version> per chip."
    )

    def unit_price(self, unit: str) -> float:
        if unit not in self.per_hour:
            known = ", ".join(sorted(self.per_hour))
            raise PriceError(f"no price for {unit!r} in the price table (it has {known})")
        return self.per_hour[unit]


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The price table at ``path``, or the packaged example table."""
    if path is None:
        text = resources.files("rayfleet.bench").joinpath("prices.yaml").read_text()
        origin = "the packaged prices.yaml"
    else:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise PriceError(f"cannot read price table {path}: {error.strerror}") from None
        origin = str(path)
    try:
        data = yaml.safe_load(text)
        return PriceTable.model_validate(data)
    except (yaml.YAMLError, ValidationError) as error:
        raise PriceError(f"{origin} is not a valid price table: {error}") from None


def accelerator_units(
    accelerator: CpuAccelerator | GpuAccelerator | TpuAccelerator,
) -> tuple[str, int]:
    """The priced unit and how many of it one engine replica uses."""
    if isinstance(accelerator, GpuAccelerator):
        return gpu_type(accelerator.type).gke_label, accelerator.count
    if isinstance(accelerator, TpuAccelerator):
        chips = tpu_slice(accelerator.version, accelerator.topology).chips
        return f"tpu-{accelerator.version}", chips
    return "cpu", accelerator.cpus


def pools_hourly_usd(pools: Mapping[str, Pool], prices: PriceTable) -> float:
    """Price per hour of every replica of every pool (fixed replicas, or the minimum)."""
    total = 0.0
    for pool in pools.values():
        unit, count = accelerator_units(pool.accelerator)
        total += prices.unit_price(unit) * count * pool.min_replicas
    return total


@dataclass(frozen=True)
class TokenCosts:
    per_million_output: float
    per_million_input: float


def token_costs(
    hourly: float, input_tokens_per_s: float, output_tokens_per_s: float, ratio: float
) -> TokenCosts | None:
    """GKE Inference Quickstart's $/M output and input tokens; None without throughput."""
    weighted = input_tokens_per_s / ratio + output_tokens_per_s
    if weighted <= 0:
        return None
    per_output = hourly / 3600 / weighted
    return TokenCosts(per_output * 1e6, per_output / ratio * 1e6)


def parse_pools(stored: Mapping[str, Any]) -> dict[str, Pool]:
    """Pools as the profile store keeps them (role → Pool.model_dump)."""
    try:
        return {role: Pool.model_validate(pool) for role, pool in stored.items()}
    except ValidationError as error:
        raise PriceError(f"stored pools are not valid: {error}") from None
