"""``openclip:<arch>/<pretrained>``: CLIP image+text embeddings via open_clip.

Models: CLIP (Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision", arXiv:2103.00020) as implemented and trained by OpenCLIP (Cherti et al. 2023,
"Reproducible scaling laws for contrastive language-image learning", arXiv:2212.07143;
github.com/mlfoundations/open_clip). Image and text towers embed into one space, so text queries
search images.

Spec forms (see :func:`parse_spec`):

* ``openclip`` -- the default, ``openclip:ViT-B-32/laion2b_s34b_b79k``;
* ``openclip:<arch>/<tag>`` -- an open_clip architecture and pretrained tag (see
  ``open_clip.list_pretrained()``), weights taken from the Hugging Face cache
  (``~/.cache/huggingface``, or ``$HF_HOME``/``$HF_HUB_CACHE``) and downloaded only if missing
  and the network is reachable;
* ``openclip:<arch>/<path>`` -- a local open_clip checkpoint file, e.g.
  ``openclip:ViT-B-32//models/open_clip_pytorch_model.bin`` (absolute path after the slash);
* ``openclip:<arch>/random`` -- **RANDOMLY INITIALISED weights, for tests and development only.**
  Its embeddings are meaningless; it is never chosen implicitly.

Weights are never silently random: a tag that is not cached and cannot be downloaded, a missing
path, or an unknown tag raises :class:`ModelWeightsNotFoundError` within seconds.

Preprocessing is open_clip's own validation transform for the checkpoint (resize shorter side,
centre crop, the tag's mean/std -- e.g. OpenAI's CLIP statistics for LAION ViT-B-32); text uses
the architecture's open_clip tokenizer. Both towers output L2-normalised float32.
"""

from __future__ import annotations

import logging
import os
import pickle
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
from .torchvision_compat import ensure_torchvision_importable

log = logging.getLogger(__name__)

DEFAULT_ARCH = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
RANDOM_WEIGHTS = "random"
_NETWORK_PROBE_TIMEOUT_S = 5.0
_TEXT_BATCH = 256


def _open_clip():
    ensure_torchvision_importable()  # open_clip imports torchvision transforms
    import open_clip

    return open_clip


def how_to_provide_weights(arch: str, pretrained: str) -> str:
    """The user-facing instructions appended to every ModelWeightsNotFoundError."""
    return (
        "To provide the weights, either (a) on a machine with internet run\n"
        f"    python -c \"import open_clip; open_clip.create_model_and_transforms('{arch}', "
        f"pretrained='{pretrained}')\"\n"
        "and copy its Hugging Face cache (~/.cache/huggingface, or $HF_HOME) to this machine "
        "(same path, or point $HF_HOME at it); or (b) pass a local checkpoint file as "
        f"'openclip:{arch}//path/to/open_clip_pytorch_model.bin'."
    )


def parse_spec(arg: str | None) -> tuple[str, str]:
    """Split the part after ``openclip:`` into ``(arch, pretrained)``.

    ``None``/empty gives the default ``("ViT-B-32", "laion2b_s34b_b79k")``. The split is at the
    first ``/``, so ``ViT-B-32//abs/path.bin`` gives ``("ViT-B-32", "/abs/path.bin")``.

    Raises:
        UnknownModelError: no ``/<pretrained>`` part.
    """
    if not arg:
        return DEFAULT_ARCH, DEFAULT_PRETRAINED
    arch, sep, pretrained = arg.partition("/")
    if not arch or not sep or not pretrained:
        raise UnknownModelError(
            f"bad openclip spec 'openclip:{arg}': expected 'openclip:<arch>/<pretrained tag>', "
            f"'openclip:<arch>/<checkpoint path>' or 'openclip:<arch>/{RANDOM_WEIGHTS}', "
            f"e.g. 'openclip:{DEFAULT_ARCH}/{DEFAULT_PRETRAINED}'"
        )
    return arch, pretrained


def _network_reachable(url: str) -> bool:
    """One short HEAD request (honours proxy env vars); avoids huggingface_hub's ~45 s of retries."""
    try:
        from huggingface_hub.utils import get_session

        get_session().head(url, timeout=_NETWORK_PROBE_TIMEOUT_S)
        return True
    except Exception:  # noqa: BLE001 -- any failure means "cannot download now"
        return False


