"""Model spec strings -> loaded :class:`EmbeddingModel` instances, cached per process.

To add a model family: write a module with ``canonical_spec(arg: str | None) -> str`` (cheap, no
loading) and ``from_spec(arg: str | None, device: str) -> EmbeddingModel``, and add one line to
``_FAMILIES``. Modules are imported lazily, so using efficientnet never imports
open_clip/torchvision.
"""

from __future__ import annotations

import importlib
import threading

import torch

from .base import EmbeddingModel, UnknownModelError

# family -> (module with from_spec, the spec forms it accepts, for error messages)
_FAMILIES: dict[str, tuple[str, str]] = {
    "efficientnet-lite0": (".efficientnet", "efficientnet-lite0"),
    "openclip": (".openclip", "openclip | openclip:<arch>/<pretrained tag> | openclip:<arch>/<checkpoint path>"
                              " | openclip:<arch>/random (tests only)"),
}

_CACHE: dict[tuple[str, str], EmbeddingModel] = {}
_LOCK = threading.Lock()  # one load at a time: models are big, and concurrent first requests must share one


def supported_forms() -> list[str]:
    """Human-readable spec forms, one per model family."""
    return [forms for _, forms in _FAMILIES.values()]


def load_model(spec: str, device: str = "cpu") -> EmbeddingModel:
    """Load (or return the cached) embedding model for a spec string.

    Args:
        spec: ``"<family>"`` or ``"<family>:<argument>"``, e.g. ``"efficientnet-lite0"``,
            ``"openclip"`` (= ``"openclip:ViT-B-32/laion2b_s34b_b79k"``),
            ``"openclip:ViT-B-32//path/to/open_clip_pytorch_model.bin"``.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns:
        The model; the same object for repeated calls with an equivalent spec and device
        (``model.name`` is the canonical spec to store alongside its vectors).

    Raises:
        UnknownModelError: unknown family/architecture or malformed spec (lists supported forms).
        ModelWeightsNotFoundError: the weights cannot be found or downloaded.
        ValueError: invalid device string.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UnknownModelError(f"empty model spec; supported: {'; '.join(supported_forms())}")
    spec = spec.strip()
    device = str(torch.device(device))  # validates, and makes "cpu"/"cpu " etc. one cache key
    family, _, arg = spec.partition(":")
    if family not in _FAMILIES:
        raise UnknownModelError(f"unknown model {spec!r}; supported: {'; '.join(supported_forms())}")
    with _LOCK:
        model = _CACHE.get((spec, device))
        if model is None:
            module = importlib.import_module(_FAMILIES[family][0], __package__)
            # Canonical key first, so 'openclip' and 'openclip:ViT-B-32/laion2b_s34b_b79k' share one model.
            canonical = module.canonical_spec(arg or None)
            model = _CACHE.get((canonical, device))
            if model is None:
                model = module.from_spec(arg or None, device)
                _CACHE[(model.name, device)] = model
            _CACHE[(spec, device)] = _CACHE[(canonical, device)] = model
        return model


def canonical_name(spec: str) -> str:
    """The name a model is stored under (``model.name``) for any spec that loads it, without
    loading it: ``"openclip"`` -> ``"openclip:ViT-B-32/laion2b_s34b_b79k"``.

    Raises:
        UnknownModelError: unknown family/architecture or malformed spec.
    """
    family, _, arg = spec.strip().partition(":")
    if family not in _FAMILIES:
        raise UnknownModelError(f"unknown model {spec!r}; supported: {'; '.join(supported_forms())}")
    module = importlib.import_module(_FAMILIES[family][0], __package__)
    return module.canonical_spec(arg or None)


def clear_cache() -> None:
    """Forget all loaded models (frees their memory once no one else holds them)."""
    with _LOCK:
        _CACHE.clear()
