"""The optional extras: one check, one-line messages, and pyproject.toml installing each module."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mlyard.consumers.urls import EXTRAS as BROKER_EXTRAS
from mlyard.consumers.urls import broker_extras
from mlyard.errors import ConfigError, MissingExtraError
from mlyard.extras import EXTRA_MODULES, require_extra

REPO = Path(__file__).resolve().parents[2]


def _extra_distributions(extras: dict[str, list[str]], extra: str) -> set[str]:
    """Distributions ``pip install 'mlyard[extra]'`` installs directly, through mlyard[...] too."""
    found: set[str] = set()
    for line in extras[extra]:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == "mlyard":
            for inner in requirement.extras:
                found |= _extra_distributions(extras, inner)
        else:
            found.add(canonicalize_name(requirement.name))
    return found


def test_each_extra_of_pyproject_installs_the_modules_mlyard_checks_for() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    providers = packages_distributions()  # module -> distributions installed here (dev extra)
    for extra, modules in EXTRA_MODULES.items():
        assert extra in extras, f"pyproject.toml has no extra {extra!r}"
        listed = _extra_distributions(extras, extra)
        for module in modules:
            top_level = module.split(".")[0]
            installed_by = {canonicalize_name(name) for name in providers.get(top_level, [])}
            assert installed_by & listed, f"mlyard[{extra}] does not install {module}"


def test_every_require_extra_in_the_source_names_a_known_extra() -> None:
    named = []
    for path in (REPO / "src" / "mlyard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "require_extra":
                named += [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
    assert len(named) >= 9  # serve, consume (twice), s3, postgres, slurm, gpu, torch (twice), ...
    assert set(named) <= set(EXTRA_MODULES)
    assert set(BROKER_EXTRAS.values()) <= set(EXTRA_MODULES)  # brokers pass theirs by scheme


def test_nothing_is_raised_when_the_extra_is_installed() -> None:
    require_extra("s3", "serve", needed_by="This")


def test_a_missing_extra_is_one_line_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # how Python blocks an import
    with pytest.raises(MissingExtraError) as raised:
        require_extra("serve", "s3", needed_by="An s3:// artifact store")
    error = raised.value
    assert isinstance(error, ConfigError)
    assert error.exit_code == 2
    assert error.hint is None
    assert error.message == (
        "An s3:// artifact store needs the optional extra 's3' (s3fs is not installed): "
        "pip install 'mlyard[s3]'"
    )


def test_several_missing_extras_are_named_in_one_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(MissingExtraError) as raised:
        require_extra("consume", "redis", needed_by="mlyard consume")
    assert raised.value.message == (
        "mlyard consume needs the optional extras 'consume' and 'redis' (prometheus_client, "
        "redis are not installed): pip install 'mlyard[consume,redis]'"
    )


def test_brokers_name_their_extras() -> None:
    assert broker_extras(
        "kafka://h:9092?topic=in&group=g", "redis://h/0?stream=out", "sqlite:///q.db?topic=d"
    ) == ["kafka", "redis"]
    assert broker_extras("sqlite:///q.db?topic=in", "nats://h?subject=o") == ["nats"]


def test_a_torch_artifact_loaded_without_torch_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlyard.artifacts.materializers.models import TorchMaterializer

    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'mlyard\[torch\]'$"):
        TorchMaterializer().load(b"", {"kind": "tensor"})


def test_the_ray_launcher_without_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlyard.runtime.ray_driver import RayStartError, start_cluster

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayStartError, match=r"pip install 'mlyard\[ray\]'$"):
        start_cluster(1, 1, 0, [])
