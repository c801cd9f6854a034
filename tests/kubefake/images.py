"""Image references and pulls, as containerd answers them: a registry host ending in
``.invalid`` cannot be resolved, ``images.json`` names images that do not exist and gives
entrypoints (the fake never runs an image, only its command)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.kubefake.containers import Container
    from tests.kubefake.pod_worker import PodWorker

_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_COMPONENT}(?:\.{_COMPONENT})*(?::[0-9]+)?"
_PATH = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
_REFERENCE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH}(?:/{_PATH})*)(?::(?P<tag>[\w][\w.-]{{0,127}}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)


@dataclass(frozen=True)
class ImageReference:
    """A parsed reference, normalized as containerd does (``python`` is
    ``docker.io/library/python:latest``)."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @property
    def full(self) -> str:
        text = f"{self.domain}/{self.path}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class InvalidImageNameError(ValueError):
    """The kubelet's InvalidImageName."""


def parse_reference(image: str) -> ImageReference:
    """Parse ``image``; a malformed one raises InvalidImageNameError with the kubelet's message."""
    match = _REFERENCE.match(image)
    if not match or len(match.group("name")) > 255:
        raise InvalidImageNameError(
            f'Failed to apply default image tag "{image}": couldn\'t parse image name '
            f'"{image}": invalid reference format'
        )
    name = match.group("name")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "docker.io" and "/" not in path:
        path = f"library/{path}"
    tag = match.group("tag")
    digest = match.group("digest")
    if tag is None and digest is None:
        tag = "latest"
    return ImageReference(domain, path, tag, digest)


class ImageCatalog:
    """What ``STATE_DIR/images.json`` says about images: ``missing`` (names or full references
    that do not exist), ``entrypoints`` (image -> {"command": [...], "args": [...]}),
    ``pull_seconds`` (how long a pull takes). Re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime: int | None = None
        self._data: dict[str, Any] = {}

    def _current(self) -> dict[str, Any]:
        try:
            mtime = self._path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if mtime != self._mtime:
            self._data = json.loads(self._path.read_text())
            self._mtime = mtime
        return self._data

    def pull_seconds(self) -> float:
        return float(self._current().get("pull_seconds", 0.0))

    def pull_error(self, image: str, ref: ImageReference) -> str | None:
        """containerd's error for a pull that fails, or None when the image exists."""
        full = ref.full
        if ref.domain.split(":")[0].endswith(".invalid"):
            host = ref.domain.split(":")[0]
            manifest = ref.tag or ref.digest
            return (
                f'failed to pull and unpack image "{full}": failed to resolve reference '
                f'"{full}": failed to do request: Head "https://{ref.domain}/v2/{ref.path}/'
                f'manifests/{manifest}": dial tcp: lookup {host}: no such host'
            )
        missing = set(self._current().get("missing", []))
        if image in missing or full in missing:
            return (
                f'rpc error: code = NotFound desc = failed to pull and unpack image "{full}": '
                f'failed to resolve reference "{full}": {full}: not found'
            )
        return None

    def entrypoint(self, image: str) -> tuple[list[str], list[str]]:
        """The image's ENTRYPOINT and CMD (empty unless ``images.json`` gives them)."""
        found = self._current().get("entrypoints", {}).get(image, {})
        return list(found.get("command", [])), list(found.get("args", []))


async def pull_image(worker: PodWorker, container: Container) -> bool:
    """Pull the image (or find it present) as the pull policy says; retry with back-off."""
    image = container.spec.get("image", "")
    attempt = 0
    catalog = worker.kubelet.cluster.images
    pulled = worker.kubelet.pulled.setdefault(worker.node, set())
    while not worker.terminating:
        try:
            ref = parse_reference(image)
        except InvalidImageNameError as exc:
            container.state = {"waiting": {"reason": "InvalidImageName", "message": str(exc)}}
            worker.event("InspectFailed", str(exc), container, "Warning")
            worker.event("Failed", "Error: InvalidImageName", container, "Warning")
            worker.write_status()
            await worker.sleep_unless_terminating(worker.kubelet.settings.backoff_max)
            continue
        policy = container.spec.get("imagePullPolicy", "IfNotPresent")
        present = ref.full in pulled
        if (present and policy != "Always") or policy == "Never":
            if not present:
                message = f'Container image "{image}" is not present with pull policy of Never'
                container.state = {"waiting": {"reason": "ErrImageNeverPull", "message": message}}
                worker.event("ErrImageNeverPull", message, container, "Warning")
                worker.write_status()
                await worker.sleep_unless_terminating(worker.kubelet.settings.backoff_max)
                continue
            worker.event(
                "Pulled", f'Container image "{image}" already present on machine', container
            )
            container.image_ref = ref.full
            return True
        worker.event("Pulling", f'Pulling image "{image}"', container)
        started = time.monotonic()
        await asyncio.sleep(catalog.pull_seconds())
        error = catalog.pull_error(image, ref)
        if error is None:
            took = f"{int((time.monotonic() - started) * 1000)}ms"
            worker.event(
                "Pulled",
                f'Successfully pulled image "{image}" in {took} ({took} '
                "including waiting). Image size: 0 bytes.",
                container,
            )
            pulled.add(ref.full)
            container.image_ref = ref.full
            return True
        attempt += 1
        container.state = {"waiting": {"reason": "ErrImagePull", "message": error}}
        worker.event("Failed", f'Failed to pull image "{image}": {error}', container, "Warning")
        worker.event("Failed", "Error: ErrImagePull", container, "Warning")
        worker.write_status()
        await worker.sleep_unless_terminating(worker.backoff(attempt) / 2)
        message = f'Back-off pulling image "{image}": ErrImagePull: {error}'
        container.state = {"waiting": {"reason": "ImagePullBackOff", "message": message}}
        worker.event("BackOff", f'Back-off pulling image "{image}"', container)
        worker.event("Failed", "Error: ImagePullBackOff", container, "Warning")
        worker.write_status()
        await worker.sleep_unless_terminating(worker.backoff(attempt))
    return False
