"""Names and labels derived from attempt ids are valid Kubernetes names, stable and distinct."""

from __future__ import annotations

import re

from mlyard.backends.kubernetes.names import (
    ATTEMPT_ID_LABEL,
    MANAGED_BY_LABEL,
    attempt_labels,
    job_name,
    label_value,
)

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def test_a_job_is_named_after_its_attempt() -> None:
    assert job_name("3f2a9c01b7de.2.1") == "mlyard-3f2a9c01b7de-2-1"
    assert job_name("3f2a9c01b7de.2.1") == job_name("3f2a9c01b7de.2.1")


def test_long_or_odd_ids_give_valid_distinct_names() -> None:
    first = job_name("Run_" + "x" * 80 + ".1.1")
    second = job_name("Run_" + "x" * 80 + ".1.2")
    for name in (first, second, job_name("--A.B--"), job_name("9" * 70)):
        assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert first != second


def test_labels_are_valid_label_values() -> None:
    labels = attempt_labels(
        backend="gpu cluster", run_id="r1", attempt_id="r1.1.1", step="train/evaluate" * 10
    )
    assert labels[MANAGED_BY_LABEL] == "mlyard"
    assert labels[ATTEMPT_ID_LABEL] == "r1.1.1"
    for value in labels.values():
        assert len(value) <= 63 and LABEL_VALUE.match(value), value
    assert label_value("-_.") == ""
