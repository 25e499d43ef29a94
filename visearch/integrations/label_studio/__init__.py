"""Label Studio (https://labelstud.io) on visearch's PostgreSQL: see :mod:`.adapter` for the
mapping, :mod:`.server` to run one locally (tests, benchmarks, development)."""

from visearch.integrations.label_studio.adapter import LabelConfig, LabelStudio, LabelStudioSettings

__all__ = ["LabelConfig", "LabelStudio", "LabelStudioSettings"]
