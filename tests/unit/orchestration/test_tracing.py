from __future__ import annotations

from pathlib import Path

import pytest

from mlyard.errors import PipelineDefinitionError
from mlyard.models.pipelines import InputBinding, OutputAddress, PipelineGraph, StepNode
from mlyard.orchestration.graph import validate_graph
from mlyard.orchestration.loading import LoadedPipeline, trace_pipeline
from tests.unit.orchestration import pipelines_for_tests as module


def _loaded() -> LoadedPipeline:
    return LoadedPipeline(module.numbers, module.__name__, Path(module.__file__).parent)


def test_tracing_builds_a_graph_with_multiple_outputs_and_list_inputs() -> None:
    graph = trace_pipeline(_loaded(), {"count": "4"})
    assert [s.name for s in graph.steps] == ["make_numbers", "split_numbers", "total"]
    assert graph.params == {"count": 4, "label": "x"}
    split = graph.step("split_numbers")
    assert split.output_names == ["low", "high"]
    assert split.inputs["numbers"].refs == [OutputAddress(step="make_numbers", output="output")]
    parts = graph.step("total").inputs["parts"]
    assert parts.kind == "refs"
    assert [r.output for r in parts.refs] == ["low", "high"]
    assert graph.step("make_numbers").inputs["count"].value == 4


def test_calling_a_step_outside_a_pipeline_says_where_it_belongs() -> None:
    with pytest.raises(PipelineDefinitionError, match="outside a pipeline"):
        module.make_numbers(3)
    assert module.make_numbers.function(3) == [0, 1, 2]


def test_calling_a_pipeline_directly_is_refused() -> None:
    with pytest.raises(PipelineDefinitionError, match="called directly"):
        module.numbers()


def test_unknown_and_mistyped_parameters_are_named() -> None:
    with pytest.raises(PipelineDefinitionError, match=r"no parameter 'cont'.*Did you mean 'count'"):
        trace_pipeline(_loaded(), {"cont": 3})
    with pytest.raises(PipelineDefinitionError, match="must be int, got 'many'"):
        trace_pipeline(_loaded(), {"count": "many"})


def test_a_cycle_is_refused_with_its_path() -> None:
    def node(name: str, upstream: str) -> StepNode:
        ref = InputBinding(kind="ref", refs=[OutputAddress(step=upstream, output="output")])
        return StepNode(
            name=name,
            function=f"m:{name}",
            inputs={"x": ref},
            output_names=["output"],
            code_fingerprint="0",
        )

    graph = PipelineGraph(pipeline_name="loop", steps=[node("a", "b"), node("b", "a")])
    with pytest.raises(PipelineDefinitionError, match="cycle"):
        validate_graph(graph)


def test_an_output_used_as_a_value_while_tracing_is_explained() -> None:
    from mlyard import pipeline

    @pipeline
    def uses_value() -> None:
        numbers = module.make_numbers(3)
        if numbers:
            module.total([numbers])

    loaded = LoadedPipeline(uses_value, module.__name__, Path(module.__file__).parent)
    with pytest.raises(PipelineDefinitionError, match="used as a value"):
        trace_pipeline(loaded, {})


def test_output_names_come_from_type_hints_resolved_when_first_needed() -> None:
    from mlyard import step

    @step
    def pair() -> tuple[Later, Later]:  # noqa: F821  (defined below: resolvable only later)
        raise NotImplementedError

    @step(outputs=["low", "high"])
    def named() -> tuple[int, int]:
        raise NotImplementedError

    assert "output_names" not in vars(pair.definition)  # nothing resolved at decoration
    globals()["Later"] = int
    try:
        assert pair.definition.output_names == ("output_0", "output_1")
    finally:
        del globals()["Later"]
    assert named.definition.output_names == ("low", "high")


def test_invalid_declared_output_names_are_refused_at_decoration() -> None:
    from mlyard import step

    with pytest.raises(PipelineDefinitionError, match="distinct"):

        @step(outputs=["same", "same"])
        def twice() -> tuple[int, int]:
            raise NotImplementedError
