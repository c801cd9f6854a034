"""Every row of the GPU translation table (issue 16), and the gpu_type matching."""

from __future__ import annotations

from typing import Any

import pytest

from mlyard.backends.kubernetes.gpu_requests import (
    MEMORY_LABEL,
    PRODUCT_LABEL,
    matching_products,
    product_matches,
    translate_gpus,
)
from mlyard.backends.kubernetes.profile import KubernetesProfile
from mlyard.errors import ResourceError
from mlyard.models.resources import Resources


def profile(**fields: Any) -> KubernetesProfile:
    return KubernetesProfile(image="mlyard:test", **fields)


def test_no_gpu_asks_for_nothing() -> None:
    placement = translate_gpus(Resources(cpus=2), profile(gpu_sharing="mig"))
    assert placement.resources == {} and not placement.uses_gpu


def test_exclusive_gives_whole_gpus() -> None:
    placement = translate_gpus(Resources(gpus=2), profile())
    assert placement.resources == {"nvidia.com/gpu": "2"}
    assert placement.node_affinity == []


def test_exclusive_refuses_a_fraction_naming_the_sharing_modes() -> None:
    with pytest.raises(ResourceError) as caught:
        translate_gpus(Resources(gpus=0.5), profile())
    text = str(caught.value)
    assert "gpus=0.5" in text and "exclusive" in text
    for mode in ("time-slicing", "mig", "nvshare", "hami", "dra"):
        assert mode in text


def test_exclusive_gpu_memory_becomes_node_affinity_on_the_gfd_memory_label() -> None:
    placement = translate_gpus(Resources(gpus=1, gpu_memory="40GiB"), profile())
    assert placement.node_affinity == [{"key": MEMORY_LABEL, "operator": "Gt", "values": ["40959"]}]


@pytest.mark.parametrize(("gpus", "slices"), [(0.25, 1), (0.3, 2), (0.5, 2), (1, 4), (2, 8)])
def test_time_slicing_asks_for_ceil_fraction_times_replicas(gpus: float, slices: int) -> None:
    placement = translate_gpus(
        Resources(gpus=gpus),
        profile(
            gpu_sharing="time-slicing",
            shared_gpu_resource="nvidia.com/gpu.shared",
            replicas_per_gpu=4,
        ),
    )
    assert placement.resources == {"nvidia.com/gpu.shared": str(slices)}


MIG = ["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"]


@pytest.mark.parametrize(
    ("request_", "resource"),
    [
        (Resources(gpus=0.1), "nvidia.com/mig-1g.10gb"),  # 0.7 slices -> 1g
        (Resources(gpus=0.25), "nvidia.com/mig-2g.20gb"),  # 1.75 slices -> 2g
        (Resources(gpus=0.4), "nvidia.com/mig-3g.40gb"),  # 2.8 slices -> 3g
        (Resources(gpus=0.5, gpu_memory="15GB"), "nvidia.com/mig-2g.20gb"),
        (Resources(gpus=0.5, gpu_memory="10GB"), "nvidia.com/mig-1g.10gb"),
        (Resources(gpus=1), "nvidia.com/mig-7g.80gb"),
    ],
)
def test_mig_picks_the_smallest_profile_that_holds_the_request(
    request_: Resources, resource: str
) -> None:
    placement = translate_gpus(request_, profile(gpu_sharing="mig", mig_profiles=MIG))
    assert placement.resources == {resource: "1"}


def test_mig_profiles_come_from_the_nodes_when_the_profile_lists_none() -> None:
    placement = translate_gpus(
        Resources(gpus=0.5, gpu_memory="4GB"),
        profile(gpu_sharing="mig"),
        node_mig_profiles=["3g.20gb", "1g.5gb"],
    )
    assert placement.resources == {"nvidia.com/mig-1g.5gb": "1"}


def test_mig_refuses_a_request_larger_than_any_profile() -> None:
    with pytest.raises(ResourceError) as caught:
        translate_gpus(
            Resources(gpus=0.5, gpu_memory="100GB"), profile(gpu_sharing="mig", mig_profiles=MIG)
        )
    assert "7g.80gb" in str(caught.value) and "100.0GB" in str(caught.value)


