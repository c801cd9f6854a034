"""Turning fetched bytes into model inputs: built-ins for arrays, images and video frames, or
a user function ``module:function``. A decoder returns a list of samples (a video gives
several frames), each a numpy array of the same shape for one model batch."""

from __future__ import annotations

import importlib
import io
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from mlyard.errors import ConfigError
from mlyard.extras import require_extra

Decoder = Callable[[bytes], list[np.ndarray[Any, Any]]]


_NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=][a-zA-Z]\d*)', 'fortran_order': False, 'shape': \(([\d, ]*)\), \}"
)


#: ``.npy`` headers seen -> (dtype, element count, shape): events usually carry arrays of a
#: few layouts.
_npy_layouts: dict[bytes, tuple[np.dtype[Any], int, tuple[int, ...]]] = {}
_NPY_LAYOUTS_KEPT = 256


def _npy(data: bytes) -> list[np.ndarray[Any, Any]]:
    # Fast path for the common header (numpy's own parser evaluates it with ast: slow for the
    # many small arrays events carry); anything else goes through np.load.
    if data[:8] == b"\x93NUMPY\x01\x00":
        end = 10 + int.from_bytes(data[8:10], "little")
        header = data[10:end]
        layout = _npy_layouts.get(header) or _npy_layout(header)
        if layout is not None:
            dtype, count, shape = layout
            if len(data) - end >= count * dtype.itemsize:  # else np.load says what is short
                array = np.frombuffer(data, dtype, count, end)  # positional: keywords cost 2x
                return [array if len(shape) == 1 else array.reshape(shape)]
    return [np.load(io.BytesIO(data), allow_pickle=False)]


def _npy_layout(header: bytes) -> tuple[np.dtype[Any], int, tuple[int, ...]] | None:
    match = _NPY_HEADER.match(header)
    if match is None:
        return None
    shape = tuple(int(d) for d in match.group(2).split(b",") if d.strip())
    layout = (np.dtype(match.group(1).decode()), math.prod(shape), shape)
    if len(_npy_layouts) >= _NPY_LAYOUTS_KEPT:
        _npy_layouts.clear()
    _npy_layouts[header] = layout
    return layout


def _raw(data: bytes) -> list[np.ndarray[Any, Any]]:
    return [np.frombuffer(data, dtype=np.uint8)]


def _image_decoder() -> Decoder:
    require_extra("consume", needed_by="The image decoder")
    from PIL import Image

    def decode(data: bytes) -> list[np.ndarray[Any, Any]]:
        with Image.open(io.BytesIO(data)) as image:
            return [np.asarray(image.convert("RGB"))]

    return decode


def _video_decoder(fps: float, max_frames: int) -> Decoder:
    require_extra("video", needed_by="The video decoder")
    import cv2

    def decode(data: bytes) -> list[np.ndarray[Any, Any]]:
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".video") as handle:
            handle.write(data)
            handle.flush()
            capture = cv2.VideoCapture(handle.name)
            native = capture.get(cv2.CAP_PROP_FPS) or fps
            step = max(1, round(native / fps))
            frames: list[np.ndarray[Any, Any]] = []
            index = 0
            while len(frames) < max_frames and capture.grab():
                if index % step == 0:  # only sampled frames are converted
                    ok, frame = capture.retrieve()
                    if ok:  # RGB like the image decoder (OpenCV decodes to BGR)
                        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                index += 1
            capture.release()
        if not frames:
            raise ValueError("no frame could be decoded")
        return frames

    return decode


def make_decoder(name: str, *, fps: float = 1.0, max_frames: int = 16) -> Decoder:
    """The decoder called ``name``; checked at start, so a missing library fails fast."""
    if name == "npy":
        return _npy
    if name == "raw":
        return _raw
    if name == "image":
        return _image_decoder()
    if name == "video":
        return _video_decoder(fps, max_frames)
    module_name, _, function_name = name.partition(":")
    if not function_name:
        raise ConfigError(
            f"Unknown decoder {name!r}.",
            hint="Use npy, raw, image, video or your own function as module:function.",
        )
    try:
        function = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"Cannot import the decoder {name!r}: {exc}") from exc

    def decode(data: bytes) -> list[np.ndarray[Any, Any]]:
        value = function(data)
        # A list is several samples (e.g. frames); anything else is one sample.
        if isinstance(value, list):
            return [np.asarray(sample) for sample in value]
        return [np.asarray(value)]

    return decode
