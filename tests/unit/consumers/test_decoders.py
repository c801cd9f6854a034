"""Built-in decoders and user decoder functions."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlyard.consumers.decoders import make_decoder
from mlyard.errors import ConfigError


def _npy(array: np.ndarray[Any, Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def as_rows(data: bytes) -> list[list[int]]:
    """A user decoder: each byte becomes one sample."""
    return [[byte] for byte in data]


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.float32).reshape(3, 4),
        np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),  # numpy's own parser
        np.array(3.5),
        np.linspace(0, 1, 64),  # one dimension: no reshape
        np.zeros((0, 3), dtype=np.uint8),
    ],
)
def test_npy_round_trips(array: np.ndarray[Any, Any]) -> None:
    [decoded] = make_decoder("npy")(_npy(array))
    assert decoded.dtype == array.dtype
    np.testing.assert_array_equal(decoded, array)


def test_a_truncated_npy_is_refused_not_read_short() -> None:
    data = _npy(np.arange(64, dtype=np.float64))
    with pytest.raises(ValueError):
        make_decoder("npy")(data[:-8])


def test_image_decodes_to_rgb_pixels() -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (5, 3), color=200).save(buffer, format="PNG")
    [pixels] = make_decoder("image")(buffer.getvalue())
    assert pixels.shape == (3, 5, 3)
    assert int(pixels[0, 0, 0]) == 200


def test_raw_gives_the_bytes() -> None:
    [raw] = make_decoder("raw")(b"\x01\x02")
    assert raw.tolist() == [1, 2]


def test_a_user_function_returning_a_list_gives_one_sample_per_item() -> None:
    decode = make_decoder(f"{__name__}:as_rows")
    assert [sample.tolist() for sample in decode(b"\x05\x07")] == [[5], [7]]


def test_a_user_function_that_does_not_exist_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="Cannot import"):
        make_decoder(f"{__name__}:no_such_function")


def test_video_frames_are_sampled_at_the_rate_up_to_max_frames(tmp_path: Path) -> None:
    import cv2

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30.0, (16, 8))
    for index in range(60):  # 2 s at 30 fps; frame i has blue level 4 * i (OpenCV writes BGR)
        frame = np.zeros((8, 16, 3), np.uint8)
        frame[..., 0] = 4 * index
        writer.write(frame)
    writer.release()
    frames = make_decoder("video", fps=5, max_frames=4)(path.read_bytes())
    assert len(frames) == 4
    assert frames[0].shape == (8, 16, 3)
    blue = [int(frame[0, 0, 2]) for frame in frames]  # RGB: blue is the last channel
    assert all(abs(level - 4 * i) <= 3 for level, i in zip(blue, (0, 6, 12, 18), strict=True))
    assert int(frames[1][0, 0, 0]) <= 3  # red stays dark


def test_a_video_that_cannot_be_decoded_is_refused() -> None:
    with pytest.raises(ValueError, match="no frame"):
        make_decoder("video")(b"not a video")
