"""Model references are checked for their form before any registry is asked."""

from __future__ import annotations

import pytest

from mlyard.errors import ConfigError
from mlyard.serving.model_reference import check_reference_syntax


@pytest.mark.parametrize(
    "reference", ["models:/digits@champion", "models:/digits/3", "runs:/0a1b2c/model"]
)
def test_accepted_forms(reference: str) -> None:
    check_reference_syntax(reference)


@pytest.mark.parametrize(
    "reference", ["models:/digits", "digits", "models:/digits/latest", "s3://bucket/model"]
)
def test_other_forms_are_refused_with_the_accepted_ones(reference: str) -> None:
    with pytest.raises(ConfigError, match="not a model reference") as caught:
        check_reference_syntax(reference)
    assert caught.value.hint is not None and "models:/NAME@ALIAS" in caught.value.hint
