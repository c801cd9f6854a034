"""Checks on a traced graph, and the order steps become ready in."""

from __future__ import annotations

from graphlib import CycleError, TopologicalSorter

from mlyard.errors import PipelineDefinitionError
from mlyard.models.pipelines import PipelineGraph


def validate_graph(graph: PipelineGraph) -> list[str]:
    """Raise for references to unknown steps/outputs and for cycles; return a topological order."""
    outputs = {node.name: set(node.output_names) for node in graph.steps}
    sorter: TopologicalSorter[str] = TopologicalSorter()
    for node in graph.steps:
        for param, binding in node.inputs.items():
            for ref in binding.refs:
                if ref.step not in outputs:
                    raise PipelineDefinitionError(
                        f"Input {param!r} of step {node.name!r} refers to an unknown step "
                        f"{ref.step!r}."
                    )
                if ref.output not in outputs[ref.step]:
                    raise PipelineDefinitionError(
                        f"Input {param!r} of step {node.name!r} refers to output "
                        f"{ref.output!r}, which step {ref.step!r} does not have.",
                        hint=f"Its outputs: {', '.join(sorted(outputs[ref.step])) or 'none'}.",
                    )
        sorter.add(node.name, *node.upstream)
    try:
        return list(sorter.static_order())
    except CycleError as exc:
        cycle = " → ".join(exc.args[1])
        raise PipelineDefinitionError(
            f"The pipeline {graph.pipeline_name!r} has a cycle: {cycle}.",
            hint="A step cannot depend on its own output, directly or through other steps.",
        ) from exc
