"""Server-side frame sampling of videos (service/media/video.py) on MP4 and WebM files written with PyAV."""

import pytest

from service.errors import InvalidInput, PayloadTooLarge, UnprocessableInput
from service.media.images import ImagePreprocess
from service.media.video import FrameSampling, VideoLimits, decode_video, looks_like_video
from tests.video_files import counting_video, frame_numbers

RAW = ImagePreprocess(height=16, width=16, resize="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
LIMITS = VideoLimits(max_bytes=10_000_000, max_pixels=1_000_000, max_frames=1000)


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return counting_video(30, fps=10)


def sample(data: bytes, k: int, **kw):
    return decode_video(data, FrameSampling(**kw), k, RAW, LIMITS)


def test_stride_takes_every_nth_frame_and_echoes_it(mp4):
    frames, echo = sample(mp4, 4, stride=3)
    assert frames.shape == (4, 3, 16, 16)
    assert frame_numbers(frames) == [0, 3, 6, 9] == echo.frame_indices
    assert echo.mode == "stride" and echo.stride == 3 and echo.padded == 0
    assert echo.timestamps_s == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert echo.source["frames"] == 30 and echo.source["fps"] == pytest.approx(10)
    assert echo.source["width"] == 32 and echo.resolution == [16, 16]


def test_fps_samples_by_time_from_start(mp4):
    frames, echo = sample(mp4, 3, fps=2.5, start_s=1.0)  # one frame every 0.4 s from 1.0 s
    assert frame_numbers(frames) == [10, 14, 18] == echo.frame_indices
    assert echo.mode == "fps" and echo.fps == 2.5


def test_uniform_takes_segment_centres_over_the_whole_video(mp4):
    frames, echo = sample(mp4, 3)
    assert frame_numbers(frames) == [5, 15, 25] and echo.mode == "uniform"
    one, _ = sample(mp4, 1)
    assert frame_numbers(one) == [15]


def test_a_video_that_ends_early_is_padded_with_its_last_frame(mp4):
    frames, echo = sample(mp4, 4, stride=8, start_s=1.5)
    assert frame_numbers(frames) == [15, 23, 23, 23] and echo.padded == 2


def test_webm_is_read_too():
    webm = counting_video(12, fps=6, container="webm", codec="libvpx-vp9")
    assert looks_like_video(webm)
    frames, echo = sample(webm, 3, stride=4)
    assert echo.frame_indices == [0, 4, 8]
    assert [abs(a - b) <= 1 for a, b in zip(frame_numbers(frames), [0, 4, 8])] == [True] * 3
    _, uniform = sample(webm, 3)  # WebM headers carry no frame count: the packets are counted
    assert uniform.frame_indices == [2, 6, 10] and uniform.source["frames"] == 12


def test_bad_videos_are_clear_client_errors(mp4):
    with pytest.raises(InvalidInput):
        sample(b"", 2)  # what an MP4 without frames comes to
    with pytest.raises(InvalidInput):
        sample(mp4[: len(mp4) // 3], 2)  # truncated
    with pytest.raises(InvalidInput):
        sample(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64, 2)  # a header and nothing else
    with pytest.raises(UnprocessableInput):
        sample(mp4, 2, start_s=100.0)  # no frame there
    with pytest.raises(UnprocessableInput):
        FrameSampling(stride=2, fps=3.0)


def test_limits_refuse_before_decoding(mp4):
    with pytest.raises(PayloadTooLarge):
        decode_video(mp4, FrameSampling(), 2, RAW, VideoLimits(max_bytes=100, max_pixels=10**6, max_frames=100))
    with pytest.raises(PayloadTooLarge):
        decode_video(mp4, FrameSampling(), 2, RAW, VideoLimits(max_bytes=10**7, max_pixels=32 * 31, max_frames=100))
    with pytest.raises(PayloadTooLarge):
        decode_video(mp4, FrameSampling(), 2, RAW, VideoLimits(max_bytes=10**7, max_pixels=10**6, max_frames=20))


def test_magic_numbers_tell_videos_from_images(mp4, photos):
    assert looks_like_video(mp4) and not any(looks_like_video(png) for png in photos.values())
