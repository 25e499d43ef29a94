"""Image/text embedding models, image decoding, box crops and the batched embedding pipeline.

No database code lives here. Public entry points:

* :func:`load_model` -- spec string -> :class:`EmbeddingModel` (``efficientnet-lite0``,
  ``openclip:<arch>/<pretrained>``);
* :func:`crop_box` / :class:`CropSpec` -- the crop rule for annotation boxes and query boxes;
* :func:`decode_image` / :func:`probe_image` -- safe image decoding to RGB;
* :func:`iter_embedded_batches` -- overlapped decode/preprocess/inference over many items.
"""

from .base import EmbeddingModel, ModelWeightsNotFoundError, TextNotSupportedError, UnknownModelError
from .crops import CropSpec, InvalidBoxError, crop_box
from .decode import ImageDecodeError, ImageInfo, decode_image, probe_image
from .pipeline import EmbeddedBatch, EmbedItem, iter_embedded_batches
from .registry import load_model

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
