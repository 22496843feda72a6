from rayfleet.platform.plan import GROUP_LABEL, resolve
from rayfleet.platform.spec import parse_spec


def spec_with(pools, **model):
    return parse_spec({"models": [{"id": "m", "pools": pools, **model}]})


def test_unified_cpu_is_one_group_without_selectors():
    plan = resolve(spec_with({"unified": {"replicas": 2}}))
    assert [g.name for g in plan.groups] == ["cpu"]
    assert plan.groups[0].min_replicas == plan.groups[0].max_replicas == 2
    assert not plan.places_by_group
    assert plan.engines[0].deployment_name == "m-unified"


def test_split_gpu_pools_get_their_own_groups():
    gpu = {"kind": "gpu", "type": "nvidia-h100-80gb", "count": 8}
    plan = resolve(
        spec_with(
            {
                "prefill": {"accelerator": gpu, "replicas": 2},
                "decode": {
                    "accelerator": gpu,
                    "autoscaling": {"min_replicas": 1, "max_replicas": 4},
                },
            },
            disaggregation={"connector": "nixl"},
        )
    )
    names = {g.name: g for g in plan.groups}
    assert set(names) == {"gpu-nvidia-h100-80gb-x8-prefill", "gpu-nvidia-h100-80gb-x8-decode"}
    assert names["gpu-nvidia-h100-80gb-x8-decode"].max_replicas == 4
    assert plan.places_by_group
    labels = names["gpu-nvidia-h100-80gb-x8-prefill"].labels()
    assert labels[GROUP_LABEL] == "gpu-nvidia-h100-80gb-x8-prefill"
    assert labels["ray.io/accelerator-type"] == "H100"


def test_multi_host_tpu_group():
    tpu = {"kind": "tpu", "version": "v6e", "topology": "4x4"}
    plan = resolve(spec_with({"unified": {"accelerator": tpu}}))
    group = plan.groups[0]
    assert group.hosts_per_replica == 4
    assert group.ray_resources_per_host() == {"TPU": 4.0}
    assert group.labels()["ray.io/tpu-topology"] == "4x4"


def test_cpu_engines_get_disjoint_core_offsets():
    spec = parse_spec(
        {
            "models": [
                {
                    "id": "a",
                    "pools": {
                        "unified": {"replicas": 2, "accelerator": {"kind": "cpu", "cpus": 1}}
                    },
                },
                {"id": "b", "pools": {"unified": {"accelerator": {"kind": "cpu", "cpus": 2}}}},
            ]
        }
    )
    plan = resolve(spec)
    assert [e.cpu_core_offset for e in plan.engines] == [0, 2]


def test_engine_goes_into_the_ingress_only_when_there_is_nothing_to_route():
    assert resolve(spec_with({"unified": {"replicas": 1}})).engine_in_ingress
    assert resolve(spec_with({"unified": {}})).engine_in_ingress
    assert not resolve(spec_with({"unified": {"replicas": 2}})).engine_in_ingress
    scaling = {"autoscaling": {"min_replicas": 1, "max_replicas": 1}}
    assert not resolve(spec_with({"unified": scaling})).engine_in_ingress
    assert not resolve(spec_with({"prefill": {}, "decode": {}})).engine_in_ingress
    two_models = parse_spec({"models": [{"id": m, "pools": {"unified": {}}} for m in ("a", "b")]})
    assert not resolve(two_models).engine_in_ingress
    two_ingresses = parse_spec(
        {"models": [{"id": "m", "pools": {"unified": {}}}], "http": {"ingress_replicas": 2}}
    )
    assert not resolve(two_ingresses).engine_in_ingress
