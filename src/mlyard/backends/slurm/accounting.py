"""Reading SLURM's answers: ``squeue`` lines, ``scontrol show job -o`` records and ``sacct -P``
tables, turned into job facts and usage (wall, CPU, peak memory, GPUs, queue wait, cost)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from mlyard.backends.slurm.states import SlurmJobFacts
from mlyard.models.tasks import Usage
from mlyard.settings import CostRates

#: ``squeue -o`` format the parser below expects: id, state, reason.
SQUEUE_FORMAT = "%i|%T|%r"
#: ``sacct --format`` columns the parser below expects.
SACCT_FIELDS = (
    "JobIDRaw,State,ExitCode,Submit,Start,End,ElapsedRaw,TotalCPU,MaxRSS,AllocTRES,"
    "ReqMem,TimelimitRaw"
)

_SCONTROL_FIELD = re.compile(r"(?:^|\s)([A-Za-z][\w/:.]*)=(\S*)")
_SIZE_SUFFIX = {"": 1024**2, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4, "P": 1024**5}


@dataclass(frozen=True)
class JobAccounting:
    """One job as SLURM accounted it."""

    facts: SlurmJobFacts
    submit: datetime | None = None
    start: datetime | None = None
    end: datetime | None = None
    cpu_seconds: float = 0.0
    peak_memory_bytes: int = 0
    allocated_cpus: float = 0.0
    allocated_memory_bytes: int = 0
    allocated_gpus: float = 0.0

    def usage(self, rates: CostRates) -> Usage:
        """Usage with queue wait and an estimated cost at the profile's billing rates.

        Cost follows how HPC centres bill: allocated CPUs, GPUs and memory times elapsed time.
        """
        wall = _seconds_between(self.start, self.end)
        queue = _seconds_between(self.submit, self.start) if self.start else None
        hours = wall / 3600
        cost = None
        if rates.cpu_hour or rates.gpu_hour or rates.memory_gb_hour:
            cost = round(
                hours
                * (
                    self.allocated_cpus * rates.cpu_hour
                    + self.allocated_gpus * rates.gpu_hour
                    + self.allocated_memory_bytes / 1e9 * rates.memory_gb_hour
                ),
                6,
            )
        return Usage(
            wall_seconds=wall,
            cpu_seconds=self.cpu_seconds,
            peak_memory_bytes=self.peak_memory_bytes,
            gpus=self.allocated_gpus,
            gpu_seconds=self.allocated_gpus * wall,
            queue_seconds=queue,
            cost=cost,
        )


def parse_squeue(output: str) -> dict[str, SlurmJobFacts]:
    """Facts by job id from ``squeue -h -o SQUEUE_FORMAT`` output."""
    facts: dict[str, SlurmJobFacts] = {}
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        job_id = parts[0].strip()
        facts[job_id] = SlurmJobFacts(job_id=job_id, state=parts[1], reason=parts[2] or None)
    return facts


def parse_scontrol_records(output: str) -> dict[str, JobAccounting]:
    """Accounting by job id from ``scontrol show job -o`` (one record per line)."""
    records: dict[str, JobAccounting] = {}
    for line in output.splitlines():
        fields = {m.group(1): m.group(2) for m in _SCONTROL_FIELD.finditer(line)}
        job_id = fields.get("JobId")
        if not job_id:
            continue
        exit_code, signal = parse_exit_code(fields.get("ExitCode"))
        tres = parse_tres(fields.get("AllocTRES") or fields.get("TRES") or "")
        facts = SlurmJobFacts(
            job_id=job_id,
            state=fields.get("JobState", "UNKNOWN"),
            reason=fields.get("Reason"),
            exit_code=exit_code,
            signal=signal,
            time_limit_seconds=parse_duration(fields.get("TimeLimit")),
            memory_bytes=parse_memory(fields.get("MinMemoryNode"))
            or int(tres.get("mem", 0))
            or None,
        )
        records[job_id] = JobAccounting(
            facts=facts,
            submit=parse_time(fields.get("SubmitTime")),
            start=parse_time(fields.get("StartTime")),
            end=parse_time(fields.get("EndTime")),
            allocated_cpus=float(tres.get("cpu", 0)),
            allocated_memory_bytes=int(tres.get("mem", 0)),
            allocated_gpus=float(tres.get("gres/gpu", 0)),
        )
    return records


def parse_sacct(output: str) -> dict[str, JobAccounting]:
    """Accounting by job id from ``sacct -n -P --format=SACCT_FIELDS``; step lines
    (``123.batch``) contribute their peak memory and CPU time to their job."""
    names = SACCT_FIELDS.split(",")
    jobs: dict[str, dict[str, str]] = {}
    peak_memory: dict[str, int] = {}
    for line in output.splitlines():
        values = line.split("|")
        if len(values) < len(names):
            continue
        row = dict(zip(names, values, strict=False))
        job_id, _, step = row["JobIDRaw"].partition(".")
        if step:
            rss = parse_memory(row["MaxRSS"]) or 0
            peak_memory[job_id] = max(peak_memory.get(job_id, 0), rss)
        else:
            jobs[job_id] = row
    records: dict[str, JobAccounting] = {}
    for job_id, row in jobs.items():
        exit_code, signal = parse_exit_code(row["ExitCode"])
        tres = parse_tres(row["AllocTRES"])
        limit_minutes = row["TimelimitRaw"]
        facts = SlurmJobFacts(
            job_id=job_id,
            state=row["State"],
            exit_code=exit_code,
            signal=signal,
            time_limit_seconds=float(limit_minutes) * 60 if limit_minutes.isdigit() else None,
            memory_bytes=parse_memory(row["ReqMem"]) or int(tres.get("mem", 0)) or None,
        )
        records[job_id] = JobAccounting(
            facts=facts,
            submit=parse_time(row["Submit"]),
            start=parse_time(row["Start"]),
            end=parse_time(row["End"]),
            cpu_seconds=parse_duration(row["TotalCPU"]) or 0.0,
            peak_memory_bytes=peak_memory.get(job_id, 0),
            allocated_cpus=float(tres.get("cpu", 0)),
            allocated_memory_bytes=int(tres.get("mem", 0)),
            allocated_gpus=float(tres.get("gres/gpu", 0)),
        )
    return records


def parse_exit_code(value: str | None) -> tuple[int | None, int | None]:
    """``'1:0'`` -> (1, None); ``'0:9'`` -> (0, 9): SLURM's exit status and signal."""
    if not value or ":" not in value:
        return None, None
    status, _, signal = value.partition(":")
    try:
        return int(status), (int(signal) or None)
    except ValueError:
        return None, None


