"""Image/text embedding models, image decoding, box crops and the batched embedding pipeline.

No database code lives here. Public entry points:

* :func:`load_model` -- spec string -> :class:`EmbeddingModel` (``efficientnet-lite0``,
  ``openclip:<arch>/<pretrained>``);
* :func:`crop_box` / :class:`CropSpec` -- the crop rule for annotation boxes and query boxes;
* :func:`decode_image` / :func:`probe_image` -- safe image decoding to RGB;
* :func:`iter_embedded_batches` -- overlapped decode/preprocess/inference over many items.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Names are imported from their module on first use (PEP 562): importing one light module of
# this package (the crop rule, image decoding) must not import torch, which takes seconds.
_WHERE = {
    "EmbeddingModel": "base", "ModelWeightsNotFoundError": "base", "TextNotSupportedError": "base",
    "UnknownModelError": "base",
    "CropSpec": "crops", "InvalidBoxError": "crops", "crop_box": "crops",
    "ImageDecodeError": "decode", "ImageInfo": "decode", "decode_image": "decode", "probe_image": "decode",
    "EmbeddedBatch": "pipeline", "EmbedItem": "pipeline", "iter_embedded_batches": "pipeline",
    "load_model": "registry",
}

if TYPE_CHECKING:
    from .base import EmbeddingModel, ModelWeightsNotFoundError, TextNotSupportedError, UnknownModelError
    from .crops import CropSpec, InvalidBoxError, crop_box
    from .decode import ImageDecodeError, ImageInfo, decode_image, probe_image
    from .pipeline import EmbeddedBatch, EmbedItem, iter_embedded_batches
    from .registry import load_model


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "CropSpec",
    "EmbedItem",
    "EmbeddedBatch",
    "EmbeddingModel",
    "ImageDecodeError",
    "ImageInfo",
    "InvalidBoxError",
    "ModelWeightsNotFoundError",
    "TextNotSupportedError",
    "UnknownModelError",
    "crop_box",
    "decode_image",
    "iter_embedded_batches",
    "load_model",
    "probe_image",
]
