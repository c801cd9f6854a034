"""Files and directories (``pathlib.Path`` outputs), as deterministic tar archives."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tarfile


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class PathMaterializer:
    name = "path"

    def can_save(self, value: object) -> bool:
        return isinstance(value, Path) and (value.is_file() or value.is_dir())

    def save(self, value: object) -> tuple[bytes, dict[str, Any]]:
        import tarfile  # ~5 ms: only when a path is stored

        assert isinstance(value, Path)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
            if value.is_file():
                archive.add(value, arcname=value.name, filter=_reset)
            else:
                for path in sorted(value.rglob("*")):
                    if path.is_symlink():
                        continue  # links may point outside the directory: not stored
                    relative = path.relative_to(value).as_posix()
                    archive.add(
                        path, arcname=f"{value.name}/{relative}", recursive=False, filter=_reset
                    )
        return buffer.getvalue(), {"name": value.name, "directory": value.is_dir()}

    def load(self, data: bytes, metadata: dict[str, Any]) -> object:
        import tarfile

        target = Path(tempfile.mkdtemp(prefix="mlyard-artifact-"))
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as archive:
            archive.extractall(target, filter="data")  # refuses absolute and .. members
        return target / metadata["name"]
