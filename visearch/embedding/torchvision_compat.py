"""Make ``import torchvision`` (and hence ``import open_clip``) work with a CPU-only torch.

Why this exists: the torchvision wheel on PyPI is a CUDA build. Next to a CPU-only torch its
compiled extension (``torchvision._C``) cannot load, so the ``torchvision::nms`` operator is never
registered, and ``torchvision/_meta_registrations.py`` then fails at import time with
``RuntimeError: operator torchvision::nms does not exist``. visearch only uses torchvision's
*Python* image transforms (through open_clip), never its compiled ops, so declaring the two
operator schemas that the import-time registrations look up is enough to import it.

The shim is guarded: it first tries the normal import and only declares the schemas when that
import fails with exactly this error. On a machine with a working torchvision nothing is
declared (declaring them there would clash with the real extension's registrations).
"""

from __future__ import annotations

import sys
import threading

import torch

# Kept alive at module level: dropping the Library object would deregister the schemas.
_LIBRARY: torch.library.Library | None = None
_LOCK = threading.Lock()
_MISSING_OP_ERROR = "torchvision::nms does not exist"
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


def _purge_partial_import() -> None:
    # A failed import leaves half-initialised torchvision modules behind; the retry must start clean.
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision_importable() -> bool:
    """Import torchvision, declaring its missing operator schemas first if (and only if) needed.

    Idempotent and thread-safe; cheap after the first call.

    Returns:
        True if the compatibility schemas were (or had already been) declared in this process,
        False if torchvision imported normally.

    Raises:
        ImportError: torchvision is not installed at all.
        RuntimeError: torchvision fails to import for a reason other than the missing
            ``torchvision::nms`` operator, or still fails after the schemas are declared.
    """
    global _LIBRARY
    with _LOCK:
        if _LIBRARY is not None:
            return True
        try:
            import torchvision  # noqa: F401
            return False
        except RuntimeError as exc:
            if _MISSING_OP_ERROR not in str(exc):
                raise
        _purge_partial_import()
        library = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS:
            op_name = schema.split("(", 1)[0]
            if not hasattr(torch.ops.torchvision, op_name):
                library.define(schema)
        _LIBRARY = library
        import torchvision  # noqa: F401,F811  (now succeeds; a failure here propagates)
        return True
