"""The embedded SQLite queue passes the consumer contract."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.contracts.consumer_contract import VISIBILITY, ConsumerContract


class TestSqliteQueue(ConsumerContract):
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