def parse_tres(value: str) -> dict[str, float]:
    """``'cpu=2,mem=4G,node=1,gres/gpu=1'`` -> numbers (memory in bytes)."""
    result: dict[str, float] = {}
    for item in value.split(","):
        key, _, amount = item.partition("=")
        if not key or not amount:
            continue
        if key == "mem":
            result[key] = float(parse_memory(amount) or 0)
            continue
        try:
            result[key] = float(amount)
        except ValueError:
            continue
    return result


def parse_memory(value: str | None) -> int | None:
    """``'100M'``, ``'4G'``, ``'2048K'``, ``'4000Mn'`` (per node) -> bytes; MiB when unitless."""
    if not value:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGTP]?)[nc]?", value.strip())
    if not match:
        return None
    return int(float(match.group(1)) * _SIZE_SUFFIX[match.group(2)])


def parse_duration(value: str | None) -> float | None:
    """SLURM durations: ``'[D-]HH:MM:SS[.mmm]'``, ``'MM:SS.mmm'``, minutes; None for UNLIMITED."""
    if not value or value in ("UNLIMITED", "Partition_Limit", "INVALID", "NONE"):
        return None
    days = 0
    if "-" in value:
        day_text, _, value = value.partition("-")
        days = int(day_text)
    parts = value.split(":")
    try:
        numbers = [float(part) for part in parts]
    except ValueError:
        return None
    if len(numbers) == 1:  # bare minutes
        return days * 86400 + numbers[0] * 60
    while len(numbers) < 3:
        numbers.insert(0, 0.0)
    hours, minutes, seconds = numbers
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def parse_time(value: str | None) -> datetime | None:
    """SLURM timestamps (``2026-11-24T02:47:35``); None for ``Unknown``/``None``."""
    if not value or value in ("Unknown", "None", "N/A"):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _seconds_between(first: datetime | None, second: datetime | None) -> float:
    if first is None or second is None:
        return 0.0
    return max(0.0, (second - first).total_seconds())
