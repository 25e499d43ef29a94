"""What an ingest run did: counts of rows really added, what already existed, what was skipped."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Skipped:
    """One input an ingest did not take.

    ``source_uri`` is the file's ``file://`` URI, or for a COCO annotation or caption
    ``<json file URI>#annotation=<id>`` / ``#caption=<id>``. ``reason`` is human-readable and
    starts with a short kind ("corrupt", "truncated", "missing", "bad box", ...) followed by
    ": " and details; :meth:`IngestReport.summary` groups by that kind.
    """

    source_uri: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason's leading kind, e.g. ``"truncated"`` for ``"truncated: image file is ..."``."""
        return self.reason.split(":", 1)[0].strip()


@dataclass
class IngestReport:
    """The outcome of :func:`~visearch.ingest.ingest_folder` or :func:`~visearch.ingest.ingest_coco`.

    Every ``*_added`` count is the number of rows this run really inserted (``RETURNING``), so a
    repeated run reports zeros. ``images_existing`` counts input files whose bytes (sha256) were
    already in the dataset, including duplicate files within one run. ``seconds`` is wall time.
    """

    dataset: str
    dataset_id: int
    images_added: int = 0
    images_existing: int = 0
    annotations_added: int = 0
    concepts_added: int = 0
    captions_added: int = 0
    labels_added: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    #: Files that are not images (neither an image extension nor image bytes): skipped quietly.
    not_images: int = 0
    seconds: float = 0.0
    #: Things that went in but deserve a look (e.g. a COCO image whose size differs from the file).
    warnings: list[str] = field(default_factory=list)

    @property
    def images_seen(self) -> int:
        """Images that are in the dataset after this run (added or already there)."""
        return self.images_added + self.images_existing

    @property
    def images_per_second(self) -> float:
        """Ingest rate over every image looked at (added + existing), in images per second."""
        return self.images_seen / self.seconds if self.seconds > 0 else 0.0

    def summary(self, *, examples: int = 3) -> str:
        """A human, multi-line account: what was added, what existed, what was skipped and why.

        Skips are grouped by the reason's kind, largest group first, each with up to
        ``examples`` example inputs and their full reasons.
        """
        lines = [
            f"dataset {self.dataset!r} (id {self.dataset_id}): "
            f"{self.images_seen} images in {self.seconds:.1f} s "
            f"({self.images_per_second:.0f} images/s)",
            f"  added:    {self.images_added} images, {self.annotations_added} annotations, "
            f"{self.concepts_added} concepts, {self.captions_added} captions, "
            f"{self.labels_added} labels",
            f"  existing: {self.images_existing} images (already in the dataset)",
        ]
        if self.not_images:
            lines.append(f"  ignored:  {self.not_images} files that are not images")
        if not self.skipped:
            lines.append("  skipped:  nothing")
        else:
            groups: dict[str, list[Skipped]] = defaultdict(list)
            for s in self.skipped:
                groups[s.kind].append(s)
            lines.append(f"  skipped:  {len(self.skipped)}")
            for kind, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
                lines.append(f"    {kind}: {len(items)}")
                for s in items[:examples]:
                    lines.append(f"      {s.source_uri} ({s.reason})")
                if len(items) > examples:
                    lines.append(f"      ... and {len(items) - examples} more")
        for w in self.warnings[:examples]:
            lines.append(f"  warning:  {w}")
        if len(self.warnings) > examples:
            lines.append(f"  ... and {len(self.warnings) - examples} more warnings")
        return "\n".join(lines)
