"""Leasing GPUs to local steps, over a constructed inventory."""

from __future__ import annotations

import threading

import pytest

from mlyard.backends.local.gpu_allocator import GpuAllocator, GpuLease
from mlyard.errors import ResourceError
from mlyard.models.resources import Resources
from mlyard.platform.gpu_inventory import GpuDevice

GIB = 1024**3
GB = 1000**3


def a10(index: int) -> GpuDevice:
    return GpuDevice(index, f"GPU-a10-{index}", "NVIDIA A10", 24 * GIB)


def a100(index: int) -> GpuDevice:
    return GpuDevice(index, f"GPU-a100-{index}", "NVIDIA A100-SXM4-80GB", 80 * GIB)


@pytest.fixture
def two_a10() -> GpuAllocator:
    return GpuAllocator([a10(0), a10(1)])


# -- leasing ---------------------------------------------------------------------------------


def test_no_gpu_request_gets_an_empty_lease_that_hides_all_devices(two_a10: GpuAllocator) -> None:
    lease = two_a10.try_lease("cpu-step", Resources())
    assert lease == GpuLease("cpu-step", (), 0.0, None)
    assert lease.environment() == {"CUDA_VISIBLE_DEVICES": ""}
    # it holds nothing: both devices can still be leased whole
    assert two_a10.try_lease("whole", Resources(gpus=2)) is not None


