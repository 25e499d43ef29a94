"""Bytes -> RGB PIL image, defensively: EXIF orientation, odd modes, corrupt data, pixel bombs.

Used by ingest (``probe_image`` for dimensions) and by the embedding pipeline (``decode_image``).
Orientation: both functions report/return the image *as displayed*, i.e. after applying the EXIF
Orientation tag, so COCO-style boxes (given in displayed pixels) line up with the decoded pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from visearch.config import DEFAULT_MAX_PIXELS  # noqa: F401  (Pillow's bomb limit; defined once there)

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # rotate by 90/270 degrees: width and height swap
_WHITE = (255, 255, 255, 255)
# EXIF orientation -> the transpose that displays it (as ImageOps.exif_transpose does).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageDecodeError(ValueError):
    """Image bytes that cannot be turned into an RGB image.

    Attributes:
        kind: short machine-readable cause: ``"empty"``, ``"unidentified"`` (not a supported
            image format), ``"too_large"`` (more pixels than allowed), ``"truncated"``,
            ``"corrupt"``.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ImageInfo:
    """Image header facts. ``width``/``height`` in pixels after EXIF orientation; ``format`` is
    Pillow's name (``"JPEG"``, ``"PNG"``, ``"GIF"``, ``"WEBP"``, ...)."""

    width: int
    height: int
    format: str


def _open(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only, no pixel decode) with the size limit enforced before any decoding."""
    if not data:
        raise ImageDecodeError("empty", "empty image data (0 bytes)")
    # Inside open(), Pillow warns above its global MAX_IMAGE_PIXELS (89.5 MP) and raises above
    # twice that. The warning is silenced locally because our own limit, checked right after
    # open() and before any pixel is decoded, is what decides (so max_pixels may also be raised).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(
                "too_large", f"image refused by the decompression-bomb guard (limit {max_pixels} pixels): {exc}"
            ) from exc
        except UnidentifiedImageError as exc:
            head = data[:8].hex(" ")
            raise ImageDecodeError(
                "unidentified", f"not a recognised image format ({len(data)} bytes, starting {head})"
            ) from exc
        except Exception as exc:  # noqa: BLE001 -- plugins raise assorted errors on broken headers
            raise ImageDecodeError("corrupt", f"corrupt image header: {type(exc).__name__}: {exc}") from exc
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageDecodeError("corrupt", f"image header gives an empty size {width}x{height}")
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_large",
            f"image is {width}x{height} = {width * height} pixels, above the limit of {max_pixels} "
            "(decompression-bomb guard)",
        )
    return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 -- malformed EXIF: treat as unrotated, like most viewers
        return 1


def probe_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Read an image's displayed size and format from its header, without decoding pixels.

    Width/height are AFTER EXIF orientation (a portrait phone photo stored as 4032x3024 with
    Orientation=6 reports 3024x4032), matching :func:`decode_image` and the coordinate frame of
    annotation boxes. Only the header is checked: truncated pixel data is detected by
    :func:`decode_image`, not here.

    Raises:
        ImageDecodeError: empty, unrecognised or corrupt header, or more than ``max_pixels``.
    """
    image = _open(data, max_pixels)
    width, height = image.size
    if _orientation(image) in _TRANSPOSING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(width=width, height=height, format=image.format or "UNKNOWN")


def _sixteen_bit_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's convert() clips 16/32-bit values at 255 instead of rescaling: rescale ourselves.
    array = np.asarray(image).astype(np.float64)
    if image.mode.startswith("I;16") or array.max(initial=0) > 255:
        array = array / 257.0  # 0..65535 -> 0..255
    gray = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
    return gray.convert("RGB")


def _float_to_rgb(image: Image.Image) -> Image.Image:
    array = np.asarray(image, dtype=np.float64)
    finite = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    scale = 255.0 if finite.max(initial=0) <= 1.0 else 1.0  # [0,1] floats vs 0..255 floats
    gray = Image.fromarray(np.clip(np.rint(finite * scale), 0, 255).astype(np.uint8), mode="L")
    return gray.convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        # Palette transparency must go through RGBA (else Pillow warns and drops it).
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE)
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I"):
        return _sixteen_bit_to_rgb(image)
    if mode == "F":
        return _float_to_rgb(image)
    return image.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Decode image bytes into an RGB PIL image as displayed.

    Steps: refuse images above ``max_pixels`` from the header alone (before any pixel is
    decoded); decode the first frame (GIF/APNG/WebP animations, multi-page TIFF); apply the EXIF
    Orientation tag; convert to 8-bit RGB -- palette, greyscale, 1-bit and CMYK via Pillow,
    16/32-bit integer greyscale rescaled from 0..65535 to 0..255, and anything with alpha
    (RGBA, LA, palette transparency) composited onto white.

    Args:
        data: the encoded file contents (JPEG, PNG, GIF, WebP, BMP, TIFF, ... -- whatever the
            installed Pillow reads).
        max_pixels: width x height limit (checked from the header, before decoding). Pillow's
            own hard limit, ``2 * Image.MAX_IMAGE_PIXELS`` (178,956,970 by default), still
            applies on top. Warnings filters are changed only inside ``warnings.catch_warnings``
            (process-global in Python < 3.14, so not strictly thread-safe; at worst a
            DecompressionBombWarning is printed or silenced -- the size check itself is exact).
        draft: JPEG only: let the decoder scale by 1/2, 1/4 or 1/8 while decoding, keeping both
            sides at least ``draft`` pixels (``Image.draft``): a thumbnail of a 8000x8000 JPEG
            then decodes 1000x1000 pixels, 1/64 of the memory. Other formats decode in full.

    Returns:
        A fully loaded ``RGB`` image; its size is the displayed size (see :func:`probe_image`),
        or a JPEG's scaled by ``draft``.

    Raises:
        ImageDecodeError: with ``kind`` ``"empty"``, ``"unidentified"``, ``"too_large"``,
            ``"truncated"`` or ``"corrupt"`` and a human-readable message.
    """
    image = _open(data, max_pixels)
    try:
        image.seek(0)  # first frame of animated/multi-frame files
        if draft is not None and image.format == "JPEG":
            image.draft(image.mode, (draft, draft))
        image.load()
    except Exception as exc:  # noqa: BLE001 -- decoders raise OSError/SyntaxError/ValueError/...
        text = str(exc)
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise ImageDecodeError("truncated", f"truncated image data: {text}") from exc
        raise ImageDecodeError("corrupt", f"corrupt image data: {type(exc).__name__}: {text}") from exc
    orientation = _orientation(image)
    if orientation in _ORIENTATION_TRANSPOSE:
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # noqa: BLE001 -- odd EXIF block: same transpose, done directly
            image = image.transpose(_ORIENTATION_TRANSPOSE[orientation])
    try:
        return _to_rgb(image)
    except Exception as exc:  # noqa: BLE001
        raise ImageDecodeError(
            "corrupt", f"cannot convert {image.mode} image to RGB: {type(exc).__name__}: {exc}"
        ) from exc
