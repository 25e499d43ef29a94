"""The embedding-model interface shared by every model family, and its errors."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

# Images per forward pass in the convenience helpers: bounds peak memory for long lists.
_CONVENIENCE_BATCH = 64


class TextNotSupportedError(ValueError):
    """The model has no text tower, so it cannot embed text queries."""


class ModelWeightsNotFoundError(RuntimeError):
    """The pretrained weights for a model spec are not available (not cached, no network, bad path)."""


class UnknownModelError(ValueError):
    """A model spec string does not name a supported model family or architecture."""


class EmbeddingModel(abc.ABC):
    """A loaded, inference-only image (and optionally text) embedding model.

    Attributes:
        name: canonical spec string identifying the embedding space; stored in the database so
            vectors from different models are never mixed (e.g. ``"efficientnet-lite0"`` or
            ``"openclip:ViT-B-32/laion2b_s34b_b79k"``).
        dim: embedding dimension (length of every output row).
        embeds_text: whether :meth:`embed_texts` is supported (image and text share one space).
        device: torch device string the weights live on (``"cpu"``, ``"cuda"``, ...).

    All outputs are ``float32`` numpy arrays of shape ``(n, dim)`` whose rows have unit L2 norm,
    so cosine similarity equals the inner product.
    """

    name: str
    dim: int
    embeds_text: bool = False
    device: str = "cpu"

    @property
    def preprocessor(self) -> Callable[[Image.Image], torch.Tensor]:
        """A small picklable callable equivalent to :meth:`preprocess`.

        DataLoader worker processes receive this instead of the whole model, so starting a
        worker never pickles the weights (matters under the ``spawn``/``forkserver`` start
        methods). Subclasses override it; the default is the bound method (pickles the model).
        """
        return self.preprocess

    @abc.abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Turn one RGB PIL image into the model's input tensor.

        Args:
            image: a PIL image (converted to RGB if it is not).

        Returns:
            float32 tensor of shape ``(3, H, W)`` (H, W fixed per model). Safe to call in
            DataLoader worker processes (no model weights are touched).
        """

    @abc.abstractmethod
    def embed_batch(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a batch of preprocessed images.

        Args:
            pixels: float32 tensor ``(n, 3, H, W)`` as stacked from :meth:`preprocess`; ``n`` may be 0.

        Returns:
            ``(n, dim)`` float32 array, rows L2-normalised. Runs under ``torch.inference_mode()``.
        """

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess and embed PIL images (convenience for queries and small sets).

        Returns:
            ``(len(images), dim)`` float32 array, rows L2-normalised.
        """
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(images), _CONVENIENCE_BATCH):
            pixels = torch.stack([self.preprocess(im) for im in images[start:start + _CONVENIENCE_BATCH]])
            chunks.append(self.embed_batch(pixels))
        return np.concatenate(chunks, axis=0)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed text queries into the image embedding space.

        Returns:
            ``(len(texts), dim)`` float32 array, rows L2-normalised.

        Raises:
            TextNotSupportedError: always, unless the model has a text tower (``embeds_text``).
        """
        raise TextNotSupportedError(
            f"model {self.name} is image-only; it cannot embed text. "
            "Use an openclip: model for text search (e.g. 'openclip:ViT-B-32/laion2b_s34b_b79k')."
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} dim={self.dim} device={self.device!r}>"


def check_pixels(pixels: torch.Tensor, size: tuple[int, int], model_name: str) -> None:
    """Raise ValueError unless ``pixels`` is a ``(n, 3, H, W)`` tensor of the model's input size."""
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, *size):
        got = tuple(pixels.shape) if isinstance(pixels, torch.Tensor) else type(pixels).__name__
        raise ValueError(f"{model_name} expects pixels of shape (n, 3, {size[0]}, {size[1]}), got {got}")


def to_unit_float32(features: torch.Tensor) -> np.ndarray:
    """L2-normalise rows (in float32) and return them as a CPU numpy array."""
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy().astype(np.float32, copy=False)
