"""The embedded SQLite queue passes the consumer contract, publishing and acknowledging in
one transaction included."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path

import pytest

from mlyard.consumers.base import AtomicCompletion, Delivery
from mlyard.consumers.brokers import sqlite_queue
from mlyard.consumers.brokers.sqlite_queue import NEXT_READY, SCHEMA
from mlyard.consumers.urls import open_sink, open_source
from tests.contracts.consumer_contract import (
    VISIBILITY,
    AtomicCompletionContract,
)


class TestSqliteQueue(AtomicCompletionContract):
    RECEIVE_TIMEOUT = 5.0

    @pytest.fixture
    def topic(self) -> str:
        return f"in-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def source_url(self, tmp_path: Path, topic: str) -> str:
        return f"sqlite:///{tmp_path}/queue.db?topic={topic}&visibility={VISIBILITY}"

    @pytest.fixture
    def sink_url(self, tmp_path: Path, topic: str) -> str:
        return f"sqlite:///{tmp_path}/queue.db?topic={topic}"

    @pytest.fixture
    def unreachable_url(self, tmp_path: Path) -> str:
        not_a_directory = tmp_path / "a-file"
        not_a_directory.write_text("")
        return f"sqlite:///{not_a_directory}/queue.db?topic=in&group=g"


def test_publishing_and_acknowledging_together_is_all_or_nothing(tmp_path: Path) -> None:
    queue = f"sqlite:///{tmp_path}/queue.db"
    open_sink(f"{queue}?topic=in").publish([b"message"])
    source = open_source(f"{queue}?topic=in", "worker")
    assert isinstance(source, AtomicCompletion)
    [delivery] = source.receive(1, 1.0)
    not_a_row = Delivery(payload=b"", receipt="not-a-row-id")
    with pytest.raises(ValueError):
        source.publish_and_acknowledge(
            [(open_sink(f"{queue}?topic=out"), [b"result"])], [delivery, not_a_row]
        )
    assert open_source(f"{queue}?topic=out", "reader").receive(10, 0.1) == []
    assert source.lag() == 1  # still there, and comes back after its lease


def test_leasing_reads_in_index_order_without_sorting_the_backlog(tmp_path: Path) -> None:
    # A queue file made by an earlier version, with the index that made leases sort.
    database = tmp_path / "queue.db"
    with sqlite3.connect(database) as old:
        old.executescript(SCHEMA.split("DROP INDEX")[0])
        old.execute("CREATE INDEX messages_ready ON messages (topic, leased_until, id)")
    source = open_source(f"sqlite:///{database}?topic=in", "worker")
    with sqlite3.connect(database) as db:
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='index'")
        }
        plan = " ".join(
            row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {NEXT_READY}", ("in", 0, 64))
        )
    assert indexes == {"messages_in_order"}
    assert "messages_in_order" in plan and "TEMP B-TREE" not in plan
    source.close()


def test_a_transaction_waits_for_another_process_holding_the_lock(tmp_path: Path) -> None:
    queue = f"sqlite:///{tmp_path}/queue.db?topic=in"
    sink = open_sink(queue)
    other = sqlite3.connect(tmp_path / "queue.db", isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another replica, in the middle of its transaction
    threading.Timer(0.3, lambda: other.execute("COMMIT")).start()
    sink.publish([b"message"])  # waits for the lock, then succeeds
    assert open_source(queue, "reader").receive(10, 0.5)[0].payload == b"message"
    other.close()


def test_a_lock_held_too_long_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_queue, "LOCK_WAIT_SECONDS", 0.2)
    queue = f"sqlite:///{tmp_path}/queue.db?topic=in"
    sink = open_sink(queue)
    other = sqlite3.connect(tmp_path / "queue.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        sink.publish([b"message"])
    other.execute("ROLLBACK")
    other.close()


def test_a_commit_that_fails_leaves_no_transaction_open() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("PRAGMA foreign_keys = ON")
    db.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
    )
    with pytest.raises(sqlite3.IntegrityError), sqlite_queue._transaction(db) as transaction:
        transaction.execute("INSERT INTO child VALUES (42)")  # refused only at COMMIT
    assert not db.in_transaction  # the next transaction of this connection can begin
