"""Replica plumbing that needs no model: CPU environments, sockets, shared readiness."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mlyard.errors import ResourceError
from mlyard.platform.gpu_inventory import GpuDevice
from mlyard.serving.replicas import SharedReadiness, bind_socket, lease_devices


def test_without_gpus_every_replica_runs_on_cpu() -> None:
    environments, release = lease_devices(0.0, 3)
    assert environments == [{"CUDA_VISIBLE_DEVICES": ""}] * 3
    release()


def test_a_gpu_request_the_machine_lacks_names_the_replica_and_the_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("mlyard.platform.gpu_inventory.discover_gpus", lambda: [])
    with pytest.raises(ResourceError) as refused:
        lease_devices(1.0, 2)
    assert str(refused.value.message).startswith("Each model server replica asks for 1 GPU")
    assert "--gpus" in (refused.value.hint or "")
    with pytest.raises(ResourceError, match=r"Each consumer replica asks for 0\.5 GPU"):
        lease_devices(0.5, 1, requester="Each consumer replica")


def _two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [GpuDevice(index, f"GPU-l4-{index}", "NVIDIA L4", 24 * 2**30) for index in (0, 1)]
    monkeypatch.setattr("mlyard.platform.gpu_inventory.discover_gpus", lambda: devices)


def test_each_replica_leases_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _two_gpus(monkeypatch)
    environments, release = lease_devices(1.0, 2)
    # Device indexes in PCI bus order, as nvidia-smi numbers them.
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for env in environments) == ["0", "1"]
    assert all(env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" for env in environments)
    release()
    again, release_again = lease_devices(1.0, 2)  # released: both fit again
    release_again()
    assert len(again) == 2


def test_fractions_put_several_replicas_on_one_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _two_gpus(monkeypatch)
    environments, release = lease_devices(0.5, 4)
    assert sorted(env["CUDA_VISIBLE_DEVICES"] for env in environments) == ["0", "0", "1", "1"]
    assert all(env["MLYARD_GPU_SHARE"] == "0.5" for env in environments)
    release()


def test_more_replicas_than_the_gpus_hold_is_refused_and_leases_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _two_gpus(monkeypatch)
    with pytest.raises(ResourceError, match="Only 2 of 3 replicas fit"):
        lease_devices(1.0, 3)
    environments, release = lease_devices(1.0, 2)  # the refused call released its two leases
    release()
    assert len(environments) == 2


def test_replicas_share_a_port_with_reuse_port() -> None:
    first = bind_socket("127.0.0.1", 0, reuse_port=True)
    port = first.getsockname()[1]
    second = bind_socket("127.0.0.1", port, reuse_port=True)
    try:
        assert second.getsockname()[1] == port
    finally:
        first.close()
        second.close()


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(ResourceError, match="Could not bind") as caught:
            bind_socket("127.0.0.1", taken.getsockname()[1], reuse_port=False)
        assert caught.value.hint is not None and "--port" in caught.value.hint


def test_shared_readiness_counts_ready_replicas(tmp_path: Path) -> None:
    readiness = SharedReadiness(tmp_path, expected=2)
    readiness.mark_ready()
    assert not readiness.all_ready()
    (tmp_path / "other-replica").touch()
    assert readiness.all_ready()