def _cached_tag_file(tag_cfg: dict[str, Any]) -> str | None:
    """The local file for a pretrained tag if it is already cached, without touching the network."""
    if tag_cfg.get("file"):
        return tag_cfg["file"] if os.path.isfile(tag_cfg["file"]) else None
    hf_hub = tag_cfg.get("hf_hub", "")
    if hf_hub:
        from huggingface_hub import hf_hub_download
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        model_id, filename = os.path.split(hf_hub)
        filename = filename or HF_WEIGHTS_NAME
        # Same candidates, same order as open_clip.pretrained.download_pretrained_from_hf.
        candidates = [filename]
        if filename == HF_WEIGHTS_NAME:
            candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        for candidate in candidates:
            try:
                return hf_hub_download(model_id, candidate, local_files_only=True)
            except Exception:  # noqa: BLE001 -- not in the cache (or cache unreadable)
                continue
    url = tag_cfg.get("url", "")
    if url:
        target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if target.is_file():
            return str(target)
    return None


def _resolve_tag(arch: str, tag: str, tag_cfg: dict[str, Any]) -> str:
    """Cached checkpoint path for a tag, downloading it only when the network is reachable."""
    cached = _cached_tag_file(tag_cfg)
    if cached:
        return cached
    from huggingface_hub import constants as hf_constants

    if tag_cfg.get("hf_hub"):
        probe_url = hf_constants.ENDPOINT
    else:
        probe_url = tag_cfg.get("url", "")
    if hf_constants.HF_HUB_OFFLINE or not probe_url or not _network_reachable(probe_url):
        raise ModelWeightsNotFoundError(
            f"open_clip weights for 'openclip:{arch}/{tag}' are not in the local cache and "
            f"cannot be downloaded (offline or {probe_url or 'download site'} unreachable).\n"
            + how_to_provide_weights(arch, tag)
        )
    from open_clip.pretrained import download_pretrained

    try:
        return download_pretrained(tag_cfg)
    except Exception as exc:  # noqa: BLE001
        raise ModelWeightsNotFoundError(
            f"downloading open_clip weights for 'openclip:{arch}/{tag}' failed: {exc}\n"
            + how_to_provide_weights(arch, tag)
        ) from exc


def _preprocess_overrides(tag_cfg: dict[str, Any]) -> dict[str, Any]:
    # What open_clip itself takes from a tag's config (mean/std/interpolation/resize mode);
    # 'size' stays the model's own, as in open_clip.create_model.
    keys = ("mean", "std", "interpolation", "resize_mode", "fill_color")
    return {k: tag_cfg[k] for k in keys if tag_cfg.get(k) is not None}


def _classify(arch: str, pretrained: str) -> tuple[str, str]:
    """``(kind, canonical pretrained)``; kind is ``random``, ``tag``, ``path`` or ``missing``.

    Tags win over same-named files; tags are normalised as open_clip does (lower case, ``_``),
    paths made absolute. Raises UnknownModelError for an unknown architecture.
    """
    open_clip = _open_clip()
    if open_clip.get_model_config(arch) is None:
        raise UnknownModelError(
            f"unknown open_clip architecture {arch!r}; known: {', '.join(open_clip.list_models())}"
        )
    if pretrained == RANDOM_WEIGHTS:
        return "random", RANDOM_WEIGHTS
    if open_clip.get_pretrained_cfg(arch, pretrained):
        return "tag", pretrained.lower().replace("-", "_")
    path = Path(pretrained).expanduser()
    if path.is_file():
        return "path", str(path.resolve())
    return "missing", pretrained


def canonical_spec(arg: str | None) -> str:
    """The canonical model name for a spec argument, without loading anything (registry cache key).

    Raises:
        UnknownModelError: malformed spec or unknown architecture.
    """
    arch, pretrained = parse_spec(arg)
    return f"openclip:{arch}/{_classify(arch, pretrained)[1]}"


class OpenClipPreprocess:
    """Picklable wrapper around open_clip's torchvision val transform.

    Unpickling (in a spawned DataLoader worker) re-applies the torchvision import shim before
    the torchvision objects are rebuilt.
    """

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image).to(torch.float32)

    def __reduce__(self):
        return _rebuild_preprocess, (pickle.dumps(self.transform),)


def _rebuild_preprocess(blob: bytes) -> OpenClipPreprocess:
    ensure_torchvision_importable()
    return OpenClipPreprocess(pickle.loads(blob))


