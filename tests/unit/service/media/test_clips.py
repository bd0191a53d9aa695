"""The manifest-driven clip rule of service/media: pad short clips by repeating the first frame."""

import numpy as np
import pytest

from service.errors import UnprocessableInput
from service.media.clips import ClipSpec, to_item


def frames(k: int) -> np.ndarray:
    return np.stack([np.full((3, 4, 4), i, np.float32) for i in range(k)])


def test_one_image_is_repeated_to_fill_the_clip():
    item = to_item(frames(1), ClipSpec(frames_per_clip=2, layout="NTCHW"))
    assert item.shape == (2, 3, 4, 4) and (item == 0).all()


def test_short_clip_is_padded_at_the_front_so_the_newest_frame_stays_last():
    item = to_item(frames(2), ClipSpec(frames_per_clip=4, layout="NTCHW"))
    assert [float(f[0, 0, 0]) for f in item] == [0.0, 0.0, 0.0, 1.0]


def test_full_clip_passes_unchanged_and_too_long_is_refused():
    spec = ClipSpec(frames_per_clip=2, layout="NTCHW")
    np.testing.assert_array_equal(to_item(frames(2), spec), frames(2))
    with pytest.raises(UnprocessableInput):
        to_item(frames(3), spec)


def test_image_models_take_exactly_one_frame():
    spec = ClipSpec()
    assert to_item(frames(1), spec).shape == (3, 4, 4)
    with pytest.raises(UnprocessableInput):
        to_item(frames(2), spec)


def test_channels_first_clips_put_time_after_channels():
    item = to_item(frames(3), ClipSpec(frames_per_clip=4, layout="NCTHW"))
    assert item.shape == (3, 4, 4, 4)
    assert [float(item[0, t, 0, 0]) for t in range(4)] == [0.0, 0.0, 1.0, 2.0]
    assert item.flags["C_CONTIGUOUS"]
