"""The records of services running on this machine (``MLYARD_HOME/services/running``): this
process registers itself as real services do; records of processes that are gone (or whose pid
another process has now) are removed when read; names are numbered or refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from mlyard.backends.local.processes import started_since_boot
from mlyard.errors import ConfigError, NotFoundError
from mlyard.services.local_services import (
    LocalServiceRecord,
    list_local_services,
    local_service_logs,
    registered_service,
    registry_directory,
)
from mlyard.settings import Settings, load_settings

MODEL = "models:/Digits_Classifier/1"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return load_settings(home=tmp_path / "home")


def _register(settings: Settings, name: str | None = None):  # type: ignore[no-untyped-def]
    return registered_service(
        settings,
        name=name,
        kind="server",
        model=MODEL,
        replicas=1,
        gpus=0.0,
        address="http://127.0.0.1:8080",
    )


def _write_record(settings: Settings, name: str, pid: int, pid_started: float) -> Path:
    directory = registry_directory(settings)
    directory.mkdir(parents=True, exist_ok=True)
    record = LocalServiceRecord(
        name=name,
        kind="server",
        model=MODEL,
        pid=pid,
        pid_started=pid_started,
        replicas=1,
        address="http://127.0.0.1:1",
        started_at=datetime.now(UTC),
        log=str(settings.home / f"{name}.log"),
    )
    path = directory / f"{name}.json"
    path.write_text(record.model_dump_json())
    return path


def test_a_running_service_is_listed_and_its_record_goes_with_it(settings: Settings) -> None:
    with _register(settings) as record:
        assert record is not None and record.name == "digits-classifier"
        (view,) = list_local_services(settings)
        assert (view.name, view.backend, view.pid) == ("digits-classifier", "local", record.pid)
        assert view.model == MODEL and view.address == "http://127.0.0.1:8080"
        os.write(1, b"a line for the log\n")  # fd 1, as a replica process writes it
    assert list_local_services(settings) == []
    assert not (registry_directory(settings) / "digits-classifier.json").exists()
    # Its output was copied to the service's log while it ran.
    assert "a line for the log" in Path(record.log).read_text()


def test_a_second_unnamed_service_of_a_model_is_numbered(settings: Settings) -> None:
    with _register(settings) as first, _register(settings) as second, _register(settings) as third:
        assert first is not None and second is not None and third is not None
        assert [first.name, second.name, third.name] == [
            "digits-classifier",
            "digits-classifier-2",
            "digits-classifier-3",
        ]
        names = sorted(view.name for view in list_local_services(settings))
        assert names == ["digits-classifier", "digits-classifier-2", "digits-classifier-3"]
    # The first free name is taken again once its service ended.
    with _register(settings) as again:
        assert again is not None and again.name == "digits-classifier"


def test_a_name_that_runs_already_is_refused_with_the_fix(settings: Settings) -> None:
    with _register(settings, "digits") as running:
        with pytest.raises(ConfigError) as refused, _register(settings, "digits"):
            pass
        # The refused one recorded nothing: the running service's record is still its own.
        (view,) = list_local_services(settings)
        assert running is not None and view.pid == running.pid
    assert "A server service named 'digits' runs already on this machine" in refused.value.message
    assert "mlyard services stop digits" in (refused.value.hint or "")


def test_an_invalid_name_is_refused_before_anything_is_recorded(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="cannot name a service"), _register(settings, "Bad_Name"):
        pass
    assert not list(registry_directory(settings).glob("*.json"))


def test_the_record_of_a_dead_process_is_removed(settings: Settings) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = _write_record(settings, "ghost", dead.pid, 1.0)
    assert list_local_services(settings) == []
    assert not path.exists()
    with pytest.raises(NotFoundError, match="No service named 'ghost'"):
        list_local_services(settings, "ghost")


def test_a_reused_pid_is_not_the_recorded_process(settings: Settings) -> None:
    # This process is alive, but started at another time than the record says.
    me = psutil.Process().pid
    path = _write_record(settings, "reused", me, started_since_boot(me) - 1000.0)
    assert list_local_services(settings) == []
    assert not path.exists()
    alive = _write_record(settings, "alive", me, started_since_boot(me))
    assert [view.name for view in list_local_services(settings)] == ["alive"]
    alive.unlink()


def test_an_unreadable_record_is_removed(settings: Settings) -> None:
    directory = registry_directory(settings)
    directory.mkdir(parents=True)
    (directory / "broken.json").write_text("{not json")
    (directory / "partial.json").write_text(json.dumps({"name": "partial"}))
    assert list_local_services(settings) == []
    assert list(directory.glob("*.json")) == []


def test_inside_a_pod_nothing_is_recorded(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with _register(settings) as record:
        assert record is None
        assert list_local_services(settings) == []


def test_the_log_of_a_running_service_has_what_it_wrote(settings: Settings) -> None:
    with _register(settings, "short") as record:
        assert record is not None
        os.write(2, b"first\nsecond\n")
        deadline = time.monotonic() + 10
        while "second" not in Path(record.log).read_text() and time.monotonic() < deadline:
            time.sleep(0.05)  # the copier thread writes the log as the pipe delivers
        lines = local_service_logs(settings, "short", follow=False)
        assert [line for line in lines if line in ("first", "second")] == ["first", "second"]
