"""TPU slice topology → hosts and chips, and how that shapes the KubeRay worker group."""

from __future__ import annotations

import pytest

from rayfleet.kuberay.render import render_raycluster
from rayfleet.platform.accelerators import tpu_slice
from rayfleet.platform.plan import resolve
from rayfleet.platform.spec import SpecError, parse_spec

# (version, topology, hosts, chips per host, GKE accelerator label)
SLICES = [
    ("v4", "2x2x1", 1, 4, "tpu-v4-podslice"),
    ("v4", "2x2x2", 2, 4, "tpu-v4-podslice"),
    ("v4", "2x2x4", 4, 4, "tpu-v4-podslice"),
    ("v5e", "1x1", 1, 1, "tpu-v5-lite-podslice"),
    ("v5e", "2x4", 1, 8, "tpu-v5-lite-podslice"),
    ("v5e", "4x4", 4, 4, "tpu-v5-lite-podslice"),
    ("v5e", "8x16", 32, 4, "tpu-v5-lite-podslice"),
    ("v6e", "2x2", 1, 4, "tpu-v6e-slice"),
    ("v6e", "2x4", 1, 8, "tpu-v6e-slice"),
    ("v6e", "4x4", 4, 4, "tpu-v6e-slice"),
    ("v6e", "16x16", 64, 4, "tpu-v6e-slice"),
]


def tpu_worker_group(version: str, topology: str) -> dict:
    spec = parse_spec(
        {
            "name": "tpu-shape",
            "models": [
                {
                    "id": "m",
                    "pools": {
                        "unified": {
                            "accelerator": {
                                "kind": "tpu",
                                "version": version,
                                "topology": topology,
                            },
                            "replicas": 2,
                        }
                    },
                }
            ],
        }
    )
    (worker,) = render_raycluster(resolve(spec))["spec"]["workerGroupSpecs"]
    return worker


@pytest.mark.parametrize(("version", "topology", "hosts", "per_host", "gke"), SLICES)
def test_slice_hosts_and_chips(
    version: str, topology: str, hosts: int, per_host: int, gke: str
) -> None:
    tpu = tpu_slice(version, topology)
    assert (tpu.hosts, tpu.chips_per_host) == (hosts, per_host)
    assert tpu.chips == hosts * per_host
    assert tpu.gke_accelerator == gke


@pytest.mark.parametrize(("version", "topology", "hosts", "per_host", "gke"), SLICES)
def test_worker_group_is_one_slice_per_replica(
    version: str, topology: str, hosts: int, per_host: int, gke: str
) -> None:
    worker = tpu_worker_group(version, topology)
    pod = worker["template"]["spec"]
    (container,) = pod["containers"]
    assert worker["numOfHosts"] == hosts
    assert worker["replicas"] == worker["minReplicas"] == worker["maxReplicas"] == 2  # slices
    assert container["resources"]["requests"]["google.com/tpu"] == str(per_host)
    assert container["resources"]["limits"]["google.com/tpu"] == str(per_host)
    assert worker["resources"] == {"TPU": str(per_host)}  # Ray's TPU resource per host
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-tpu-accelerator": gke,
        "cloud.google.com/gke-tpu-topology": topology,
    }
    assert worker["labels"]["ray.io/tpu-topology"] == topology


def test_topology_with_wrong_dimensions_is_rejected() -> None:
    with pytest.raises(SpecError, match="NxNxN"):
        tpu_worker_group("v4", "2x4")
    with pytest.raises(SpecError, match="not a multiple"):
        tpu_worker_group("v6e", "3x3")
