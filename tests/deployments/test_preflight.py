from dataclasses import dataclass

import pytest

from rayfleet.deployments.preflight import PreflightError, check_tpu_devices, cpu_bind


@dataclass
class FakeDevice:  # the shape jax.devices() entries have
    device_kind: str


def test_matching_slice_passes():
    check_tpu_devices([FakeDevice("TPU v6 lite")] * 8, "v6e", 8)
    check_tpu_devices([FakeDevice("TPU v4")] * 4, "v4", 4)


def test_wrong_chip_count_is_explained():
    with pytest.raises(PreflightError, match=r"8 chips but jax.devices\(\) shows 4"):
        check_tpu_devices([FakeDevice("TPU v6 lite")] * 4, "v6e", 8)


def test_wrong_generation_is_explained():
    with pytest.raises(PreflightError, match="asks for TPU v6e but this replica sees TPU v5 lite"):
        check_tpu_devices([FakeDevice("TPU v5 lite")] * 8, "v6e", 8)
    with pytest.raises(PreflightError, match="no TPU devices"):
        check_tpu_devices([], "v5e", 4)


def test_cpu_bind_is_distinct_per_engine():
    binds = {cpu_bind(0, 1, rank, cores=4) for rank in range(4)}
    assert binds == {"0", "1", "2", "3"}
    assert cpu_bind(2, 2, 0, cores=4) == "2,3"
    assert cpu_bind(1, 1, 1, cores=2) == "0"  # wraps around
