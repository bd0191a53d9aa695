"""Host-side cost per image of what a GPU batch needs: preprocessing and the batch copy.

    python -m loadtests.bench_preprocess            # prints microseconds per 224 x 224 image

Rows: the preprocessing the service does (`ImagePreprocess.apply`: one multiply-add into channels-first
float32), the three-pass form it replaced (float conversion, subtract, divide, float transpose), a float32
copy into a batch buffer, and the float32 -> float16 conversion an fp16-input graph would need on the host.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from service.media.images import ImagePreprocess

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def three_pass(rgb: Image.Image) -> np.ndarray:
    pixels = np.asarray(rgb, dtype=np.float32) * (1.0 / 255.0)
    pixels = (pixels - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def per_call_us(step, repeats: int) -> float:
    step()
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args(argv)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    preprocess = ImagePreprocess(height=args.size, width=args.size, resize="bilinear", mean=MEAN, std=STD)
    item = preprocess.apply(rgb)
    assert np.abs(item - three_pass(rgb)).max() < 1e-5
    row32, row16 = np.empty_like(item), np.empty(item.shape, np.float16)
    rows = {
        "ImagePreprocess.apply (one multiply-add)": lambda: preprocess.apply(rgb),
        "three passes + float transpose (before)": lambda: three_pass(rgb),
        "float32 copy into a batch row": lambda: np.copyto(row32, item),
        "float32 -> float16 into a batch row": lambda: np.copyto(row16, item, casting="same_kind"),
    }
    print(f"{args.size} x {args.size} RGB image, numpy {np.__version__}")
    for name, step in rows.items():
        print(f"  {name:42s} {per_call_us(step, args.repeats):8.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
