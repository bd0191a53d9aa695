"""Cheaper decoding of what users send (issue 27 item 3): a JPEG is decoded by DCT scaling to no less than the
model's input (Image.draft), a video frame is scaled in its RGB conversion the same way; then the usual
antialiased resize. The embeddings must not move: cosine >= 0.999 to the full-size decode, with the demo
encoder and a tiny ViT (random weights, 224 px), on real photos saved as phone-sized JPEGs (4000 x 3000)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from service.media import video as video_module
from service.media.clips import ClipSpec, to_item
from service.media.images import ImageLimits, ImagePreprocess, decode_image, load_image, reduced_size
from service.media.video import FrameSampling, VideoLimits, decode_video
from service.repository import read_entry
from tests.conftest import photo
from tests.video_files import write_video

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")
LIMITS = ImageLimits(max_bytes=1 << 26, max_pixels=40_000_000)
MIN_COSINE = 0.999


class Encoder:
    """One exported encoder run by ONNX Runtime, fed as the server feeds it."""

    def __init__(self, folder: Path) -> None:
        manifest = read_entry(folder).manifest
        shape = manifest.input
        self.preprocess = ImagePreprocess(height=shape.image_size[0], width=shape.image_size[1], resize=shape.resize,
                                          mean=tuple(shape.mean), std=tuple(shape.std), dtype=shape.dtype)
        self.clip = ClipSpec(frames_per_clip=shape.frames_per_clip, layout=shape.layout)
        graph = folder / manifest.components["encoder"].files["fp32"]
        self.session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])

    def pooled(self, pixels: list[np.ndarray]) -> np.ndarray:
        batch = np.stack([to_item(p[None], self.clip) for p in pixels])
        return self.session.run(["pooled"], {"pixel_values": batch})[0]


@pytest.fixture(scope="module")
def encoders(demo_repository, tmp_path_factory) -> dict[str, Encoder]:
    from export.pipeline import ExportOptions
    from export.vit import RandomViTOptions, export_random_vit
    from models.vit import ViTConfig

    root = tmp_path_factory.mktemp("tiny_vit")
    config = ViTConfig(image_size=224, patch_size=16, dim=64, depth=2, heads=2)
    export_random_vit(RandomViTOptions(config=config, export=ExportOptions(name="tinyvit", out=root)), log=lambda _: 0)
    return {"demo": Encoder(demo_repository / "demo"), "tiny ViT": Encoder(root / "tinyvit")}


def phone_jpeg(image: np.ndarray) -> bytes:
    """A photo as a phone would send it: 4000 x 3000, JPEG quality 90."""
    buffer = io.BytesIO()
    Image.fromarray(image).resize((4000, 3000), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def jpegs() -> dict[str, bytes]:
    return {name: phone_jpeg(photo(name)) for name in PHOTOS}


@pytest.mark.parametrize("model", ["demo", "tiny ViT"])
def test_drafted_jpegs_embed_like_the_full_decode(encoders, jpegs, model):
    encoder = encoders[model]
    full = [encoder.preprocess.apply(decode_image(data, LIMITS)) for data in jpegs.values()]
    drafted = [load_image(data, encoder.preprocess, LIMITS) for data in jpegs.values()]
    agree = cosines(encoder.pooled(full), encoder.pooled(drafted))
    assert agree.min() >= MIN_COSINE, dict(zip(jpegs, agree.round(6), strict=True))
    assert not np.array_equal(full[0], drafted[0])  # the drafted decode did take the other path


def test_the_draft_decodes_at_least_the_input_size(jpegs):
    preprocess = ImagePreprocess(height=224, width=224, resize="bilinear", mean=(0.5,) * 3, std=(0.5,) * 3)
    image = Image.open(io.BytesIO(jpegs["chelsea"]))
    image.draft("RGB", (224, 224))
    assert image.size == reduced_size((4000, 3000), preprocess) == (500, 375)  # 1/8: 375 >= 224
    assert reduced_size((300, 200), preprocess) == (300, 200)  # nothing to spare: decoded whole


@pytest.mark.parametrize("model", ["demo", "tiny ViT"])
def test_scaled_video_frames_embed_like_full_size_frames(encoders, monkeypatch, model):
    encoder = encoders[model]
    frames = [np.asarray(Image.fromarray(photo(name)).resize((1280, 960), Image.Resampling.BICUBIC))
              for name in PHOTOS]
    data = write_video(frames)
    limits = VideoLimits(max_bytes=1 << 26, max_pixels=40_000_000, max_frames=100, max_decoded_bytes=1 << 30)
    sampling = FrameSampling(stride=1)
    scaled, _ = decode_video(data, sampling, len(frames), encoder.preprocess, limits)
    monkeypatch.setattr(video_module, "reduced_size", lambda size, preprocess: size)  # the full-size conversion
    full, _ = decode_video(data, sampling, len(frames), encoder.preprocess, limits)
    assert not np.array_equal(scaled, full)
    agree = cosines(encoder.pooled(list(full)), encoder.pooled(list(scaled)))
    assert agree.min() >= MIN_COSINE, agree.round(6)
