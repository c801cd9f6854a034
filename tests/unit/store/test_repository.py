"""The metadata store on real SQLite: migrations, runs, lineage and the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.errors import NotFoundError, StoreError
from mlyard.models.tasks import ArtifactRef, MetricRecord
from mlyard.store.database import HEAD_REVISION, create_database_engine
from mlyard.store.repository import MetadataStore, RunRow, StepRunRow, utcnow
from mlyard.store.rows import CacheEntryRow


def _run(store: MetadataStore, run_id: str = "abcdef123456") -> None:
    store.add(
        RunRow(
            id=run_id,
            pipeline_name="p",
            state="PENDING",
            params={},
            graph={"steps": []},
            code_digest="sha256:" + "0" * 64,
            code_module="m",
            project_dir="/p",
            backend="local",
            use_cache=True,
            artifacts_url="/a",
            created_at=utcnow(),
            cancel_requested=False,
        ),
        StepRunRow(
            id=f"{run_id}.1",
            run_id=run_id,
            name="a",
            state="PENDING",
            failures=0,
            infrastructure_failures=0,
        ),
    )


def test_migrates_once_and_finds_runs_by_prefix(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'meta.db'}"
    store = MetadataStore(url)
    _run(store)
    assert MetadataStore(url).get_run("abcd").id == "abcdef123456"
    with create_database_engine(url).connect() as connection:
        from sqlalchemy import text

        assert connection.execute(text("select version_num from alembic_version")).scalar() == (
            HEAD_REVISION
        )
    with pytest.raises(NotFoundError, match="No run with id 'zzz'"):
        store.get_run("zzz")


def test_lineage_metrics_and_cache(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    _run(store)
    ref = ArtifactRef(
        digest="sha256:" + "1" * 64, materializer="json", type_name="int", size_bytes=1
    )
    with store.transaction() as connection:
        store.record_outputs(connection, "abcdef123456.1", {"output": ref}, {})
        store.record_metrics(
            connection, "abcdef123456.1", [MetricRecord(key="acc", value=0.9, timestamp_ms=1)], []
        )
        store.insert_in(
            connection,
            CacheEntryRow(
                cache_key="k",
                step_run_id="abcdef123456.1",
                run_id="abcdef123456",
                created_at=utcnow(),
            ),
        )
    assert store.outputs(["abcdef123456.1"]) == {"abcdef123456.1": {"output": ref}}
    assert [m.value for m in store.metrics(["abcdef123456.1"])] == [0.9]
    hit = store.lookup_cache("k")
    assert hit is not None and hit[1] == {"output": ref}
    store.forget_cache_entry("k")
    assert store.lookup_cache("k") is None


def test_the_same_content_and_cache_key_recorded_twice_keep_one_row(tmp_path: Path) -> None:
    store = MetadataStore(f"sqlite:///{tmp_path / 'meta.db'}")
    _run(store, "aaaaaa111111")
    _run(store, "bbbbbb222222")
    shared = ArtifactRef(
        digest="sha256:" + "2" * 64, materializer="json", type_name="int", size_bytes=1
    )
    for step_run in ("aaaaaa111111.1", "bbbbbb222222.1", "bbbbbb222222.1"):
        with store.transaction() as connection:
            # The same digest as an output and an input of one step, and of two runs' steps.
            store.record_outputs(connection, step_run, {"output": shared}, {"value": [shared]})
            store.remember_cache_entry(connection, "key", step_run, step_run.split(".")[0])
    assert store.outputs(["aaaaaa111111.1", "bbbbbb222222.1"]) == {
        "aaaaaa111111.1": {"output": shared},
        "bbbbbb222222.1": {"output": shared},
    }
    hit = store.lookup_cache("key")
    assert hit is not None and hit[0].id == "bbbbbb222222.1"  # the newest result wins


def test_bad_database_url_is_explained() -> None:
    with pytest.raises(StoreError, match="not valid"):
        MetadataStore("not a url")
    with pytest.raises(StoreError, match="Cannot reach the metadata database"):
        MetadataStore("postgresql://nobody@127.0.0.1:9/none")


def _open_and_list(url: str) -> None:
    MetadataStore(url).list_runs()


def test_processes_opening_a_new_database_at_once_do_not_race(tmp_path: Path) -> None:
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_open_and_list, args=(url,)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0, 0, 0]
