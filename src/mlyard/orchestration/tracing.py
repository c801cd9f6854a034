"""Tracing a pipeline function into a ``PipelineGraph``."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from mlyard.errors import PipelineDefinitionError
from mlyard.models.pipelines import InputBinding, OutputAddress, StepNode

if TYPE_CHECKING:
    from mlyard.orchestration.decorators import StepDefinition


@dataclass(frozen=True)
class OutputRef:
    """Placeholder for a step output while the pipeline is traced."""

    step: str
    output: str

    def _not_a_value(self, what: str) -> NoReturn:
        raise PipelineDefinitionError(
            f"The output {self.output!r} of step {self.step!r} was used as a value ({what}) "
            "inside the pipeline function.",
            hint="Outputs exist only when the step has run. Pass them to another step and do "
            "the work (comparisons, arithmetic, printing) there.",
        )

    def __bool__(self) -> bool:
        self._not_a_value("truth test")

    def __iter__(self) -> NoReturn:
        self._not_a_value(
            "unpacking; declare several outputs with a tuple[...] return type or @step(outputs=...)"
        )

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("__"):
            raise AttributeError(name)
        self._not_a_value(f"attribute .{name}")


@dataclass
class RecordedCall:
    definition: StepDefinition
    name: str
    inputs: dict[str, InputBinding]


@dataclass
class PipelineTracer:
    """Collects the step calls a pipeline function makes."""

    calls: list[RecordedCall] = field(default_factory=list)
    #: Names given so far, and the next suffix to try per base name (O(1) per call).
    _taken: set[str] = field(default_factory=set)
    _next_suffix: dict[str, int] = field(default_factory=dict)

    def record_call(
        self, definition: StepDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> OutputRef | tuple[OutputRef, ...] | None:
        name = self._unique_name(definition.name)
        try:
            bound = inspect.signature(definition.function).bind(*args, **kwargs)
        except TypeError as exc:
            raise PipelineDefinitionError(
                f"Step {definition.name!r} was called with arguments that do not fit its "
                f"signature: {exc}."
            ) from exc
        bound.apply_defaults()
        inputs = {param: _binding(name, param, value) for param, value in bound.arguments.items()}
        self.calls.append(RecordedCall(definition=definition, name=name, inputs=inputs))
        refs = tuple(OutputRef(step=name, output=o) for o in definition.output_names)
        if not refs:
            return None
        if len(refs) == 1 and definition.output_names == ("output",):
            return refs[0]
        return refs

    def _unique_name(self, base: str) -> str:
        """``base`` the first time, then ``base_2``, ``base_3``, … skipping names in use."""
        name = base
        index = self._next_suffix.get(base, 2)
        while name in self._taken:
            name = f"{base}_{index}"
            index += 1
        self._next_suffix[base] = max(index, 2)
        self._taken.add(name)
        return name


def _binding(step_name: str, param: str, value: Any) -> InputBinding:
    if isinstance(value, OutputRef):
        return InputBinding(kind="ref", refs=[OutputAddress(step=value.step, output=value.output)])
    if isinstance(value, list | tuple) and value and all(isinstance(v, OutputRef) for v in value):
        return InputBinding(
            kind="refs", refs=[OutputAddress(step=v.step, output=v.output) for v in value]
        )
    if _contains_ref(value):
        raise PipelineDefinitionError(
            f"Argument {param!r} of step {step_name!r} mixes step outputs with other values.",
            hint="Pass a step output directly, or a list made only of step outputs.",
        )
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise PipelineDefinitionError(
            f"Argument {param!r} of step {step_name!r} is a {type(value).__name__}, which cannot "
            "be passed from the pipeline function.",
            hint="Pass JSON values (numbers, strings, lists, dicts) or pipeline parameters; "
            "produce other objects inside a step and pass its output.",
        ) from exc
    return InputBinding(kind="literal", value=value)


def _contains_ref(value: Any) -> bool:
    if isinstance(value, OutputRef):
        return True
    if isinstance(value, list | tuple | set):
        return any(_contains_ref(v) for v in value)
    if isinstance(value, dict):
        return any(_contains_ref(v) for v in value.values())
    return False


_tracer: ContextVar[PipelineTracer | None] = ContextVar("mlyard_tracer", default=None)


def current_tracer() -> PipelineTracer | None:
    return _tracer.get()


@contextmanager
def tracing() -> Iterator[PipelineTracer]:
    tracer = PipelineTracer()
    token = _tracer.set(tracer)
    try:
        yield tracer
    finally:
        _tracer.reset(token)


def calls_to_nodes(calls: list[RecordedCall], fingerprints: dict[str, str]) -> list[StepNode]:
    """Turn recorded calls into graph nodes; calls are recorded in a topological order."""
    nodes = []
    for call in calls:
        definition = call.definition
        function = definition.function
        nodes.append(
            StepNode(
                name=call.name,
                function=f"{function.__module__}:{function.__qualname__}",
                inputs=call.inputs,
                output_names=list(definition.output_names),
                resources=definition.resources,
                retries=definition.retries,
                retry_backoff_seconds=definition.retry_backoff_seconds,
                timeout_seconds=definition.timeout_seconds,
                cache=definition.cache,
                code_fingerprint=fingerprints[call.name],
                environment=dict(definition.environment),
                requirements=list(definition.requirements),
            )
        )
    return nodes