def test_whole_gpus_take_free_devices(two_a10: GpuAllocator) -> None:
    lease = two_a10.try_lease("train", Resources(gpus=2))
    assert lease is not None
    assert lease.device_indices == (0, 1)
    assert lease.share == 1.0
    assert lease.cuda_visible_devices == "0,1"
    environment = lease.environment()
    assert environment["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert environment["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "MLYARD_GPU_SHARE" not in environment
    assert "PYTORCH_CUDA_ALLOC_CONF" not in environment


def test_two_halves_share_one_device(two_a10: GpuAllocator) -> None:
    first = two_a10.try_lease("a", Resources(gpus=0.5))
    second = two_a10.try_lease("b", Resources(gpus=0.5))
    assert first is not None and second is not None
    assert first.device_indices == second.device_indices == (0,)
    assert first.environment() == {
        "CUDA_VISIBLE_DEVICES": "0",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "MLYARD_GPU_SHARE": "0.5",
    }
    # device 1 stayed whole
    whole = two_a10.try_lease("c", Resources(gpus=1))
    assert whole is not None and whole.device_indices == (1,)


def test_three_halves_pack_onto_two_devices(two_a10: GpuAllocator) -> None:
    leases = [two_a10.try_lease(name, Resources(gpus=0.5)) for name in "abc"]
    assert [lease.device_indices for lease in leases if lease] == [(0,), (0,), (1,)]
    assert two_a10.try_lease("d", Resources(gpus=1)) is None


def test_best_fit_prefers_the_fullest_device_that_still_fits(two_a10: GpuAllocator) -> None:
    assert two_a10.try_lease("big", Resources(gpus=0.75)) is not None  # device 0: 0.25 left
    assert two_a10.try_lease("mid", Resources(gpus=0.5)) is not None  # device 1: 0.5 left
    quarter = two_a10.try_lease("small", Resources(gpus=0.25))
    assert quarter is not None and quarter.device_indices == (0,)


def test_shares_that_add_up_to_one_fill_a_device_despite_float_rounding() -> None:
    allocator = GpuAllocator([a10(0)])
    leases = [allocator.try_lease(str(i), Resources(gpus=0.1)) for i in range(10)]
    assert all(lease is not None and lease.device_indices == (0,) for lease in leases)
    assert allocator.try_lease("eleventh", Resources(gpus=0.1)) is None


def test_gpu_memory_is_reserved_on_the_shared_device(two_a10: GpuAllocator) -> None:
    first = two_a10.try_lease("a", Resources(gpus=0.25, gpu_memory=16 * GIB))
    assert first is not None and first.device_indices == (0,) and first.memory_bytes == 16 * GIB
    # device 0 has 0.75 of its share but only 8 GiB of memory left
    second = two_a10.try_lease("b", Resources(gpus=0.25, gpu_memory=10 * GIB))
    assert second is not None and second.device_indices == (1,)
    third = two_a10.try_lease("c", Resources(gpus=0.25, gpu_memory=8 * GIB))
    assert third is not None and third.device_indices == (0,)


def test_gpu_memory_larger_than_what_is_left_waits(two_a10: GpuAllocator) -> None:
    assert two_a10.try_lease("a", Resources(gpus=0.5, gpu_memory=20 * GIB)) is not None
    assert two_a10.try_lease("b", Resources(gpus=0.5, gpu_memory=20 * GIB)) is not None
    assert two_a10.try_lease("c", Resources(gpus=0.25, gpu_memory=20 * GIB)) is None


def test_a_share_without_gpu_memory_reserves_its_share_of_memory(two_a10: GpuAllocator) -> None:
    assert two_a10.try_lease("a", Resources(gpus=0.5)) is not None  # 12 GiB of device 0
    lease = two_a10.try_lease("b", Resources(gpus=0.25, gpu_memory=13 * GIB))
    assert lease is not None and lease.device_indices == (1,)


def test_gpu_memory_alone_means_a_share_sized_by_memory() -> None:
    # Resources' validator refuses gpu_memory without gpus; the allocator still handles it.
    allocator = GpuAllocator([a10(0)])
    request = Resources.model_construct(gpus=0.0, gpu_memory=6 * GIB, gpu_type=None)
    lease = allocator.try_lease("by-memory", request)
    assert lease is not None
    assert lease.device_indices == (0,) and lease.share == pytest.approx(0.25)
    assert lease.memory_bytes == 6 * GIB


def test_gpu_type_picks_matching_devices_case_insensitively() -> None:
    allocator = GpuAllocator([a10(0), a100(1)])
    lease = allocator.try_lease("t", Resources(gpus=1, gpu_type="a100"))
    assert lease is not None and lease.device_indices == (1,)
    assert allocator.try_lease("u", Resources(gpus=0.5, gpu_type="A100")) is None  # busy


def test_whole_gpus_take_the_smallest_devices_that_fit() -> None:
    allocator = GpuAllocator([a100(0), a10(1)])
    lease = allocator.try_lease("small", Resources(gpus=1))
    assert lease is not None and lease.device_indices == (1,)
    big = allocator.try_lease("big", Resources(gpus=1, gpu_memory=40 * GIB))
    assert big is not None and big.device_indices == (0,) and big.memory_bytes == 40 * GIB


def test_busy_devices_give_none_until_released(two_a10: GpuAllocator) -> None:
    assert two_a10.try_lease("first", Resources(gpus=2)) is not None
    assert two_a10.try_lease("second", Resources(gpus=1)) is None
    assert two_a10.try_lease("half", Resources(gpus=0.5)) is None
    two_a10.release("first")
    lease = two_a10.try_lease("second", Resources(gpus=1))
    assert lease is not None and lease.device_indices == (0,)


def test_a_whole_gpu_waits_for_shares_on_its_device_to_end() -> None:
    allocator = GpuAllocator([a10(0)])
    assert allocator.try_lease("half", Resources(gpus=0.5)) is not None
    assert allocator.try_lease("whole", Resources(gpus=1)) is None
    allocator.release("half")
    assert allocator.try_lease("whole", Resources(gpus=1)) is not None


def test_leasing_the_same_id_twice_returns_the_same_lease(two_a10: GpuAllocator) -> None:
    first = two_a10.try_lease("job", Resources(gpus=1))
    again = two_a10.try_lease("job", Resources(gpus=1))
    assert first is not None and again == first
    other = two_a10.try_lease("other", Resources(gpus=1))
    assert other is not None and other.device_indices == (1,)


def test_release_is_idempotent(two_a10: GpuAllocator) -> None:
    assert two_a10.try_lease("job", Resources(gpus=0.5)) is not None
    two_a10.release("job")
    two_a10.release("job")
    two_a10.release("never-leased")
    assert two_a10.try_lease("all", Resources(gpus=2)) is not None


def test_restore_re_registers_a_running_lease(two_a10: GpuAllocator) -> None:
    two_a10.restore(GpuLease("running", (1,), 0.5, None))
    two_a10.restore(GpuLease("running", (1,), 0.5, None))  # restoring twice counts once
    assert two_a10.try_lease("whole", Resources(gpus=2)) is None
    half = two_a10.try_lease("half", Resources(gpus=0.5))
    assert half is not None and half.device_indices == (1,)  # packs beside the restored one
    assert two_a10.try_lease("running", Resources(gpus=1)) == GpuLease("running", (1,), 0.5, None)
    two_a10.release("running")
    two_a10.release("half")
    assert two_a10.try_lease("whole", Resources(gpus=2)) is not None


def test_restore_of_devices_the_machine_lacks_is_tolerated(two_a10: GpuAllocator) -> None:
    two_a10.restore(GpuLease("gone", (7,), 1.0, None))
    assert two_a10.try_lease("whole", Resources(gpus=2)) is not None
    two_a10.release("gone")


def test_concurrent_leases_never_share_a_whole_device() -> None:
    allocator = GpuAllocator([a10(index) for index in range(4)])
    leases: list[GpuLease | None] = []
    lock = threading.Lock()

    def lease(name: str) -> None:
        result = allocator.try_lease(name, Resources(gpus=1))
        with lock:
            leases.append(result)

    threads = [threading.Thread(target=lease, args=(f"job-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = [lease.device_indices[0] for lease in leases if lease is not None]
    assert sorted(granted) == [0, 1, 2, 3]


# -- what can never fit ----------------------------------------------------------------------


def test_describe_groups_identical_devices() -> None:
    assert GpuAllocator([]).describe() == "this machine has no NVIDIA GPU"
    allocator = GpuAllocator([a10(0), a10(1), a100(2)])
    assert allocator.describe() == (
        "this machine has 2 x NVIDIA A10 (24 GB), 1 x NVIDIA A100-SXM4-80GB (80 GB)"
    )


def test_requests_without_gpus_are_always_satisfiable() -> None:
    GpuAllocator([]).check_satisfiable(Resources(cpus=2))


@pytest.mark.parametrize("gpus", [0.5, 1, 2])
def test_any_gpu_on_a_machine_without_gpus_is_refused(gpus: float) -> None:
    with pytest.raises(ResourceError) as caught:
        GpuAllocator([]).check_satisfiable(Resources(gpus=gpus))
    assert "this machine has no NVIDIA GPU" in caught.value.message
    assert f"{gpus:g} GPU" in caught.value.message
    assert caught.value.hint is not None and "--backend" in caught.value.hint


def test_more_whole_gpus_than_devices_is_refused(two_a10: GpuAllocator) -> None:
    with pytest.raises(ResourceError) as caught:
        two_a10.check_satisfiable(Resources(gpus=4))
    assert caught.value.message == (
        "The step asks for 4 GPUs, but this machine has 2 x NVIDIA A10 (24 GB)."
    )
    assert caught.value.hint is not None and "Lower the GPU request" in caught.value.hint


def test_gpu_memory_larger_than_every_device_is_refused(two_a10: GpuAllocator) -> None:
    with pytest.raises(ResourceError) as caught:
        two_a10.check_satisfiable(Resources(gpus=0.5, gpu_memory=40 * GB))
    assert caught.value.message == (
        "The step asks for 0.5 GPU with 40.0GB of GPU memory each, but this machine has "
        "2 x NVIDIA A10 (24 GB); 40.0GB of GPU memory is more than the largest device holds "
        "(25.8GB)."
    )


def test_unknown_gpu_type_is_refused(two_a10: GpuAllocator) -> None:
    with pytest.raises(ResourceError) as caught:
        two_a10.check_satisfiable(Resources(gpus=1, gpu_type="h100"))
    assert caught.value.message == (
        "The step asks for 1 GPU of type 'h100', but this machine has 2 x NVIDIA A10 (24 GB); "
        "none of them is a 'h100'."
    )


def test_more_gpus_of_a_type_than_the_machine_has_is_refused() -> None:
    allocator = GpuAllocator([a10(0), a100(1)])
    with pytest.raises(ResourceError) as caught:
        allocator.check_satisfiable(Resources(gpus=2, gpu_type="a100"))
    assert caught.value.message.endswith("; only 1 match.")


def test_satisfiable_requests_pass_even_when_devices_are_busy(two_a10: GpuAllocator) -> None:
    assert two_a10.try_lease("all", Resources(gpus=2)) is not None
    for request in (
        Resources(gpus=2),
        Resources(gpus=0.5, gpu_memory=20 * GIB),
        Resources(gpus=1, gpu_type="A10"),
    ):
        two_a10.check_satisfiable(request)


def test_mixed_whole_and_fractional_gpus_are_refused_by_resources() -> None:
    with pytest.raises(ValueError, match="mixes whole and fractional"):
        Resources(gpus=1.5)


# -- lazy inventory --------------------------------------------------------------------------


def test_the_inventory_is_read_only_when_a_step_wants_a_gpu() -> None:
    calls: list[int] = []

    def discover() -> list[GpuDevice]:
        calls.append(1)
        return [a10(0)]

    allocator = GpuAllocator(discover)
    allocator.check_satisfiable(Resources(cpus=2))
    assert allocator.try_lease("cpu-step", Resources()) is not None
    allocator.release("cpu-step")
    assert calls == []  # CPU-only runs never load NVML
    assert allocator.try_lease("gpu-step", Resources(gpus=1)) is not None
    assert allocator.try_lease("second", Resources(gpus=1)) is None  # busy: the one device
    assert calls == [1]


def test_a_restored_lease_reads_the_inventory_first() -> None:
    allocator = GpuAllocator(lambda: [a10(0), a10(1)])
    allocator.restore(GpuLease("running", (1,), 1.0, None))
    assert allocator.try_lease("whole", Resources(gpus=2)) is None
    assert allocator.try_lease("one", Resources(gpus=1)) is not None
