"""``@step`` and ``@pipeline``: the authoring API.

Calling a step inside a pipeline function does not run it: it records the call and returns
placeholders for its outputs (``OutputRef``), which later steps take as inputs. That yields the
DAG. The step's body runs later, in its own process, on whatever backend the run uses.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, overload

from mlyard.errors import PipelineDefinitionError
from mlyard.models.resources import Resources, parse_duration
from mlyard.orchestration.tracing import OutputRef, current_tracer

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class StepDefinition:
    """A step's function and its policies."""

    function: Callable[..., Any]
    name: str
    resources: Resources
    retries: int
    retry_backoff_seconds: float
    timeout_seconds: float | None
    cache: bool
    #: The names given with ``@step(outputs=...)``, checked already; None: from the type hints.
    declared_outputs: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    requirements: Sequence[str] = ()

    @functools.cached_property
    def output_names(self) -> tuple[str, ...]:
        """Names of the step's outputs. Read from the type hints when first asked (at tracing),
        not at decoration: every step process imports the module, and resolving the hints of
        its steps is most of that import's time."""
        if self.declared_outputs is not None:
            return self.declared_outputs
        return _output_names_from_hints(self.function)


class Step(Generic[P, R]):
    """A function decorated with ``@step``. Call it inside a ``@pipeline`` function."""

    def __init__(self, definition: StepDefinition) -> None:
        self.definition = definition
        functools.update_wrapper(self, definition.function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        tracer = current_tracer()
        if tracer is None:
            raise PipelineDefinitionError(
                f"Step {self.definition.name!r} was called outside a pipeline.",
                hint="Call steps inside a function decorated with @pipeline and run it with "
                "`mlyard run FILE` or mlyard.run(...). To run the plain function, call "
                f"{self.definition.name}.function(...).",
            )
        return typing.cast(R, tracer.record_call(self.definition, args, kwargs))

    @property
    def function(self) -> Callable[P, R]:
        """The undecorated function, for calling it directly (e.g. in unit tests)."""
        return self.definition.function


@overload
def step(function: Callable[P, R], /) -> Step[P, R]: ...


@overload
def step(
    *,
    resources: Resources | None = None,
    retries: int = 0,
    retry_backoff: float | str = 1.0,
    timeout: float | str | None = None,
    cache: bool = True,
    outputs: Sequence[str] | None = None,
    name: str | None = None,
    environment: Mapping[str, str] | None = None,
    requirements: Sequence[str] | None = None,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    function: Callable[P, R] | None = None,
    /,
    *,
    resources: Resources | None = None,
    retries: int = 0,
    retry_backoff: float | str = 1.0,
    timeout: float | str | None = None,
    cache: bool = True,
    outputs: Sequence[str] | None = None,
    name: str | None = None,
    environment: Mapping[str, str] | None = None,
    requirements: Sequence[str] | None = None,
) -> Step[P, R] | Callable[[Callable[P, R]], Step[P, R]]:
    """Make a typed function a pipeline step.

    ``retries`` re-runs a failed attempt with exponential backoff starting at ``retry_backoff``;
    ``timeout`` ("2h", "90s") cancels an attempt that runs longer; ``cache=False`` always runs
    it; ``outputs`` names the elements of a tuple return value; ``environment`` (variables) and
    ``requirements`` are part of the cache key.
    """

    def decorate(fn: Callable[P, R]) -> Step[P, R]:
        if not callable(fn) or isinstance(fn, Step):
            raise PipelineDefinitionError(f"@step needs a plain function, got {fn!r}.")
        if retries < 0:
            raise PipelineDefinitionError(f"@step(retries={retries}) must be 0 or more.")
        try:
            backoff = parse_duration(retry_backoff) or 0.0
            limit = parse_duration(timeout)
        except ValueError as exc:
            raise PipelineDefinitionError(f"@step on {fn.__name__}: {exc}") from exc
        definition = StepDefinition(
            function=fn,
            name=name or fn.__name__,
            resources=resources or Resources(),
            retries=retries,
            retry_backoff_seconds=backoff,
            timeout_seconds=limit,
            cache=cache,
            declared_outputs=_declared_outputs(fn, outputs),
            environment=dict(environment or {}),
            requirements=tuple(requirements or ()),
        )
        return Step(definition)

    if function is not None:
        return decorate(function)
    return decorate


def _declared_outputs(
    fn: Callable[..., Any], declared: Sequence[str] | None
) -> tuple[str, ...] | None:
    """The output names given to ``@step(outputs=...)``, refused at once when invalid."""
    if declared is None:
        return None
    names = tuple(declared)
    if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
        raise PipelineDefinitionError(
            f"@step(outputs={list(names)}) on {fn.__name__}: output names must be distinct "
            "Python identifiers."
        )
    return names


def _output_names_from_hints(fn: Callable[..., Any]) -> tuple[str, ...]:
    """One name per element of a ``tuple[...]`` return, none for ``-> None``, else one."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # unresolvable annotations are the user's business; assume one output
        hints = {}
    returned = hints.get("return", inspect.Signature.empty)
    if returned is type(None):
        return ()
    if typing.get_origin(returned) is tuple:
        args = typing.get_args(returned)
        if args and args[-1] is not Ellipsis:
            return tuple(f"output_{i}" for i in range(len(args)))
    return ("output",)


@dataclass(frozen=True)
class PipelineDefinition:
    function: Callable[..., Any]
    name: str


class Pipeline(Generic[P]):
    """A function decorated with ``@pipeline``; run it with ``mlyard.run`` or ``mlyard run``."""

    def __init__(self, definition: PipelineDefinition) -> None:
        self.definition = definition
        functools.update_wrapper(self, definition.function)

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.definition.function)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        tracer = current_tracer()
        if tracer is None:
            raise PipelineDefinitionError(
                f"Pipeline {self.name!r} was called directly.",
                hint=f"Run it with mlyard.run({self.name}, ...) or `mlyard run FILE:{self.name}`.",
            )
        return self.definition.function(*args, **kwargs)


def pipeline(function: Callable[P, Any] | None = None, /, *, name: str | None = None) -> Any:
    """Make a function of parameters that calls steps a pipeline."""

    def decorate(fn: Callable[P, Any]) -> Pipeline[P]:
        if not isinstance(fn, types.FunctionType):
            raise PipelineDefinitionError(f"@pipeline needs a plain function, got {fn!r}.")
        return Pipeline(PipelineDefinition(function=fn, name=name or fn.__name__))

    if function is not None:
        return decorate(function)
    return decorate


__all__ = ["OutputRef", "Pipeline", "Step", "StepDefinition", "pipeline", "step"]
