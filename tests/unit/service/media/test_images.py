import io

import numpy as np
import pytest
from PIL import Image

from service.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from service.media.images import ImageLimits, ImagePreprocess, decode_image
from service.media.payload import RawTensor, b64decode, prepare_input
from tests.conftest import photo, png_bytes

LIMITS = ImageLimits(max_bytes=1_000_000, max_pixels=1_000_000)
PRE = ImagePreprocess(height=64, width=64, resize="bilinear", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP"])
def test_formats_decode_to_rgb(fmt):
    image = Image.fromarray(photo("coffee")).resize((90, 60))
    rgb = decode_image(encoded(image, fmt), LIMITS)
    assert rgb.mode == "RGB"
    assert rgb.size == (90, 60)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_other_modes_become_rgb(mode):
    image = Image.new(mode, (10, 10))
    assert decode_image(encoded(image, "PNG"), LIMITS).mode == "RGB"


def pixels(*args):
    return prepare_input(*args).pixels


def test_preprocess_normalises_to_chw():
    rgb = Image.new("RGB", (100, 30), (255, 128, 0))
    x = PRE.apply(rgb)
    assert x.shape == (3, 64, 64)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x[:, 10, 10], [(1 - 0.5) / 0.25, (128 / 255 - 0.5) / 0.25, -2.0], atol=1e-5)


PRE_U8 = ImagePreprocess(height=64, width=64, resize="bilinear", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                         dtype="uint8")


def test_a_uint8_model_gets_its_pixels_laid_out_and_no_float_work():
    """The graph normalises (export/pixels.py): the host resizes and lays out, and the same image's float
    preprocessing is exactly the normalisation of those pixels."""
    rgb = Image.fromarray(photo("coffee")).resize((100, 30))
    pixels = PRE_U8.apply(rgb)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (3, 64, 64)
    assert pixels.flags.c_contiguous
    resized = np.asarray(rgb.resize((64, 64), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(pixels, resized.transpose(2, 0, 1))
    np.testing.assert_allclose(PRE.apply(rgb), (pixels / np.float32(255.0) - 0.5) / 0.25, atol=1e-5)


def test_a_preprocessed_tensor_reaches_a_uint8_model_as_the_pixels_it_was_made_from():
    rgb = Image.fromarray(photo("astronaut")).resize((64, 64))
    from_image = PRE_U8.apply(decode_image(png_bytes(np.asarray(rgb)), LIMITS))
    normalised = PRE.apply(rgb)
    from_tensor = pixels(RawTensor(normalised.tobytes(), "float32", (3, 64, 64)), PRE_U8, LIMITS)
    assert from_tensor.dtype == np.uint8
    np.testing.assert_array_equal(from_tensor, from_image)  # exact: the same batch rows as the image itself
    half = pixels(RawTensor(normalised.astype(np.float16).tobytes(), "float16", (3, 64, 64)), PRE_U8, LIMITS)
    assert np.abs(half.astype(int) - from_image.astype(int)).max() <= 1  # float16 keeps pixels within a grey level
    beyond = np.full((3, 64, 64), 9.0, np.float32)  # past white: the nearest pixel is white
    np.testing.assert_array_equal(pixels(RawTensor(beyond.tobytes(), "float32", (3, 64, 64)), PRE_U8, LIMITS), 255)


def test_garbage_and_truncated_images_are_400():
    with pytest.raises(InvalidInput):
        decode_image(b"definitely not an image", LIMITS)
    with pytest.raises(InvalidInput):
        decode_image(b"", LIMITS)
    good = png_bytes(photo("astronaut"), (100, 100))
    with pytest.raises(InvalidInput):
        decode_image(good[: len(good) // 2], LIMITS)


def test_decompression_bomb_refused_before_decoding():
    # 5k x 5k of one colour compresses to a few kB but would decode to 75 MB
    bomb = encoded(Image.new("1", (5_000, 5_000)), "PNG")
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge) as err:
        decode_image(bomb, LIMITS)
    assert err.value.detail["width"] == 5_000
    # far past Pillow's own guard: still a 413, not a 400
    with pytest.raises(PayloadTooLarge):
        decode_image(encoded(Image.new("1", (20_000, 20_000)), "PNG"), LIMITS)


def test_too_many_bytes_is_413():
    with pytest.raises(PayloadTooLarge):
        decode_image(b"x" * 2_000_000, LIMITS)


def test_unsupported_format_is_415():
    image = Image.new("RGB", (16, 16))
    with pytest.raises(UnsupportedMediaType):
        decode_image(encoded(image, "ICO"), LIMITS)


def test_base64_strict_and_data_urls():
    assert b64decode("data:image/png;base64,aGVsbG8=", 100) == b"hello"
    with pytest.raises(InvalidInput):
        b64decode("not base64!!", 100)
    with pytest.raises(PayloadTooLarge):
        b64decode("A" * 1000, 100)


def test_tensor_fast_path_checks_shape_and_values():
    x = np.random.default_rng(0).standard_normal((3, 64, 64)).astype(np.float32)
    out = pixels(RawTensor(x.tobytes(), "float32", (3, 64, 64)), PRE, LIMITS)
    np.testing.assert_array_equal(out, x)
    half = pixels(RawTensor(x.astype(np.float16).tobytes(), "float16", (3, 64, 64)), PRE, LIMITS)
    np.testing.assert_allclose(half, x, atol=1e-2)
    with pytest.raises(Exception, match="does not match"):
        pixels(RawTensor(x.tobytes(), "float32", (3, 32, 128)), PRE, LIMITS)
    with pytest.raises(InvalidInput):
        pixels(RawTensor(x.tobytes()[:-4], "float32", (3, 64, 64)), PRE, LIMITS)
    x[0, 0, 0] = np.nan
    with pytest.raises(Exception, match="NaN"):
        pixels(RawTensor(x.tobytes(), "float32", (3, 64, 64)), PRE, LIMITS)
