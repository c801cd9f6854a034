"""Cache keys: a step's result is reused when nothing that could change it has changed."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from mlyard.models.pipelines import StepNode
from mlyard.models.tasks import ArtifactRef

#: Bumped when the meaning of stored outputs changes, invalidating every older entry.
CACHE_FORMAT_VERSION = 1


def cache_key(
    node: StepNode,
    literals: Mapping[str, Any],
    inputs: Mapping[str, Sequence[ArtifactRef]],
) -> str:
    """sha256 over the step's code fingerprint, literal arguments, input digests and environment."""
    document = {
        "format": CACHE_FORMAT_VERSION,
        "function": node.function,
        "code": node.code_fingerprint,
        "literals": literals,
        "inputs": {name: [ref.digest for ref in refs] for name, refs in sorted(inputs.items())},
        "outputs": node.output_names,
        "environment": node.environment,
        "requirements": sorted(node.requirements),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(encoded.encode()).hexdigest()
