"""Service names: the default made from a model's name, and the check of a given one (both
name Kubernetes objects, so they must be DNS-1123 labels of at most 53 characters)."""

from __future__ import annotations

import re

import pytest

from mlyard.errors import ConfigError
from mlyard.services.deployments import check_service_name, default_service_name
from mlyard.services.local_services import default_local_name

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("model", "kind", "name"),
    [
        ("Digits_Classifier", "server", "digits-classifier"),
        ("Digits_Classifier", "consumer", "digits-classifier-consumer"),
        ("resnet50.v2", "server", "resnet50-v2"),
        ("7b-chat", "server", "m-7b-chat"),  # a label must start with a letter
        ("__", "server", "model"),
        ("Ünïcode Model", "server", "n-code-model"),
    ],
)
def test_the_default_name_is_a_dns_label_from_the_model_s(model: str, kind: str, name: str) -> None:
    made = default_service_name(model, kind)  # type: ignore[arg-type]
    assert made == name
    assert check_service_name(made) == made


def test_a_long_model_name_is_cut_to_a_valid_name() -> None:
    made = default_service_name("A" * 30 + "_" + "b" * 30, "consumer")
    assert DNS_LABEL.match(made) and len(made) <= 53
    assert made.endswith("-consumer") and not made.startswith("-")


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("models:/digits@prod", "digits"),
        ("models:/Digits_Classifier/3", "digits-classifier"),
        ("runs:/0a1b2c/model", "model"),
        ("models:/digits", "digits"),
    ],
)
def test_a_local_service_is_named_after_the_model_in_its_uri(model: str, name: str) -> None:
    assert default_local_name(model, "server") == name


@pytest.mark.parametrize(
    "name", ["Bad_Name", "-lead", "trail-", "9lives", "a" * 54, "dots.are.not.labels", ""]
)
def test_a_name_that_cannot_name_objects_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(ConfigError) as refused:
        check_service_name(name)
    assert "must be lower case letters, digits and '-'" in refused.value.message
    assert "--name" in (refused.value.hint or "")


def test_the_longest_name_allowed_is_53_characters() -> None:
    assert check_service_name("a" * 53) == "a" * 53
