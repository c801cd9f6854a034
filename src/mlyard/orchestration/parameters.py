"""Binding run parameters (``-p name=value`` strings or Python values) to a pipeline signature."""

from __future__ import annotations

import difflib
import inspect
import json
import typing
from typing import Any

from pydantic import TypeAdapter, ValidationError

from mlyard.errors import PipelineDefinitionError
from mlyard.orchestration.decorators import Pipeline


def parse_cli_params(pairs: list[str]) -> dict[str, str]:
    """``["lr=0.1", "epochs=3"]`` → ``{"lr": "0.1", "epochs": "3"}``."""
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise PipelineDefinitionError(
                f"Parameter {pair!r} is not of the form name=value.",
                hint="Pass parameters as -p name=value, e.g. -p lr=0.1.",
            )
        params[name.strip()] = value
    return params


def bind_parameters(pipeline: Pipeline[Any], given: dict[str, Any]) -> dict[str, Any]:
    """Complete and convert ``given`` by the pipeline's signature; JSON-able values out."""
    signature = pipeline.signature
    try:
        hints = typing.get_type_hints(pipeline.definition.function)
    except Exception:  # unresolvable annotations: fall back to the defaults' types
        hints = {}
    known = signature.parameters
    for name in given:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            suggestion = f" Did you mean {close[0]!r}?" if close else ""
            raise PipelineDefinitionError(
                f"Pipeline {pipeline.name!r} has no parameter {name!r}.{suggestion}",
                hint=f"Its parameters: {describe_parameters(pipeline) or 'none'}.",
            )
    bound: dict[str, Any] = {}
    for name, parameter in known.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise PipelineDefinitionError(
                f"Pipeline {pipeline.name!r} takes *args or **kwargs.",
                hint="Give the pipeline function named parameters with defaults.",
            )
        if name in given:
            bound[name] = _convert(pipeline, name, given[name], hints.get(name), parameter)
        elif parameter.default is not inspect.Parameter.empty:
            bound[name] = parameter.default
        else:
            raise PipelineDefinitionError(
                f"Pipeline {pipeline.name!r} needs the parameter {name!r}.",
                hint=f"Pass it with -p {name}=VALUE (or {name}=... to mlyard.run).",
            )
        try:
            json.dumps(bound[name])
        except (TypeError, ValueError) as exc:
            raise PipelineDefinitionError(
                f"Parameter {name!r} is a {type(bound[name]).__name__}, not a JSON value.",
                hint="Pipeline parameters are recorded with the run: use numbers, strings, "
                "booleans, lists or dicts.",
            ) from exc
    return bound


def _convert(
    pipeline: Pipeline[Any],
    name: str,
    value: Any,
    annotation: Any,
    parameter: inspect.Parameter,
) -> Any:
    if annotation is None and parameter.default not in (None, inspect.Parameter.empty):
        annotation = type(parameter.default)
    if annotation is None or annotation is Any:
        return value
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        if isinstance(value, str) and annotation is not str:
            try:
                return adapter.validate_json(value)
            except ValidationError:
                return adapter.validate_python(value)
        return adapter.validate_python(value)
    except ValidationError as exc:
        expected = getattr(annotation, "__name__", str(annotation))
        raise PipelineDefinitionError(
            f"Parameter {name!r} of pipeline {pipeline.name!r} must be {expected}, got {value!r}.",
            hint=f"Its parameters: {describe_parameters(pipeline)}.",
        ) from exc


def describe_parameters(pipeline: Pipeline[Any]) -> str:
    parts = []
    for name, parameter in pipeline.signature.parameters.items():
        annotation = parameter.annotation
        text = name
        if annotation is not inspect.Parameter.empty:
            text += f": {getattr(annotation, '__name__', annotation)}"
        if parameter.default is not inspect.Parameter.empty:
            text += f" = {parameter.default!r}"
        parts.append(text)
    return ", ".join(parts)
