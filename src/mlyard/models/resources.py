"""What a step needs to run: the portable resource request every backend translates."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_PATTERN = re.compile(r"(\d+(?:\.\d+)?)\s*(d|h|m|min|s|sec)?", re.IGNORECASE)
_DURATION_SECONDS = {"d": 86400, "h": 3600, "m": 60, "min": 60, "s": 1, "sec": 1, None: 1}


def parse_size(value: object) -> int | None:
    """Bytes from ``"4GB"``, ``"512MiB"``, ``"10G"`` or an int; ``None`` stays ``None``."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        match = _SIZE_PATTERN.match(value)
        if match and match.group(2).lower() in _SIZE_UNITS:
            return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ValueError(f"{value!r} is not a size; write it like '4GB', '512MiB' or a number of bytes")


def parse_duration(value: object) -> float | None:
    """Seconds from ``"2h"``, ``"1h30m"``, ``"90s"``, ``"01:30:00"``, a number or a timedelta."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(:\d{1,2}){1,2}", text):
            parts = [int(p) for p in text.split(":")]
            while len(parts) < 3:
                parts.insert(0, 0)
            return float(parts[0] * 3600 + parts[1] * 60 + parts[2])
        pieces = _DURATION_PATTERN.findall(text)
        if pieces and "".join(n + (u or "") for n, u in pieces) == re.sub(r"\s+", "", text):
            return float(sum(float(n) * _DURATION_SECONDS[u.lower() or None] for n, u in pieces))
    raise ValueError(
        f"{value!r} is not a duration; write it like '2h', '1h30m', '90s' or '01:30:00'"
    )


def format_size(num_bytes: int | None) -> str:
    """A size for people: ``4.0GB``."""
    if num_bytes is None:
        return "-"
    for unit, factor in (("TB", 1000**4), ("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if num_bytes >= factor:
            return f"{num_bytes / factor:.1f}{unit}"
    return f"{num_bytes}B"


def format_duration(seconds: float) -> str:
    """A duration for people, as ``parse_duration`` reads it: ``1h30m``, ``90s``, ``0.5s``."""
    if seconds < 60:
        return f"{seconds:g}s"
    total = round(seconds)
    parts = []
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, factor)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


ByteSize = Annotated[int | None, BeforeValidator(parse_size)]
Seconds = Annotated[float | None, BeforeValidator(parse_duration)]


class Resources(BaseModel):
    """What one step needs. ``gpus=0.25`` is a quarter of one GPU on every backend."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cpus: float = Field(default=1.0, gt=0, description="CPU cores for the step.")
    memory: ByteSize = Field(default=None, description="Memory limit, e.g. '4GB'.")
    gpus: float = Field(
        default=0.0,
        ge=0,
        description="Whole GPUs (1, 2, …) or a fraction of one (0.25, 0.5) shared with others.",
    )
    gpu_type: str | None = Field(default=None, description="GPU model wanted, e.g. 'a100'.")
    gpu_memory: ByteSize = Field(
        default=None, description="GPU memory needed per GPU, e.g. '10GB'."
    )
    time_limit: Seconds = Field(default=None, description="Wall-clock limit, e.g. '2h'.")
    nodes: int = Field(default=1, ge=1, description="Nodes for multi-node steps.")
    launcher: Literal["ray", "torchrun"] | None = Field(
        default=None, description="How a multi-node step is started across its nodes."
    )

    if TYPE_CHECKING:
        # What people may pass; the validators turn sizes and durations into numbers.
        def __init__(
            self,
            *,
            cpus: float = 1.0,
            memory: int | str | None = None,
            gpus: float = 0.0,
            gpu_type: str | None = None,
            gpu_memory: int | str | None = None,
            time_limit: float | str | timedelta | None = None,
            nodes: int = 1,
            launcher: Literal["ray", "torchrun"] | None = None,
        ) -> None: ...

    @model_validator(mode="after")
    def _check_gpu_shape(self) -> Resources:
        if self.gpus > 1 and not float(self.gpus).is_integer():
            raise ValueError(
                f"gpus={self.gpus} mixes whole and fractional GPUs; ask for a whole number "
                "of GPUs or a fraction of one (at most 1)"
            )
        if self.gpu_memory is not None and self.gpus == 0:
            raise ValueError("gpu_memory is set but gpus is 0; ask for gpus too, e.g. gpus=0.5")
        if self.gpu_type is not None and self.gpus == 0:
            # Never dropped silently: a step without GPUs would ignore it on every backend.
            raise ValueError("gpu_type is set but gpus is 0; ask for gpus too, e.g. gpus=1")
        return self

    @property
    def whole_cpus(self) -> int:
        """CPU cores as schedulers count them: a fraction rounds up to a whole core."""
        return math.ceil(self.cpus)

    @property
    def ranks_per_node(self) -> int:
        """Processes per node of a torchrun step: one per GPU (torchrun's convention), one per
        node without GPUs; 1 for every other step."""
        if self.launcher == "torchrun" and self.gpus >= 1:
            return self.whole_gpus
        return 1

    @property
    def whole_gpus(self) -> int:
        """GPUs counted as whole devices (a fraction counts as one device shared)."""
        return math.ceil(self.gpus)

    @property
    def is_fractional_gpu(self) -> bool:
        return 0 < self.gpus < 1

    def describe(self) -> str:
        """A one-line summary for people: ``2 cpus, 4.0GB, 0.5 gpu``."""
        parts = [f"{self.cpus:g} cpus"]
        if self.memory is not None:
            parts.append(format_size(self.memory))
        if self.gpus:
            gpu = f"{self.gpus:g} gpu"
            if self.gpu_type:
                gpu += f" {self.gpu_type}"
            if self.gpu_memory:
                gpu += f" ({format_size(self.gpu_memory)})"
            parts.append(gpu)
        if self.nodes > 1:
            parts.append(f"{self.nodes} nodes")
        return ", ".join(parts)
