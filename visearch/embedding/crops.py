"""The box-crop rule: one function, used for stored annotation boxes AND query boxes alike.

Using the same rule on both sides matters: a query crop only finds its stored counterparts if
both were framed the same way before embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from PIL import Image, ImageStat

SquareMode = Literal["pad", "crop", "none"]
_SQUARE_MODES = ("pad", "crop", "none")


class InvalidBoxError(ValueError):
    """A bounding box that cannot be cropped from the image (non-finite, empty, or outside it)."""


@dataclass(frozen=True)
class CropSpec:
    """How a box is framed before embedding (see :func:`crop_box` for the exact rule).

    Attributes:
        context: margin added on every side, as a fraction of the box's own width (left/right)
            and height (top/bottom); 0.1 = 10 % each side. Must be finite and >= 0.
        square: ``"pad"`` (default) extends the shorter side, filling beyond the image with the
            image's mean colour -- the object is never distorted or cut; ``"crop"`` trims the
            longer side; ``"none"`` keeps the box's aspect ratio.
    """

    context: float = 0.1
    square: SquareMode = "pad"

    def __post_init__(self):
        if not (isinstance(self.context, (int, float)) and math.isfinite(self.context) and self.context >= 0):
            raise ValueError(f"CropSpec.context must be a finite number >= 0, got {self.context!r}")
        if self.square not in _SQUARE_MODES:
            raise ValueError(f"CropSpec.square must be one of {_SQUARE_MODES}, got {self.square!r}")


def _validate(bbox_xywh: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    try:
        values = [] if isinstance(bbox_xywh, (str, bytes)) else list(bbox_xywh)  # lists, tuples, arrays
    except TypeError:
        values = []
    where = f"box [x, y, w, h] = {values or bbox_xywh!r} on a {width}x{height} image"
    if len(values) != 4:
        raise InvalidBoxError(f"invalid {where}: expected 4 numbers [x, y, width, height]")
    try:
        x, y, w, h = (float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise InvalidBoxError(f"invalid {where}: values must be numbers") from exc
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise InvalidBoxError(f"invalid {where}: values must be finite")
    if w <= 0 or h <= 0:
        raise InvalidBoxError(f"invalid {where}: width and height must be > 0")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise InvalidBoxError(f"invalid {where}: the box lies entirely outside the image")
    return x, y, w, h


def crop_window(
    image_size: tuple[int, int], bbox_xywh: Sequence[float], spec: CropSpec = CropSpec()
) -> tuple[int, int, int, int]:
    """The integer pixel window ``(left, top, right, bottom)`` (right/bottom exclusive) that
    :func:`crop_box` cuts; in ``"pad"`` mode it may extend beyond the image.

    Raises:
        InvalidBoxError: see :func:`crop_box`.
    """
    width, height = image_size
    x, y, w, h = _validate(bbox_xywh, width, height)
    # 1. Only the visible part of the box counts (COCO boxes may overhang the border slightly).
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    # 2. Context margin, proportional to the visible box's own size on each axis.
    mx, my = spec.context * (x1 - x0), spec.context * (y1 - y0)
    # 3. Snap outwards to whole pixels so no part of the (grown) box is ever lost to rounding.
    left, top = math.floor(x0 - mx), math.floor(y0 - my)
    right, bottom = math.ceil(x1 + mx), math.ceil(y1 + my)
    box_w, box_h = right - left, bottom - top
    if spec.square == "pad":
        side = max(box_w, box_h)
        left -= (side - box_w) // 2
        top -= (side - box_h) // 2
        return left, top, left + side, top + side
    if spec.square == "crop":
        side = min(box_w, box_h)
        left += (box_w - side) // 2
        top += (box_h - side) // 2
        # Slide the square back inside the image when it fits, so "crop" stays square without padding.
        if side <= width:
            left = min(max(left, 0), width - side)
        if side <= height:
            top = min(max(top, 0), height - side)
        right, bottom = left + side, top + side
    return max(left, 0), max(top, 0), min(right, width), min(bottom, height)


def crop_box(image: Image.Image, bbox_xywh: Sequence[float], spec: CropSpec = CropSpec()) -> Image.Image:
    """Cut the region of one bounding box out of an image, framed by ``spec``.

    ``bbox_xywh`` is COCO's ``[x, y, width, height]`` in pixels of the displayed image (after
    EXIF orientation), origin at the top-left corner, x to the right, y down; fractional values
    are fine. The rule, step by step:

    1. Clip the box to the image: only its visible part ``[x0, x1] x [y0, y1]`` is used.
    2. Grow it by ``spec.context`` times its (visible) width on the left and on the right, and
       ``spec.context`` times its height on the top and on the bottom (0.1 -> 10 % margin per
       side, so the grown box is 1.2x the size on each axis).
    3. Round outwards to whole pixels: left/top down (floor), right/bottom up (ceil).
    4. Make it square:

       * ``"pad"``: extend the shorter side to the longer one, split evenly around the box
         (an odd extra pixel goes to the right/bottom). Any part of the square outside the image
         is filled with the image's mean colour (per channel, over the whole image). The object
         is never cut or distorted; output is ``side x side`` with ``side`` = the longer side
         from step 3.
       * ``"crop"``: shrink the longer side to the shorter one around the centre, then slide the
         square back inside the image if it overhangs (when it fits); never pads.
       * ``"none"``: keep the rectangle from step 3.

       For ``"crop"`` and ``"none"`` the window is finally intersected with the image, so an
       edge box's context margin is simply cut at the border (and ``"crop"`` is then not quite
       square). The model's own resize/centre-crop is applied to the result afterwards.

    Args:
        image: PIL image (RGB in the pipeline; ``RGB``, ``RGBA`` and ``L`` keep their mode, other
            modes are converted to ``RGB``).
        bbox_xywh: ``[x, y, width, height]`` in pixels.
        spec: framing parameters; default 10 % context, ``"pad"``.

    Returns:
        A new PIL image of the window (at least 1x1 pixel).

    Raises:
        InvalidBoxError: not 4 numbers, any value non-finite, width or height <= 0, or the box
            lies entirely outside the image (no overlap of positive area); the message gives the
            box and the image size.
    """
    if image.mode not in ("RGB", "RGBA", "L"):
        image = image.convert("RGB")
    left, top, right, bottom = crop_window(image.size, bbox_xywh, spec)
    width, height = image.size
    if left >= 0 and top >= 0 and right <= width and bottom <= height:
        return image.crop((left, top, right, bottom))
    # "pad" window overhanging the border: mean-colour canvas with the visible part pasted in.
    mean = tuple(int(round(v)) for v in ImageStat.Stat(image).mean)
    canvas = Image.new(image.mode, (right - left, bottom - top), mean[0] if len(mean) == 1 else mean)
    inside = (max(left, 0), max(top, 0), min(right, width), min(bottom, height))
    canvas.paste(image.crop(inside), (inside[0] - left, inside[1] - top))
    return canvas