def test_mig_without_any_profile_says_where_to_list_them() -> None:
    with pytest.raises(ResourceError, match="mig_profiles"):
        translate_gpus(Resources(gpus=0.5), profile(gpu_sharing="mig"), node_mig_profiles=[])


def test_nvshare_gives_one_shared_gpu_and_refuses_several() -> None:
    for gpus in (0.25, 1):
        placement = translate_gpus(Resources(gpus=gpus), profile(gpu_sharing="nvshare"))
        assert placement.resources == {"nvshare.com/gpu": "1"}
    with pytest.raises(ResourceError, match="nvshare"):
        translate_gpus(Resources(gpus=2), profile(gpu_sharing="nvshare"))


def test_hami_asks_for_memory_in_mib_and_cores_in_percent() -> None:
    hami = profile(gpu_sharing="hami")
    placement = translate_gpus(Resources(gpus=0.5, gpu_memory="8GiB"), hami)
    assert placement.resources == {
        "nvidia.com/gpu": "1",
        "nvidia.com/gpumem": "8192",
        "nvidia.com/gpucores": "50",
    }
    without_memory = translate_gpus(Resources(gpus=0.25), hami)
    assert without_memory.resources == {
        "nvidia.com/gpu": "1",
        "nvidia.com/gpumem-percentage": "25",
        "nvidia.com/gpucores": "25",
    }
    assert translate_gpus(Resources(gpus=2), hami).resources == {"nvidia.com/gpu": "2"}


def test_dra_makes_a_claim_with_a_cel_selector_on_memory_and_product() -> None:
    placement = translate_gpus(
        Resources(gpus=2, gpu_memory="40GiB", gpu_type="A100"), profile(gpu_sharing="dra")
    )
    assert placement.resources == {} and placement.uses_gpu
    assert placement.claim_spec is not None
    request = placement.claim_spec["spec"]["devices"]["requests"][0]
    assert request["name"] == "gpu"
    exactly = request["exactly"]
    assert exactly["deviceClassName"] == "gpu.nvidia.com" and exactly["count"] == 2
    expression = exactly["selectors"][0]["cel"]["expression"]
    assert 'device.capacity["gpu.nvidia.com"].memory.compareTo(quantity("40960Mi")) >= 0' in (
        expression
    )
    assert 'productName.lowerAscii().contains("a100")' in expression


def test_dra_refuses_a_fraction() -> None:
    with pytest.raises(ResourceError, match="whole devices"):
        translate_gpus(Resources(gpus=0.5), profile(gpu_sharing="dra"))


def test_a_short_gpu_type_matches_full_product_names() -> None:
    assert product_matches("A100", "NVIDIA-A100-SXM4-80GB")
    assert product_matches("a100-80gb", "NVIDIA-A100-SXM4-80GB")
    assert not product_matches("a10", "NVIDIA-A100-SXM4-80GB")
    assert not product_matches("A100", "NVIDIA-H100-80GB-HBM3")
    assert product_matches("v100", "Tesla-V100-SXM2-16GB")


def test_gpu_type_becomes_required_affinity_on_the_products_the_nodes_have() -> None:
    nodes = ["NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-PCIE-40GB", "Tesla-T4"]
    placement = translate_gpus(Resources(gpus=1, gpu_type="a100"), profile(), node_products=nodes)
    assert placement.node_affinity == [
        {
            "key": PRODUCT_LABEL,
            "operator": "In",
            "values": ["NVIDIA-A100-PCIE-40GB", "NVIDIA-A100-SXM4-80GB"],
        }
    ]


def test_gpu_type_no_node_has_is_refused_saying_what_they_have() -> None:
    with pytest.raises(ResourceError) as caught:
        translate_gpus(Resources(gpus=1, gpu_type="h100"), profile(), node_products=["Tesla-T4"])
    assert "h100" in str(caught.value) and "Tesla-T4" in str(caught.value)


def test_gpu_type_without_node_inventory_uses_the_known_products() -> None:
    placement = translate_gpus(Resources(gpus=1, gpu_type="H100"), profile())
    values = placement.node_affinity[0]["values"]
    assert values == matching_products("H100", values) and "NVIDIA-H100-80GB-HBM3" in values
    assert all("H100" in value for value in values)
