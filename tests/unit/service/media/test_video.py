"""Server-side frame sampling of videos (service/media/video.py) on MP4 and WebM files written with PyAV."""

import pytest

from service.errors import InvalidInput, PayloadTooLarge, UnprocessableInput
from service.media.images import ImagePreprocess
from service.media.video import FrameSampling, VideoLimits, decode_video, looks_like_video
from tests.video_files import counting_video, frame_numbers, overstated_video

RAW = ImagePreprocess(height=16, width=16, resize="bilinear", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
LIMITS = VideoLimits(max_bytes=10_000_000, max_pixels=1_000_000, max_frames=1000, max_decoded_bytes=2**30)


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return counting_video(30, fps=10)


def sample(data: bytes, k: int, **kw):
    return decode_video(data, FrameSampling(**kw), k, RAW, LIMITS)


def test_stride_takes_every_nth_frame_and_echoes_it(mp4):
    frames, echo = sample(mp4, 4, stride=3)
    assert frames.shape == (4, 3, 16, 16)
    assert frame_numbers(frames) == [0, 3, 6, 9] == echo.frame_indices
    assert echo.mode == "stride"
    assert echo.stride == 3
    assert echo.padded == 0
    assert echo.timestamps_s == pytest.approx([0.0, 0.3, 0.6, 0.9])
    assert echo.source["frames"] == 30
    assert echo.source["fps"] == pytest.approx(10)
    assert echo.source["width"] == 32
    assert echo.resolution == [16, 16]


def test_fps_samples_by_time_from_start(mp4):
    frames, echo = sample(mp4, 3, fps=2.5, start_s=1.0)  # one frame every 0.4 s from 1.0 s
    assert frame_numbers(frames) == [10, 14, 18] == echo.frame_indices
    assert echo.mode == "fps"
    assert echo.fps == 2.5


def test_uniform_takes_segment_centres_over_the_whole_video(mp4):
    frames, echo = sample(mp4, 3)
    assert frame_numbers(frames) == [5, 15, 25]
    assert echo.mode == "uniform"
    one, _ = sample(mp4, 1)
    assert frame_numbers(one) == [15]


def test_a_video_that_ends_early_is_padded_with_its_last_frame(mp4):
    frames, echo = sample(mp4, 4, stride=8, start_s=1.5)
    assert frame_numbers(frames) == [15, 23, 23, 23]
    assert echo.padded == 2


def test_webm_is_read_too():
    webm = counting_video(12, fps=6, container="webm", codec="libvpx-vp9")
    assert looks_like_video(webm)
    frames, echo = sample(webm, 3, stride=4)
    assert echo.frame_indices == [0, 4, 8]
    assert [abs(a - b) <= 1 for a, b in zip(frame_numbers(frames), [0, 4, 8], strict=True)] == [True] * 3
    _, uniform = sample(webm, 3)  # WebM headers carry no frame count: the packets are counted
    assert uniform.frame_indices == [2, 6, 10]
    assert uniform.source["frames"] == 12


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
        decode_video(
            mp4,
            FrameSampling(),
            2,
            RAW,
            VideoLimits(max_bytes=100, max_pixels=10**6, max_frames=100, max_decoded_bytes=2**30),
        )
    with pytest.raises(PayloadTooLarge):
        decode_video(
            mp4,
            FrameSampling(),
            2,
            RAW,
            VideoLimits(max_bytes=10**7, max_pixels=32 * 31, max_frames=100, max_decoded_bytes=2**30),
        )
    with pytest.raises(PayloadTooLarge):
        decode_video(
            mp4,
            FrameSampling(),
            2,
            RAW,
            VideoLimits(max_bytes=10**7, max_pixels=10**6, max_frames=20, max_decoded_bytes=2**30),
        )


def test_magic_numbers_tell_videos_from_images(mp4, photos):
    assert looks_like_video(mp4)
    assert not any(looks_like_video(png) for png in photos.values())


def test_a_header_that_claims_more_frames_than_the_file_holds_is_sampled_over_the_real_ones():
    video = overstated_video(30, keep=10)  # the header says 30; 10 decode
    frames, echo = sample(video, 3)
    assert frame_numbers(frames) == [1, 5, 8] == echo.frame_indices  # segment centres of the 10 real frames
    assert echo.source["frames"] == 10
    assert echo.padded == 0
    one, _ = sample(video, 1)  # used to answer "the video has no frame at or after start_s=0.0"
    assert frame_numbers(one) == [5]


def test_the_decode_budget_and_frame_span_are_refused_before_any_frame_is_decoded(mp4, monkeypatch):
    import service.media.video as video

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the limits were checked")

    monkeypatch.setattr(video, "_sample", no_decoding)
    small = VideoLimits(max_bytes=10**7, max_pixels=10**6, max_frames=1000, max_decoded_bytes=40_000)
    with pytest.raises(PayloadTooLarge) as refused:
        decode_video(mp4, FrameSampling(stride=1), 4, RAW, small)
    assert refused.value.code == "video_too_large"
    assert refused.value.detail["decoded_bytes"] > 40_000
    short = VideoLimits(max_bytes=10**7, max_pixels=10**6, max_frames=20, max_decoded_bytes=2**30)
    with pytest.raises(PayloadTooLarge) as refused:
        decode_video(mp4, FrameSampling(stride=8), 4, RAW, short)  # frames 0..24 of 30: 25 > 20
    assert refused.value.code == "video_too_long"
    with pytest.raises(PayloadTooLarge):
        decode_video(mp4, FrameSampling(fps=1.0), 3, RAW, short)  # 0 s .. 2 s at 10 fps: 21 frames > 20


def test_the_decode_estimate_grows_with_the_source_and_the_output():
    from service.media.video import _Source, decode_bytes

    small = _Source(frames=10, fps=10, duration_s=1, width=64, height=64, codec="h264", pix_fmt="yuv420p")
    large = _Source(frames=10, fps=10, duration_s=1, width=768, height=768, codec="h264", pix_fmt="yuv420p")
    assert decode_bytes(large, 4, RAW) > decode_bytes(small, 4, RAW)
    assert decode_bytes(small, 64, RAW) - decode_bytes(small, 4, RAW) == 2 * 60 * 3 * 16 * 16 * 4
    # 768x768 4:2:0 (1.5 bytes a pixel): 19 decoder frames + one RGB frame, about 21 MB
    assert 15e6 < decode_bytes(large, 1, RAW) < 25e6


def test_video_decodes_wait_for_one_of_the_process_wide_slots():
    """max_concurrent_video_decodes: with 1 slot and 4 decode threads, 4 videos decode one after another;
    images do not wait for the slot."""
    import asyncio
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from service.media.memory import DecodeMemory
    from service.media.payload import RawImage, RawVideo
    from service.metrics import Metrics
    from service.model_pool import ModelPool
    from service.settings import Settings
    from service.state import Executors, Services

    release = threading.Event()
    lock = threading.Lock()
    active, most, calls = [0], [0], []

    def fake_decode(name):
        with lock:
            calls.append(name)
            active[0] += 1
            most[0] = max(most[0], active[0])
        release.wait(10)
        with lock:
            active[0] -= 1
        return name

    async def scenario():
        executors = Executors(decode=ThreadPoolExecutor(4), storage=ThreadPoolExecutor(1),
                              video_slots=asyncio.Semaphore(1), image_memory=DecodeMemory(1 << 30))
        services = Services(config=Settings().config, metrics=Metrics(), models=ModelPool(), store=None,
                            executors=executors)
        videos = [asyncio.create_task(services.decode_item(RawVideo(b""), fake_decode, f"v{i}")) for i in range(4)]
        image = asyncio.create_task(services.decode_item(RawImage(b""), fake_decode, "image"))
        for _ in range(2000):  # until the first video and the image are both in a decode thread
            if len(calls) == 2:
                break
            await asyncio.sleep(0.001)
        started = sorted(calls)
        assert services.executors.video_slots.locked()
        assert not any(v.done() for v in videos)
        release.set()
        done = await asyncio.gather(*videos, image)
        executors.shutdown()
        return started, done

    started, done = asyncio.run(scenario())
    assert started[0] == "image"
    assert started[1].startswith("v")
    assert done == ["v0", "v1", "v2", "v3", "image"]
    assert most[0] == 2


def test_frames_for_a_uint8_model_are_its_pixels_and_are_budgeted_at_a_byte_each(mp4):
    from dataclasses import replace

    from service.media.video import output_bytes

    pixels_model = replace(RAW, dtype="uint8")
    frames, _ = decode_video(mp4, FrameSampling(stride=3), 4, pixels_model, LIMITS)
    floats, _ = sample(mp4, 4, stride=3)
    assert frames.dtype == "uint8"
    assert abs(frames / 255.0 - floats).max() < 1e-6  # RAW normalises by mean 0, std 1: pixel / 255
    assert output_bytes(4, pixels_model) * 4 == output_bytes(4, RAW)
