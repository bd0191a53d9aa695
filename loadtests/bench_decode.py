"""What decoding a phone photo costs the host: a 12 MP JPEG (4000 x 3000) to the model's input, full vs drafted.

    python -m loadtests.bench_decode                # milliseconds per photo, best of --repeats (run it quietly)
    python -m loadtests.bench_decode --size 224 --repeats 20

Rows: the full decode the service did before (`decode_image` at 4000 x 3000, then `ImagePreprocess.apply`:
the antialiased resize and the normalisation), and what it does now (`load_image`: libjpeg's DCT scaling
decodes straight to 1/8 of the size, no less than the input, then the same resize and normalisation). The
photo is scikit-image's chelsea, upscaled and saved at JPEG quality 90, as a phone would send it.
"""

from __future__ import annotations

import argparse
import io
import time

from PIL import Image

from service.media.images import ImageLimits, ImagePreprocess, decode_image, load_image

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LIMITS = ImageLimits(max_bytes=64 * 1024 * 1024, max_pixels=40_000_000)


def phone_photo(width: int = 4000, height: int = 3000) -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.chelsea()).resize((width, height), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def best_ms(step, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return min(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224, help="the model's input side")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    photo = phone_photo()
    preprocess = ImagePreprocess(height=args.size, width=args.size, resize="bilinear", mean=MEAN, std=STD)
    rows = {
        "full decode + resize (before)": lambda: preprocess.apply(decode_image(photo, LIMITS)),
        "drafted decode + resize (now)": lambda: load_image(photo, preprocess, LIMITS),
    }
    print(f"12 MP JPEG ({len(photo) / 1e6:.1f} MB) to {args.size} x {args.size}, Pillow {Image.__version__}, "
          f"best of {args.repeats}")
    measured = {name: best_ms(step, args.repeats) for name, step in rows.items()}
    for name, ms in measured.items():
        print(f"  {name:32s} {ms:8.1f} ms")
    full, drafted = measured.values()
    print(f"  drafted is {full / drafted:.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
