"""The data routes' pure parts: digests found in documents, secrets kept out of text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlyard.artifacts.store import ArtifactStore
from mlyard.backends.slurm.transfer import S3Route, digests_in, redact, secret_exports
from mlyard.errors import ConfigError

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def test_digests_are_found_anywhere_in_a_document() -> None:
    document = (
        f'{{"outputs": {{"x": {{"digest": "{DIGEST_A}"}}}}, '
        f'"metadata": {{"files": ["{DIGEST_B}", "{DIGEST_A}"]}}, "other": "sha256:short"}}'
    )
    assert digests_in(document.encode()) == {DIGEST_A, DIGEST_B}


def test_secrets_travel_on_stdin_and_reach_the_exported_environment() -> None:
    secrets = {"AWS_SECRET_ACCESS_KEY": "s3cr3t value", "AWS_ACCESS_KEY_ID": "key"}
    reads, stdin = secret_exports(secrets)
    assert "s3cr3t" not in reads  # the command line (visible in `ps`) holds only names
    shown = subprocess.run(
        [
            "bash",
            "-c",
            f'{reads} cat > /dev/null; echo "$AWS_ACCESS_KEY_ID|$AWS_SECRET_ACCESS_KEY"',
        ],
        input=stdin + "#!/bin/bash\n# the job script follows\n",
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "key|s3cr3t value"
    assert redact("denied for s3cr3t value", secrets) == "denied for ***"


def test_the_s3_route_refuses_a_store_compute_nodes_cannot_reach(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    with pytest.raises(ConfigError, match="cannot reach") as refused:
        S3Route(store, shared_filesystem=False)
    assert "data_route = 'sftp'" in (refused.value.hint or "")
    assert S3Route(store, shared_filesystem=True).name == "s3"
