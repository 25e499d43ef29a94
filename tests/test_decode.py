"""visearch.embedding.decode on real photos re-encoded in many formats/modes, and on bad data."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from visearch.embedding.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageInfo, decode_image, probe_image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _coco_file(name: str = "000000000009.jpg") -> Path:
    path = SHARED_DATA / "coco128" / "train2017" / name
    if not path.is_file():
        pytest.fail(f"test data missing: {path} (real images are expected in ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    """A real 640x480 COCO photo, decoded once."""
    with Image.open(_coco_file()) as im:
        return im.convert("RGB")


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).mean())


def test_plain_jpeg_roundtrip(photo):
    data = _coco_file().read_bytes()
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == (640, 480)
    assert _mean_abs_diff(out, photo) == 0.0
    assert probe_image(data) == ImageInfo(640, 480, "JPEG")


@pytest.mark.parametrize("orientation, transpose", [
    (3, Image.Transpose.ROTATE_180),
    (6, Image.Transpose.ROTATE_270),
    (8, Image.Transpose.ROTATE_90),
])
def test_exif_orientation_applied(photo, orientation, transpose):
    exif = Image.Exif()
    exif[0x0112] = orientation
    plain = _encode(photo, "JPEG", quality=90)
    rotated = _encode(photo, "JPEG", quality=90, exif=exif.tobytes())
    out = decode_image(rotated)
    expected = decode_image(plain).transpose(transpose)  # same encoded pixels, displayed rotated
    assert out.mode == "RGB" and out.size == expected.size
    assert _mean_abs_diff(out, expected) == 0.0
    info = probe_image(rotated)
    assert (info.width, info.height) == out.size  # probe reports the displayed orientation
    if orientation in (6, 8):
        assert out.size == (480, 640)


def test_palette_png(photo):
    pal = photo.quantize(64)
    out = decode_image(_encode(pal, "PNG"))
    assert out.mode == "RGB" and out.size == photo.size
    assert _mean_abs_diff(out, pal.convert("RGB")) == 0.0


def test_palette_png_with_transparency_goes_on_white(photo):
    pal = photo.quantize(16)
    pal.info["transparency"] = 0
    out = decode_image(_encode(pal, "PNG", transparency=0))
    mask = np.asarray(pal) == 0
    assert mask.any()
    assert (np.asarray(out)[mask] == 255).all()


def test_cmyk_jpeg(photo):
    data = _encode(photo.convert("CMYK"), "JPEG", quality=95)
    assert probe_image(data).format == "JPEG"
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == photo.size
    assert _mean_abs_diff(out, photo) < 6  # colours survive (not inverted, not garbled)


def test_16bit_greyscale_png_is_rescaled_not_clipped(photo):
    grey8 = np.asarray(photo.convert("L"), dtype=np.uint16)
    img16 = Image.fromarray(grey8 * 257)  # full 16-bit range
    assert img16.mode.startswith("I")
    out = decode_image(_encode(img16, "PNG"))
    assert out.mode == "RGB" and out.size == photo.size
    got = np.asarray(out)[..., 0].astype(int)
    assert np.abs(got - grey8).max() <= 1  # a naive convert("L") would clip nearly all to 255


def test_rgba_png_composited_on_white(photo):
    rgba = photo.convert("RGBA")
    alpha = np.full(photo.size[::-1], 255, dtype=np.uint8)
    alpha[:, :100] = 0  # left strip fully transparent
    rgba.putalpha(Image.fromarray(alpha))
    out = decode_image(_encode(rgba, "PNG"))
    arr = np.asarray(out)
    assert out.mode == "RGB" and out.size == photo.size
    assert (arr[:, :100] == 255).all()
    assert np.array_equal(arr[:, 100:], np.asarray(photo)[:, 100:])


def test_la_and_1bit(photo):
    assert decode_image(_encode(photo.convert("LA"), "PNG")).mode == "RGB"
    out = decode_image(_encode(photo.convert("1"), "PNG"))
    assert out.mode == "RGB" and set(np.unique(np.asarray(out))) <= {0, 255}


def test_animated_gif_first_frame(photo):
    small = photo.resize((160, 120))
    frames = [small, Image.new("RGB", small.size, (255, 0, 0)), Image.new("RGB", small.size, (0, 0, 255))]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(io.BytesIO(data)) as check:
        assert check.n_frames == 3
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == (160, 120)
    assert _mean_abs_diff(out, small) < 12  # first frame (GIF palette error only), not red/blue
    assert _mean_abs_diff(out, frames[1]) > 50


@pytest.mark.parametrize("fmt, exact", [("BMP", True), ("TIFF", True), ("WEBP", False), ("PNG", True)])
def test_other_formats(photo, fmt, exact):
    if fmt == "WEBP":
        assert features.check("webp"), "this Pillow build lacks WebP support"
    data = _encode(photo, fmt, **({"quality": 90} if fmt == "WEBP" else {}))
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == (640, 480)
    assert probe_image(data) == ImageInfo(640, 480, fmt)
    assert (_mean_abs_diff(out, photo) == 0.0) if exact else (_mean_abs_diff(out, photo) < 5)


def test_probe_matches_coco_metadata():
    import json

    ann = SHARED_DATA / "coco128" / "annotations" / "instances_train2017.json"
    if not ann.is_file():
        pytest.fail(f"test data missing: {ann}")
    images = json.loads(ann.read_text())["images"]
    for meta in images[:40]:
        info = probe_image(_coco_file(meta["file_name"]).read_bytes())
        assert (info.width, info.height, info.format) == (meta["width"], meta["height"], "JPEG")


# ---------------------------------------------------------------------------- failures


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose IHDR claims width x height (8-bit greyscale)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024, 9)  # never reached: refused from the header
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _error(data: bytes, **kwargs) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data, **kwargs)
    assert str(info.value)  # a human-readable reason
    return info.value


def test_failures_have_distinct_reasons():
    coco = _coco_file().read_bytes()
    garbage = random.Random(7).randbytes(5000)
    errors = {
        "empty": _error(b""),
        "truncated": _error(coco[: len(coco) // 2]),
        "unidentified": _error(garbage),
        "too_large": _error(_bomb_png(20000, 20000)),
    }
    for kind, exc in errors.items():
        assert exc.kind == kind, (kind, exc.kind, str(exc))
    assert len({str(e) for e in errors.values()}) == 4
    assert "400000000" in str(errors["too_large"])
    assert "truncated" in str(errors["truncated"])


def test_bomb_refused_by_probe_too_and_no_global_state_leaks():
    before_limit, before_filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    with pytest.raises(ImageDecodeError) as info:
        probe_image(_bomb_png(20000, 20000))
    assert info.value.kind == "too_large"
    # Between Pillow's warning (89.5 MP) and error (179 MP) thresholds: still refused, no warning escapes.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _error(_bomb_png(10000, 10000)).kind == "too_large"
    assert Image.MAX_IMAGE_PIXELS == before_limit and warnings.filters == before_filters


def test_the_default_limit_is_exactly_where_decoding_stops_and_the_settings_use_it():
    """Without a max_pixels argument an image of DEFAULT_MAX_PIXELS pixels is accepted and one
    pixel more is refused; the settings (ingest, upload, embedding) default to the same number."""
    from visearch.config import Settings

    assert DEFAULT_MAX_PIXELS == 5 * 17_895_697 == 2 * 44_739_243 - 1
    assert probe_image(_bomb_png(17_895_697, 5)).width == 17_895_697  # exactly the limit: accepted
    with pytest.raises(ImageDecodeError) as info:
        probe_image(_bomb_png(44_739_243, 2))  # one pixel over
    assert info.value.kind == "too_large"
    assert Settings().max_image_pixels == DEFAULT_MAX_PIXELS


def test_custom_max_pixels(photo):
    data = _encode(photo, "PNG")
    assert _error(data, max_pixels=640 * 480 - 1).kind == "too_large"
    assert decode_image(data, max_pixels=640 * 480).size == (640, 480)
    # A limit above Pillow's warning threshold is honoured (the header is accepted; the fake
    # bomb's pixel data then fails to decode, as it should).
    bomb = _bomb_png(10000, 10000)
    assert probe_image(bomb, max_pixels=150_000_000) == ImageInfo(10000, 10000, "PNG")
    assert _error(bomb, max_pixels=150_000_000).kind in ("truncated", "corrupt")


def test_corrupt_pixel_data_after_valid_header():
    coco = bytearray(_coco_file().read_bytes())
    # Keep the JPEG headers, scramble the entropy-coded data.
    start = len(coco) // 3
    coco[start:-2] = random.Random(3).randbytes(len(coco) - 2 - start)
    try:
        out = decode_image(bytes(coco))
    except ImageDecodeError as exc:
        assert exc.kind in ("corrupt", "truncated")
    else:  # libjpeg may conceal damage; the result must still be a valid RGB image
        assert out.mode == "RGB" and out.size == (640, 480)
