"""The host benchmark's inputs: real photos as 224 x 224 JPEGs and as 12-megapixel (4000 x 3000) JPEGs, and the
multipart request bodies that carry them, written to files for the load generator.

Several different photos, so that nothing in the path can serve a repeat from memory (the server also runs
with its embedding cache off).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loadtests.bench_gpu import multipart

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")
PHONE_SIZE = (4000, 3000)  # a 12 MP phone photo
QUALITY = 90


@dataclass(frozen=True)
class Payload:
    """One kind of request: `per_request` JPEGs of one size (key e.g. '224x8', '12mpx1')."""

    key: str
    size: str  # '224' or '12mp'
    per_request: int

    @staticmethod
    def parse(key: str) -> Payload:
        size, _, count = key.partition("x")
        if size not in ("224", "12mp") or not count.isdigit() or int(count) < 1:
            raise ValueError(f"payload {key!r}: expected 224xN or 12mpxN")
        return Payload(key, size, int(count))


def photos() -> list[np.ndarray]:
    """scikit-image's colour photos (shipped with it: nothing is downloaded), RGB uint8."""
    from skimage import data

    return [getattr(data, name)()[..., :3] for name in PHOTOS]


def _jpeg(image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY, **options)
    return buffer.getvalue()


def small_jpegs(count: int, side: int = 224) -> list[bytes]:
    """`count` different side x side JPEGs: each photo, then mirrored and cropped variants of it."""
    from PIL import Image, ImageOps

    out: list[bytes] = []
    sources = [Image.fromarray(p) for p in photos()]
    variant = 0
    while len(out) < count:
        for source in sources:
            width, height = source.size
            margin = (variant * 17) % max(1, min(width, height) // 4)
            image = source.crop((margin, margin, width - margin, height - margin))
            image = ImageOps.mirror(image) if variant % 2 else image
            out.append(_jpeg(image.resize((side, side), Image.Resampling.BICUBIC)))
            if len(out) == count:
                break
        variant += 1
    return out


def phone_jpegs(count: int) -> list[bytes]:
    """`count` different 4000 x 3000 JPEGs (about 1 MB each): photos upscaled to a phone camera's size, with a
    little sensor-like noise so that they compress like a photo rather than like a smooth upscale."""
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for source in photos()[:count]:
        image = Image.fromarray(source).resize(PHONE_SIZE, Image.Resampling.BICUBIC)
        pixels = np.asarray(image, np.int16) + rng.integers(-2, 3, (*PHONE_SIZE[::-1], 3), dtype=np.int16)
        out.append(_jpeg(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))))
    return out


def write_images(folder: Path, images: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(images):
        path = folder / f"{i:02d}.jpg"
        path.write_bytes(data)
        paths.append(path)
    return paths


def write_bodies(folder: Path, images: list[bytes], per_request: int) -> list[Path]:
    """One multipart body per file, each of `per_request` images taken in turn from `images` (so that every
    image is sent and neighbouring bodies differ); the content type is CONTENT_TYPE."""
    folder.mkdir(parents=True, exist_ok=True)
    bodies = max(1, len(images) // per_request) if per_request > 1 else len(images)
    paths = []
    for b in range(bodies):
        chosen = [images[(b * per_request + k) % len(images)] for k in range(per_request)]
        body, content_type = multipart(chosen, "JPEG")
        assert content_type == CONTENT_TYPE
        path = folder / f"body-{b:02d}.bin"
        path.write_bytes(body)
        paths.append(path)
    return paths


CONTENT_TYPE = multipart([b""], "JPEG")[1]


@dataclass
class Inputs:
    """The images of each size on disk (for the decode loops) and the bodies of each payload (for wrk)."""

    images: dict[str, list[Path]]
    image_bytes: dict[str, float]  # mean encoded size per image size
    bodies: dict[str, list[Path]]


def build_inputs(folder: Path, payloads: list[Payload], small_count: int = 16, phone_count: int = 4) -> Inputs:
    sizes = {p.size for p in payloads}
    encoded: dict[str, list[bytes]] = {}
    if "224" in sizes:
        encoded["224"] = small_jpegs(small_count)
    if "12mp" in sizes:
        encoded["12mp"] = phone_jpegs(phone_count)
    images = {size: write_images(folder / "images" / size, data) for size, data in encoded.items()}
    means = {size: float(np.mean([len(d) for d in data])) for size, data in encoded.items()}
    bodies = {p.key: write_bodies(folder / "bodies" / p.key, encoded[p.size], p.per_request) for p in payloads}
    return Inputs(images, means, bodies)
