"""DecodeMemory: concurrent decodes share one budget; one that would not fit waits, one larger than the budget is
refused. And each image's estimate (decode_bytes) covers what decoding it holds."""

from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from service.errors import PayloadTooLarge
from service.media.images import ImageLimits, ImagePreprocess, decode_bytes, load_image, opened
from service.media.memory import DecodeMemory

PRE = ImagePreprocess(height=64, width=64, resize="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)


def test_a_decode_that_does_not_fit_waits_for_the_one_holding_the_budget():
    memory = DecodeMemory(100)
    first_in, first_out, second_in = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def first():
        with memory.reserve(70):
            order.append("first holds 70")
            first_in.set()
            first_out.wait(10)
            order.append("first done")

    def second():
        first_in.wait(10)
        with memory.reserve(60):  # 70 + 60 > 100: waits for the first
            order.append(f"second holds 60 ({memory.held_bytes} held)")
            second_in.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    assert first_in.wait(10)
    assert not second_in.wait(0.2)  # bounded check that it is still waiting while the first holds 70
    with memory.reserve(30):  # what fits beside the first does not wait
        assert memory.held_bytes == 100
    first_out.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first holds 70", "first done", "second holds 60 (60 held)"]
    assert memory.held_bytes == 0


def test_a_decode_larger_than_the_whole_budget_is_refused():
    with pytest.raises(PayloadTooLarge) as refused, DecodeMemory(1000).reserve(1001):
        pass
    assert refused.value.detail == {"decode_bytes": 1001, "image_decode_budget_bytes": 1000}


@pytest.mark.parametrize(("fmt", "mode", "per_pixel"), [("PNG", "RGB", 4), ("PNG", "RGBA", 8), ("PNG", "L", 5),
                                                         ("WEBP", "RGB", 16), ("GIF", "P", 5)])
def test_the_estimate_counts_mode_conversion_and_decoder_buffers(fmt, mode, per_pixel):
    buffer = io.BytesIO()
    Image.new(mode, (300, 200)).save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    limits = ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24)
    with opened(buffer.getvalue(), limits) as image:
        assert decode_bytes(image, PRE) >= 300 * 200 * per_pixel


def test_an_image_reserves_its_estimate_while_it_decodes():
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2000)).save(buffer, format="PNG")
    memory = DecodeMemory(1 << 30)
    seen = []
    real = memory.reserve

    def spy(nbytes):
        seen.append(nbytes)
        return real(nbytes)

    memory.reserve = spy
    load_image(buffer.getvalue(), PRE, ImageLimits(max_bytes=1 << 24, max_pixels=1 << 24, memory=memory))
    assert seen
    assert seen[0] >= 3000 * 2000 * 4
    assert memory.held_bytes == 0
