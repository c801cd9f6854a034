"""Long-running services (model servers, event consumers) as ``mlyard services`` shows them,
wherever they run: on this machine or on a cluster."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ServiceKind = Literal["server", "consumer"]


class ServiceReplica(BaseModel):
    """One replica: a local process or a pod."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The pod's name, or the process id on this machine.")
    ready: bool = Field(description="Whether it passes its readiness check (pods) or runs.")
    address: str | None = Field(default=None, description="Where it listens (pod IP:port).")
    phase: str | None = Field(default=None, description="The pod's phase or waiting reason.")
    restarts: int = Field(default=0, description="Container restarts (pods).")


class ServiceView(BaseModel):
    """A service and its replicas."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="The service's name (DNS-1123).")
    kind: ServiceKind = Field(description="server (mlyard serve) or consumer (mlyard consume).")
    backend: str = Field(description="Backend profile it runs on; 'local' for this machine.")
    model: str = Field(description="The model it serves, as resolved when it started.")
    replicas: int = Field(description="Replicas asked for.")
    ready: int = Field(description="Replicas ready.")
    address: str | None = Field(default=None, description="Where clients reach it.")
    image: str | None = Field(default=None, description="Container image (cluster services).")
    gpus: str = Field(default="none", description="GPU request per replica, as sent.")
    started_at: datetime | None = Field(default=None, description="When it was created.")
    pid: int | None = Field(default=None, description="Supervisor process (local services).")
    log: str | None = Field(default=None, description="Log file (local services).")
    pods: list[ServiceReplica] = Field(default_factory=list, description="Its replicas.")


#: Set in a pod whose GPUs the cluster assigned: the command inside leases none locally.
GPUS_ASSIGNED_VARIABLE = "MLYARD_GPUS_ASSIGNED"
