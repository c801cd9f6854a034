"""The traced pipeline graph, as stored with each run so resume never re-traces changed code."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlyard.models.resources import Resources


class OutputAddress(BaseModel):
    """One output of one step of the same run."""

    model_config = ConfigDict(frozen=True)

    step: str
    output: str


class InputBinding(BaseModel):
    """How one parameter of a step gets its value."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["ref", "refs", "literal"]
    refs: list[OutputAddress] = Field(
        default_factory=list, description="The upstream output(s); one for 'ref', any for 'refs'."
    )
    value: Any = Field(default=None, description="The JSON-able value of a 'literal'.")


class StepNode(BaseModel):
    """One call of a step inside the pipeline."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Unique in the pipeline: the function name, then name_2, …")
    function: str = Field(description="'module:qualname' of the step function in the package.")
    inputs: dict[str, InputBinding] = Field(default_factory=dict)
    output_names: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(default=0, ge=0)
    retry_backoff_seconds: float = Field(default=1.0, ge=0)
    timeout_seconds: float | None = None
    cache: bool = True
    code_fingerprint: str = Field(description="Hash of the step's code and the helpers it calls.")
    environment: dict[str, str] = Field(default_factory=dict)
    requirements: list[str] = Field(default_factory=list)

    @property
    def upstream(self) -> set[str]:
        return {ref.step for binding in self.inputs.values() for ref in binding.refs}


class PipelineGraph(BaseModel):
    """A traced pipeline: its parameters and its steps in a topological order."""

    model_config = ConfigDict(frozen=True)

    pipeline_name: str
    params: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepNode] = Field(default_factory=list)

    def step(self, name: str) -> StepNode:
        for node in self.steps:
            if node.name == name:
                return node
        raise KeyError(name)