class OpenClipModel(EmbeddingModel):
    """An open_clip CLIP model: image and text embeddings in one space (``embeds_text=True``).

    Attributes:
        arch: open_clip architecture name (e.g. ``ViT-B-32``).
        pretrained: the tag (lower-cased as open_clip does), absolute checkpoint path, or ``random``.
        checkpoint_path: the file the weights came from (``None`` only for ``random``).
        clip: the underlying open_clip model (eval mode).
    """

    embeds_text = True

    def __init__(self, arch: str = DEFAULT_ARCH, pretrained: str = DEFAULT_PRETRAINED, device: str = "cpu"):
        """Load an open_clip model; see the module docstring for the ``pretrained`` forms.

        Raises:
            UnknownModelError: ``arch`` is not an open_clip architecture.
            ModelWeightsNotFoundError: weights not cached and not downloadable, checkpoint path
                missing, unknown tag, or a checkpoint that does not fit the architecture.
        """
        open_clip = _open_clip()
        from open_clip.transform import PreprocessCfg, image_transform_v2

        kind, canonical = _classify(arch, pretrained)
        force_preprocess: dict[str, Any] = {}
        force_quick_gelu = False
        if kind == "random":
            checkpoint = None
            warnings.warn(
                f"openclip:{arch}/{RANDOM_WEIGHTS}: RANDOMLY INITIALISED weights -- embeddings are "
                "meaningless; use only for tests/development", UserWarning, stacklevel=2,
            )
        elif kind == "tag":
            tag_cfg = open_clip.get_pretrained_cfg(arch, canonical)
            checkpoint = _resolve_tag(arch, canonical, tag_cfg)
            force_preprocess = _preprocess_overrides(tag_cfg)
            # Tags trained with QuickGELU (e.g. 'openai') only work with it; open_clip merely warns.
            force_quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        elif kind == "path":
            checkpoint = canonical
        else:
            tags = open_clip.list_pretrained_tags_by_model(arch)
            raise ModelWeightsNotFoundError(
                f"'openclip:{arch}/{pretrained}': {pretrained!r} is neither a pretrained tag "
                f"of {arch} (known: {', '.join(tags) or 'none'}) nor an existing checkpoint "
                "file.\n" + how_to_provide_weights(arch, tags[0] if tags else DEFAULT_PRETRAINED)
            )
        try:
            clip = open_clip.create_model(
                arch,
                pretrained=checkpoint,
                device=device,
                force_quick_gelu=force_quick_gelu,
                force_preprocess_cfg=force_preprocess or None,
                require_pretrained=checkpoint is not None,
            )
        except Exception as exc:  # noqa: BLE001 -- corrupt file, key mismatch, ...
            raise ModelWeightsNotFoundError(
                f"could not load open_clip weights {checkpoint!r} into {arch}: {exc}"
            ) from exc
        self.arch = arch
        self.pretrained = canonical
        self.checkpoint_path = checkpoint
        self.name = f"openclip:{arch}/{canonical}"
        self.device = str(torch.device(device))
        self.clip = clip.eval()
        self.dim = int(open_clip.get_model_config(arch)["embed_dim"])
        image_size = self.clip.visual.image_size
        self.image_size = tuple(image_size) if isinstance(image_size, (tuple, list)) else (image_size, image_size)
        self._preprocess = OpenClipPreprocess(
            image_transform_v2(PreprocessCfg(**self.clip.visual.preprocess_cfg), is_train=False)
        )
        self.tokenizer = open_clip.get_tokenizer(arch)

    @property
    def preprocessor(self) -> OpenClipPreprocess:
        return self._preprocess

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> float32 ``(3, H, W)`` with open_clip's val transform for this checkpoint."""
        return self._preprocess(image)

    def embed_batch(self, pixels: torch.Tensor) -> np.ndarray:
        """``(n, 3, H, W)`` float32 -> ``(n, dim)`` float32 unit-norm image embeddings."""
        check_pixels(pixels, self.image_size, self.name)
        with torch.inference_mode():
            return to_unit_float32(self.clip.encode_image(pixels.to(self.device, torch.float32)))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> ``(n, dim)`` float32 unit-norm embeddings in the image space.

        Texts longer than the model's context (77 tokens for standard CLIP) are truncated by the
        tokenizer.

        Raises:
            TypeError: ``texts`` is a single string rather than a sequence of strings.
        """
        if isinstance(texts, str):
            raise TypeError("embed_texts expects a sequence of strings, not a single string")
        chunks = [np.zeros((0, self.dim), dtype=np.float32)]
        with torch.inference_mode():
            for start in range(0, len(texts), _TEXT_BATCH):
                tokens = self.tokenizer(list(texts[start:start + _TEXT_BATCH])).to(self.device)
                chunks.append(to_unit_float32(self.clip.encode_text(tokens)))
        return np.concatenate(chunks, axis=0)


def from_spec(arg: str | None, device: str) -> OpenClipModel:
    """Registry hook for ``openclip`` / ``openclip:<arch>/<pretrained>``."""
    arch, pretrained = parse_spec(arg)
    return OpenClipModel(arch, pretrained, device)
