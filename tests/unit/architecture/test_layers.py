"""Imports point downward only (docs/architecture.md); this test enforces it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "src" / "mlyard"
BOTTOM = {"models", "errors", "extras", "settings"}

#: layer -> the layers it may import (besides itself and the bottom).
ALLOWED: dict[str, set[str]] = {
    "models": set(),
    "errors": set(),
    "extras": set(),
    "settings": set(),
    "store": set(),
    "artifacts": set(),
    "platform": set(),
    "tracking": {"artifacts"},
    "runtime": {"artifacts", "tracking", "platform"},
    "backends": {"artifacts", "platform", "runtime"},
    "orchestration": {"store", "artifacts", "tracking", "backends", "runtime"},
    "serving": {"artifacts", "tracking", "backends", "platform", "services"},
    "consumers": {"artifacts", "tracking", "backends", "platform", "services", "serving"},
    "services": {
        "store",
        "artifacts",
        "tracking",
        "backends",
        "orchestration",
        "platform",
        "runtime",
    },
    "cli": {
        "services",
        "orchestration",
        "store",
        "artifacts",
        "tracking",
        "backends",
        "serving",
        "consumers",
        "platform",
        "runtime",
    },
}


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py") if relative.parts else ""


def _imported_layers(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    layers = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "mlyard" and len(parts) > 1:
                layers.add(parts[1])
    return layers


def test_every_import_points_downward() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        layer = _layer(path)
        if layer not in ALLOWED:
            continue  # top level: __init__, api
        allowed = ALLOWED[layer] | BOTTOM | {layer}
        for imported in _imported_layers(path) - allowed:
            violations.append(f"{path.relative_to(PACKAGE)} imports mlyard.{imported}")
    assert violations == []
