"""Request payloads for the load test, built once at start: encoded images of several sizes, multipart bodies.

Real photographs (scikit-image ships a few) resized with Pillow when both are
installed; otherwise procedural PNGs written with the standard library alone,
so the locustfile also runs in a bare Locust container.
"""

from __future__ import annotations

import base64
import io
import math
import random
import struct
import uuid
import zlib
from dataclasses import dataclass

# (width, height, format, weight): most client images are small thumbnails, a few are camera-sized.
SIZES: tuple[tuple[int, int, str, int], ...] = (
    (64, 64, "PNG", 4),
    (160, 120, "PNG", 3),
    (320, 240, "JPEG", 2),
    (640, 480, "JPEG", 1),
)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@dataclass(frozen=True)
class EncodedImage:
    label: str  # e.g. "chelsea-320x240"
    content_type: str
    data: bytes
    b64: str


class ImagePool:
    """Pre-encoded images; `pick()` draws one with the size weights of SIZES."""

    def __init__(self, images: list[tuple[EncodedImage, int]]) -> None:
        self.images = [image for image, _ in images]
        self._weights = [weight for _, weight in images]
        self.source = "photos" if any(i.label.split("-")[0] in PHOTOS for i in self.images) else "procedural"

    def pick(self, rng: random.Random) -> EncodedImage:
        return rng.choices(self.images, weights=self._weights, k=1)[0]


def _encoded(label: str, fmt: str, data: bytes) -> EncodedImage:
    content_type = "image/png" if fmt == "PNG" else "image/jpeg"
    return EncodedImage(label=label, content_type=content_type, data=data, b64=base64.b64encode(data).decode())


def _photo_pool() -> list[tuple[EncodedImage, int]]:
    import numpy as np
    from PIL import Image
    from skimage import data

    out = []
    for name in PHOTOS:
        array = getattr(data, name)()
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        source = Image.fromarray(array[..., :3])
        for width, height, fmt, weight in SIZES:
            buffer = io.BytesIO()
            source.resize((width, height), Image.BILINEAR).save(
                buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {})
            )
            out.append((_encoded(f"{name}-{width}x{height}", fmt, buffer.getvalue()), weight))
    return out


def png_rgb(width: int, height: int, pixel) -> bytes:
    """A minimal RGB PNG (no Pillow): `pixel(x, y) -> (r, g, b)`."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type 0 for every scanline
        for x in range(width):
            rows.extend(pixel(x, y))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + chunk(b"IEND", b"")
    )


def _procedural_pool() -> list[tuple[EncodedImage, int]]:
    out = []
    for seed in range(len(PHOTOS)):
        for width, height, _, weight in SIZES:
            def pixel(x: int, y: int, s: int = seed, w: int = width, h: int = height) -> tuple[int, int, int]:
                u, v = x / w, y / h
                return (int(127 + 127 * math.sin(6 * u + s)), int(127 + 127 * math.cos(5 * v - s)), int(255 * (u * v)))

            out.append((_encoded(f"pattern{seed}-{width}x{height}", "PNG", png_rgb(width, height, pixel)), weight))
    return out


def image_pool() -> ImagePool:
    try:
        return ImagePool(_photo_pool())
    except ImportError:
        return ImagePool(_procedural_pool())


def multipart_body(images: list[EncodedImage], fields: dict[str, str]) -> tuple[bytes, str]:
    """`multipart/form-data` with one `files` part per image (FastHttpUser has no `files=`)."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for index, image in enumerate(images):
        ext = "png" if image.content_type == "image/png" else "jpg"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{index}-{image.label}.{ext}"\r\n'
            f"Content-Type: {image.content_type}\r\n\r\n"
        )
        parts.append(head.encode() + image.data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def unit_vector(rng: random.Random, dim: int) -> list[float]:
    values = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]
