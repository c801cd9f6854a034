"""Loading a pipeline file and tracing its pipeline into a ``PipelineGraph``."""

from __future__ import annotations

import importlib.util
import inspect
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlyard.errors import PipelineDefinitionError
from mlyard.models.pipelines import PipelineGraph
from mlyard.orchestration.decorators import Pipeline
from mlyard.orchestration.fingerprint import code_fingerprint
from mlyard.orchestration.graph import validate_graph
from mlyard.orchestration.parameters import bind_parameters
from mlyard.orchestration.tracing import calls_to_nodes, tracing


@dataclass(frozen=True)
class LoadedPipeline:
    pipeline: Pipeline[Any]
    module_name: str
    project_root: Path


def split_target(target: str) -> tuple[Path, str | None]:
    """``path/to/file.py:name`` → (path, name); the name is optional."""
    path_text, _, name = target.partition(":") if target.count(":") == 1 else (target, "", "")
    if len(path_text) == 1 and name and name.startswith("\\"):  # a Windows drive letter
        path_text, name = target, ""
    return Path(path_text), (name or None)


def load_pipeline_file(path: Path, name: str | None = None) -> LoadedPipeline:
    """Import ``path`` as a module of its project and pick the pipeline called ``name``."""
    path = path.expanduser()
    if not path.is_file():
        raise PipelineDefinitionError(
            f"No pipeline file at {path}.",
            hint="Pass the path of a Python file that defines a @pipeline function, "
            "e.g. `mlyard run examples/quickstart/pipeline.py`.",
        )
    path = path.resolve()
    if path.suffix != ".py":
        raise PipelineDefinitionError(
            f"{path} is not a Python file.", hint="Pass a .py file with a @pipeline function."
        )
    project_root = path.parent
    module_name = path.stem
    module = _import_file(path, module_name, project_root)
    return LoadedPipeline(_pick_pipeline(module, path, name), module_name, project_root)


def loaded_from_function(pipeline: Pipeline[Any]) -> LoadedPipeline:
    """The project of a pipeline object given from Python (``mlyard.run(my_pipeline)``)."""
    function = pipeline.definition.function
    module = sys.modules.get(function.__module__)
    filename = getattr(module, "__file__", None)
    if not filename:
        raise PipelineDefinitionError(
            f"Pipeline {pipeline.name!r} is not defined in a file.",
            hint="Define pipelines and steps in a .py file next to your notebook and import "
            "them from there; steps run in their own processes and import that file.",
        )
    path = Path(filename).resolve()
    module_name = path.stem
    if function.__module__ != module_name:
        # The file runs as __main__ (python pipeline.py): import it under its own name too,
        # so step functions have the module path their processes will import.
        module = _import_file(path, module_name, path.parent)
        found = getattr(module, function.__name__, None)
        if not isinstance(found, Pipeline):
            raise PipelineDefinitionError(
                f"Cannot find pipeline {pipeline.name!r} as a top-level name in {path}."
            )
        pipeline = found
    return LoadedPipeline(pipeline, module_name, path.parent)


def _import_file(path: Path, module_name: str, project_root: Path) -> types.ModuleType:
    existing = sys.modules.get(module_name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    if str(project_root) not in sys.path:
        sys.path.insert(0, str(project_root))
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineDefinitionError(f"Cannot import {path} as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[module_name]
        raise PipelineDefinitionError(
            f"{path} has a syntax error at line {exc.lineno}: {exc.msg}.",
            hint=(exc.text or "").strip() or None,
        ) from exc
    except Exception as exc:
        del sys.modules[module_name]
        where = _user_frame(exc, path)
        raise PipelineDefinitionError(
            f"Importing {path} failed{where}: {type(exc).__name__}: {exc}",
            hint="Fix the error in the file; run with --debug for the full traceback.",
        ) from exc
    return module


def _user_frame(exc: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    return f" at line {frames[-1].lineno}" if frames else ""


def _pick_pipeline(module: types.ModuleType, path: Path, name: str | None) -> Pipeline[Any]:
    found = {attr: value for attr, value in vars(module).items() if isinstance(value, Pipeline)}
    if name is not None:
        if name in found:
            return found[name]
        by_pipeline_name = [p for p in found.values() if p.name == name]
        if by_pipeline_name:
            return by_pipeline_name[0]
        raise PipelineDefinitionError(
            f"{path} has no pipeline called {name!r}.",
            hint=f"Pipelines in it: {', '.join(sorted(found)) or 'none'}.",
        )
    if not found:
        raise PipelineDefinitionError(
            f"{path} defines no pipeline.",
            hint="Decorate the function that calls your steps with @pipeline "
            "(from mlyard import pipeline).",
        )
    if len(found) > 1:
        names = sorted(found)
        raise PipelineDefinitionError(
            f"{path} defines several pipelines: {', '.join(names)}.",
            hint=f"Say which one to run: `mlyard run {path.name}:{names[0]}`.",
        )
    return next(iter(found.values()))


def trace_pipeline(loaded: LoadedPipeline, params: dict[str, Any]) -> PipelineGraph:
    """Call the pipeline function under a tracer and turn the calls into a validated graph."""
    pipeline = loaded.pipeline
    bound = bind_parameters(pipeline, params)
    with tracing() as tracer:
        try:
            pipeline.definition.function(**bound)
        except PipelineDefinitionError:
            raise
        except RecursionError as exc:
            raise PipelineDefinitionError(
                f"Pipeline {pipeline.name!r} calls itself without end (a cycle).",
                hint="A pipeline wires steps in one direction; remove the recursive call.",
            ) from exc
        except Exception as exc:
            raise PipelineDefinitionError(
                f"Tracing pipeline {pipeline.name!r} failed: {type(exc).__name__}: {exc}",
                hint="The pipeline function only wires steps together; it runs once to build "
                "the graph, before any step runs. Move computations into steps.",
            ) from exc
    if not tracer.calls:
        raise PipelineDefinitionError(
            f"Pipeline {pipeline.name!r} calls no steps.",
            hint="Call functions decorated with @step inside it.",
        )
    fingerprints = {}
    for call in tracer.calls:
        function = call.definition.function
        if "<locals>" in function.__qualname__:
            raise PipelineDefinitionError(
                f"Step {call.definition.name!r} is defined inside another function.",
                hint="Define steps at the top level of a module so their processes can import "
                "them.",
            )
        fingerprints[call.name] = code_fingerprint(function, loaded.project_root)
    graph = PipelineGraph(
        pipeline_name=pipeline.name,
        params=bound,
        steps=calls_to_nodes(tracer.calls, fingerprints),
    )
    validate_graph(graph)
    return graph


def pipeline_parameters(pipeline: Pipeline[Any]) -> dict[str, inspect.Parameter]:
    return dict(pipeline.signature.parameters)
