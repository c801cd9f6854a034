"""The embedded queue: a SQLite file that several worker processes share, no server to run.

A topic is a set of rows. ``receive`` leases rows to one consumer for ``visibility`` seconds
(default 30) and counts the delivery; ``acknowledge`` deletes them; a lease that runs out (the
worker died) makes the row visible again: at-least-once. ``release`` ends the lease at once.
Results published to topics of the same file are inserted in the transaction that deletes
their messages (``publish_and_acknowledge``): a crash leaves either both or neither.

Replicas share the file, so a transaction may find another process holding the write lock.
The queue tries again after 0.1 ms, doubling up to 2 ms, for at most a minute. SQLite's own
busy handler sleeps 1, 2, 5, 10 ms ... between tries while a queue transaction takes ~0.2 ms:
two replicas spent much of their time asleep (no-op workers, 20,000 messages: 49,800 msg/s
with SQLite's handler, 67,900 with these retries; medians of 5).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from mlyard.consumers.base import Delivery, Sink, outputs_on_this_broker
from mlyard.consumers.urls import BrokerUrl
from mlyard.errors import ConfigError

# Leasing walks a topic's messages in id order and skips those leased (the index holds
# leased_until, so no row is read to skip one): its cost follows the messages in flight, not the
# backlog. The former index (topic, leased_until, id) made SQLite sort the whole backlog on
# every lease, 10 ms per batch behind 100,000 messages; it is dropped from existing files.
SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    leased_until REAL NOT NULL DEFAULT 0,
    leased_by TEXT
);
DROP INDEX IF EXISTS messages_ready;
CREATE INDEX IF NOT EXISTS messages_in_order ON messages (topic, id, leased_until);
"""
#: The oldest messages of a topic that no consumer holds (by index, see SCHEMA).
NEXT_READY = (
    "SELECT id, payload, attempts FROM messages "
    "WHERE topic = ? AND leased_until <= ? ORDER BY id LIMIT ?"
)
POLL_SECONDS = 0.02
#: How long a transaction waits for another process's to end (sqlite3's default is 5 s).
LOCK_WAIT_SECONDS = 60.0
#: The first and the longest pause between tries for the write lock.
LOCK_RETRY_SECONDS = (0.0001, 0.002)
T = TypeVar("T")


def _connect(url: BrokerUrl) -> sqlite3.Connection:
    if not url.path or url.path == "/":
        raise ConfigError(
            f"The queue URL {url.redacted} names no database file.",
            hint="Use sqlite:///path/to/queue.db?topic=NAME (three slashes, then the path).",
        )
    path = Path(url.path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are begun explicitly (see _transaction).
        connection = sqlite3.connect(
            path, timeout=LOCK_WAIT_SECONDS, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        # From here on a busy file is retried by _while_locked, not by SQLite's handler.
        connection.execute("PRAGMA busy_timeout = 0")
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"The queue {url.redacted} cannot be opened: {exc}",
            hint="Point the URL at a writable file path (its directory is created if missing).",
        ) from exc
    return connection


def _while_locked(attempt: Callable[[], T]) -> T:
    """``attempt()``, tried again while another process holds the file's lock."""
    pause, longest = LOCK_RETRY_SECONDS
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            return attempt()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, longest)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    # BEGIN IMMEDIATE takes the write lock at once, so two workers never lease the same row.
    _while_locked(lambda: db.execute("BEGIN IMMEDIATE"))
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # some errors (a full disk) have rolled it back already
            db.execute("ROLLBACK")
        raise


class SqliteQueueSource:
    def __init__(self, url: BrokerUrl, consumer_name: str) -> None:
        self.url = url
        self.topic = url.option("topic")
        self.consumer_name = consumer_name
        self.visibility = float(url.options.get("visibility", "30"))
        self._db = _connect(url)
        self.file = Path(url.path).resolve()

    def check_reachable(self) -> None:
        _while_locked(lambda: self._db.execute("SELECT 1").fetchone())

    def receive(self, max_messages: int, timeout: float) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while True:
            deliveries = self._lease(max_messages)
            if deliveries or time.monotonic() >= deadline:
                return deliveries
            time.sleep(POLL_SECONDS)

    def _lease(self, limit: int) -> list[Delivery]:
        now = time.time()
        with _transaction(self._db) as db:
            rows = db.execute(NEXT_READY, (self.topic, now, limit)).fetchall()
            if rows:
                db.executemany(
                    "UPDATE messages SET attempts = attempts + 1, leased_until = ?, "
                    "leased_by = ? WHERE id = ?",
                    [(now + self.visibility, self.consumer_name, row[0]) for row in rows],
                )
        return [
            Delivery(payload=bytes(payload), receipt=str(row_id), attempts=attempts + 1)
            for row_id, payload, attempts in rows
        ]

    def acknowledge(self, deliveries: Sequence[Delivery]) -> None:
        # One transaction for the batch: in autocommit mode each row would be a commit.
        if deliveries:
            with _transaction(self._db) as db:
                _delete(db, deliveries)

    def publish_and_acknowledge(
        self, outputs: Sequence[tuple[Sink, Sequence[bytes]]], deliveries: Sequence[Delivery]
    ) -> bool:
        mine = outputs_on_this_broker(outputs, SqliteQueueSink, lambda s: s.file == self.file)
        if mine is None:
            return False
        with _transaction(self._db) as db:
            for sink, payloads in mine:
                _insert(db, sink.topic, payloads)
            _delete(db, deliveries)
        return True

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            with _transaction(self._db) as db:
                db.executemany(
                    "UPDATE messages SET leased_until = 0, leased_by = NULL WHERE id = ?",
                    [(int(d.receipt),) for d in deliveries],
                )

    def lag(self) -> int | None:
        statement = "SELECT COUNT(*) FROM messages WHERE topic = ?"
        row = _while_locked(lambda: self._db.execute(statement, (self.topic,)).fetchone())
        return int(row[0])

    def close(self) -> None:
        self._db.close()


class SqliteQueueSink:
    def __init__(self, url: BrokerUrl) -> None:
        self.url = url
        self.topic = url.option("topic")
        self._db = _connect(url)
        self.file = Path(url.path).resolve()

    def check_reachable(self) -> None:
        _while_locked(lambda: self._db.execute("SELECT 1").fetchone())

    def publish(self, payloads: Sequence[bytes]) -> None:
        with _transaction(self._db) as db:
            _insert(db, self.topic, payloads)

    def close(self) -> None:
        self._db.close()


def _insert(db: sqlite3.Connection, topic: str, payloads: Sequence[bytes]) -> None:
    db.executemany(
        "INSERT INTO messages (topic, payload) VALUES (?, ?)",
        [(topic, payload) for payload in payloads],
    )


def _delete(db: sqlite3.Connection, deliveries: Sequence[Delivery]) -> None:
    db.executemany("DELETE FROM messages WHERE id = ?", [(int(d.receipt),) for d in deliveries])
