"""Parsing squeue, scontrol and sacct output into facts, usage and cost."""

from __future__ import annotations

import pytest

from mlyard.backends.slurm.accounting import (
    parse_duration,
    parse_exit_code,
    parse_memory,
    parse_sacct,
    parse_scontrol_records,
    parse_squeue,
    parse_tres,
)
from mlyard.settings import CostRates

# Lines as SLURM 22.05 prints them (scontrol show job -o, sacct -n -P).
SCONTROL = (
    "JobId=42 JobName=mlyard-a.1.1 UserId=me(1001) JobState=TIMEOUT Reason=TimeLimit "
    "Dependency=(null) ExitCode=0:15 RunTime=00:01:01 TimeLimit=00:01:00 "
    "SubmitTime=2026-11-24T02:47:30 StartTime=2026-11-24T02:47:35 EndTime=2026-11-24T02:48:36 "
    "NumNodes=1 NumCPUs=2 TRES=cpu=2,mem=4G,node=1,billing=2,gres/gpu=1 MinMemoryNode=4G\n"
)
SACCT = (
    "7|OUT_OF_MEMORY|0:125|2026-11-24T03:00:00|2026-11-24T03:00:10|2026-11-24T03:01:10|60|"
    "00:45.500||cpu=4,mem=8G,node=1|8G|60\n"
    "7.batch|OUT_OF_MEMORY|0:125|2026-11-24T03:00:10|2026-11-24T03:00:10|2026-11-24T03:01:10|60|"
    "00:45.500|9000M|cpu=4,mem=8G,node=1||\n"
    "7.extern|COMPLETED|0:0|2026-11-24T03:00:10|2026-11-24T03:00:10|2026-11-24T03:01:10|60|"
    "00:00:00|1000K|cpu=4,mem=8G,node=1||\n"
)


def test_squeue_lines() -> None:
    facts = parse_squeue("12|PENDING|Priority\n13|RUNNING|None\n\ngarbage\n")
    assert facts["12"].state == "PENDING" and facts["12"].reason == "Priority"
    assert set(facts) == {"12", "13"}


def test_scontrol_record_gives_facts_and_usage() -> None:
    record = parse_scontrol_records(SCONTROL)["42"]
    assert record.facts.state == "TIMEOUT"
    assert record.facts.time_limit_seconds == 60
    assert record.facts.memory_bytes == 4 * 1024**3
    assert record.facts.signal == 15
    usage = record.usage(CostRates(cpu_hour=1.0, gpu_hour=10.0))
    assert usage.wall_seconds == 61
    assert usage.queue_seconds == 5
    assert usage.gpus == 1
    assert usage.cost == pytest.approx(61 / 3600 * (2 * 1.0 + 1 * 10.0), abs=1e-6)


def test_sacct_rows_merge_steps_into_their_job() -> None:
    record = parse_sacct(SACCT)["7"]
    assert record.facts.state == "OUT_OF_MEMORY"
    assert record.facts.memory_bytes == 8 * 1024**3
    assert record.facts.time_limit_seconds == 3600
    assert record.peak_memory_bytes == 9000 * 1024**2
    assert record.cpu_seconds == pytest.approx(45.5)
    usage = record.usage(CostRates())
    assert usage.cost is None
    assert usage.wall_seconds == 60 and usage.queue_seconds == 10


def test_small_parsers() -> None:
    assert parse_exit_code("1:0") == (1, None)
    assert parse_exit_code("0:9") == (0, 9)
    assert parse_exit_code(None) == (None, None)
    assert parse_tres("cpu=2,mem=512M,gres/gpu:a100=1,gres/gpu=1") == {
        "cpu": 2.0,
        "mem": 512 * 1024**2,
        "gres/gpu:a100": 1.0,
        "gres/gpu": 1.0,
    }
    assert parse_memory("4000Mn") == 4000 * 1024**2
    assert parse_memory("junk") is None
    assert parse_duration("1-02:00:00") == 93600
    assert parse_duration("05:30.5") == 330.5
    assert parse_duration("30") == 1800
    assert parse_duration("UNLIMITED") is None
