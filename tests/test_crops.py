"""The box-crop rule (visearch.embedding.crops) on real photos and real COCO boxes."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageStat
from skimage import data as skdata

from visearch.embedding import CropSpec, InvalidBoxError, crop_box
from visearch.embedding.crops import crop_window

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(skdata.astronaut())  # 512x512 RGB photo


def _same_pixels(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_pad_is_square_with_context_and_keeps_object_undistorted(astronaut):
    box = (100, 50, 40, 80)  # tall box; 10% context -> 48x96 grown box
    out = crop_box(astronaut, box)
    assert out.size == (96, 96)
    left, top, right, bottom = crop_window(astronaut.size, box)
    assert (left, top, right, bottom) == (72, 42, 168, 138)
    # The box's pixels appear 1:1 (no resampling) at its offset inside the crop...
    assert _same_pixels(out.crop((100 - left, 50 - top, 140 - left, 130 - top)), astronaut.crop((100, 50, 140, 130)))
    # ...with the context margin (4 px left/right, 8 px top/bottom) around it.
    assert _same_pixels(out.crop((96 - left, 42 - top, 144 - left, 138 - top)), astronaut.crop((96, 42, 144, 138)))


def test_context_zero_square_box_is_exact(astronaut):
    out = crop_box(astronaut, (10, 20, 30, 30), CropSpec(context=0.0))
    assert _same_pixels(out, astronaut.crop((10, 20, 40, 50)))


def test_context_margin_scales_with_box(astronaut):
    for context in (0.0, 0.1, 0.25, 0.5):
        left, top, right, bottom = crop_window(astronaut.size, (200, 200, 100, 100), CropSpec(context, "none"))
        margin = context * 100
        assert (left, top, right, bottom) == (200 - margin, 200 - margin, 300 + margin, 300 + margin)


def test_pad_beyond_border_uses_mean_colour(astronaut):
    box = (0, 0, 50, 100)  # top-left corner: grown box overhangs by 5 px / 10 px, square adds 30 px left
    out = crop_box(astronaut, box)
    left, top, right, bottom = crop_window(astronaut.size, box)
    assert (left, top, right, bottom) == (-35, -10, 85, 110)
    assert out.size == (120, 120)
    mean = tuple(int(round(v)) for v in ImageStat.Stat(astronaut).mean)
    arr = np.asarray(out)
    assert (arr[:, :35] == mean).all() and (arr[:10, :] == mean).all()
    assert _same_pixels(out.crop((35, 10, 120, 120)), astronaut.crop((0, 0, 85, 110)))


def test_crop_mode_square_and_inside_image(astronaut):
    out = crop_box(astronaut, (100, 50, 40, 80), CropSpec(square="crop"))
    assert out.size == (48, 48)  # shorter grown side
    # Near the border the square slides inside rather than padding.
    left, top, right, bottom = crop_window(astronaut.size, (0, 100, 200, 40), CropSpec(square="crop"))
    assert right - left == bottom - top == 48 and left >= 0


def test_none_mode_keeps_aspect(astronaut):
    out = crop_box(astronaut, (100, 50, 40, 80), CropSpec(square="none"))
    assert out.size == (48, 96)
    # Cut at the border, no padding.
    assert crop_box(astronaut, (0, 0, 50, 100), CropSpec(square="none")).size == (55, 110)


def test_fractional_box_is_fully_contained(astronaut):
    for box in [(10.3, 20.7, 15.2, 40.9), (0.5, 0.5, 0.4, 0.4), (300.01, 100.99, 200.5, 3.2)]:
        for mode in ("pad", "crop", "none"):
            left, top, right, bottom = crop_window(astronaut.size, box, CropSpec(0.0, mode))
            x, y, w, h = box
            if mode != "crop":
                assert left <= x and top <= y and right >= x + w and bottom >= y + h, (box, mode)
            out = crop_box(astronaut, box, CropSpec(0.0, mode))
            assert out.width >= 1 and out.height >= 1
            if mode != "none":
                assert out.width == out.height


def test_box_types(astronaut):
    expected = crop_box(astronaut, [100, 50, 40, 80])
    for box in ((100, 50, 40, 80), np.array([100.0, 50.0, 40.0, 80.0]), (np.float32(100), 50, 40, 80)):
        assert _same_pixels(crop_box(astronaut, box), expected)


def test_box_overhanging_border_uses_visible_part(astronaut):
    # 40 px of the box lie outside the right edge; only the visible 60x60 part is framed.
    assert crop_window(astronaut.size, (452, 100, 100, 60), CropSpec(0.0)) == (452, 100, 512, 160)


@pytest.mark.parametrize("box, why", [
    ((float("nan"), 0, 10, 10), "finite"),
    ((0, 0, float("inf"), 10), "finite"),
    ((0, 0, 0, 10), "> 0"),
    ((0, 0, 10, -5), "> 0"),
    ((512, 0, 10, 10), "outside"),
    ((0, 600, 10, 10), "outside"),
    ((-20, 0, 20, 10), "outside"),
    ((0, -10, 5, 10), "outside"),
    ((1, 2, 3), "4 numbers"),
    (("a", 0, 1, 1), "numbers"),
])
def test_invalid_boxes(astronaut, box, why):
    with pytest.raises(InvalidBoxError) as info:
        crop_box(astronaut, box)
    message = str(info.value)
    assert why in message and "512x512" in message
    assert isinstance(info.value, ValueError)


def test_cropspec_validation():
    with pytest.raises(ValueError):
        CropSpec(context=-0.1)
    with pytest.raises(ValueError):
        CropSpec(context=float("nan"))
    with pytest.raises(ValueError):
        CropSpec(square="stretch")


def test_every_coco128_box():
    """All 939 real COCO boxes: pad crops are square, contain the visible box, and keep its pixels."""
    root = SHARED_DATA / "coco128"
    ann_file = root / "annotations" / "instances_train2017.json"
    if not ann_file.is_file():
        pytest.fail(f"test data missing: {ann_file} (real images are expected in ../shared/data)")
    coco = json.loads(ann_file.read_text())
    boxes = defaultdict(list)
    for ann in coco["annotations"]:
        boxes[ann["image_id"]].append(ann["bbox"])
    count = 0
    for meta in coco["images"]:
        with Image.open(root / "train2017" / meta["file_name"]) as im:
            image = im.convert("RGB")
        for bbox in boxes[meta["id"]]:
            x, y, w, h = bbox
            out = crop_box(image, bbox)
            assert out.width == out.height
            vis_w = min(x + w, image.width) - max(x, 0)
            vis_h = min(y + h, image.height) - max(y, 0)
            assert out.width >= math.ceil(max(vis_w, vis_h) * 1.2) - 1
            left, top, _, _ = crop_window(image.size, bbox)
            inner = (math.ceil(max(x, 0)), math.ceil(max(y, 0)),
                     math.floor(min(x + w, image.width)), math.floor(min(y + h, image.height)))
            if inner[2] > inner[0] and inner[3] > inner[1]:
                shifted = (inner[0] - left, inner[1] - top, inner[2] - left, inner[3] - top)
                assert _same_pixels(out.crop(shifted), image.crop(inner))
            count += 1
    assert count == len(coco["annotations"]) == 939
