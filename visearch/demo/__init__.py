"""``visearch demo``: the main job end to end on real photos, on any machine, offline.

Default photos: the sample photos that ship inside scikit-image (``skimage/data``: the
astronaut, Chelsea the cat, coffee, a motorcycle seen from two viewpoints, a rocket launch,
the cameraman, the Hubble deep field, ...) with COCO boxes drawn for this demo
(``skimage_boxes.json`` beside this file). Or a folder / COCO dataset of your own.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from visearch.config import Settings
from visearch.db.database import Database

BOXES = Path(__file__).with_name("skimage_boxes.json")


def skimage_photos(target: Path) -> tuple[Path, Path]:
    """Copy scikit-image's sample photos into ``target``; return (image folder, COCO json)."""
    import json

    import skimage.data

    source = Path(skimage.data.__file__).parent
    target.mkdir(parents=True, exist_ok=True)
    for image in json.loads(BOXES.read_text())["images"]:
        src = source / image["file_name"]
        dst = target / image["file_name"]
        if not dst.exists():
            shutil.copyfile(src, dst)
    return target, BOXES


def run_demo(
    db: Database,
    settings: Settings,
    *,
    dataset: str = "demo",
    folder: Path | None = None,
    instances: Path | None = None,
    echo: Callable[[str], None] = print,
) -> None:
    """Ingest, embed every image and box with ``settings.model``, and print example searches."""
    from visearch.cli import format_result
    from visearch.embed import embed_pending
    from visearch.embedding import load_model
    from visearch.ingest import ingest_coco, ingest_folder
    from visearch.search import SearchRequest, search

    if folder is None:
        folder, instances = skimage_photos(settings.data_dir / "demo-photos")
        echo(f"photos: scikit-image's sample photos, copied to {folder}")
    if instances:
        report = ingest_coco(db, dataset, folder, instances, max_pixels=settings.max_image_pixels)
    else:
        report = ingest_folder(db, dataset, folder, max_pixels=settings.max_image_pixels)
    echo(report.summary())

    model = load_model(settings.model, device=settings.device)
    echo(embed_pending(db, model, batch_size=settings.batch_size).summary())

    with db.connect() as conn:
        first_image, first_name = conn.execute(
            "SELECT i.id, i.file_name FROM images i JOIN datasets d ON d.id = i.dataset_id"
            " WHERE d.name = %s ORDER BY i.file_name = 'motorcycle_left.png' DESC, i.id LIMIT 1",
            (dataset,),
        ).fetchone()
        first_box = conn.execute(
            "SELECT a.id, k.tag, i.file_name FROM annotations a JOIN images i ON i.id = a.image_id"
            " JOIN datasets d ON d.id = i.dataset_id LEFT JOIN concepts k ON k.id = a.concept_id"
            " WHERE d.name = %s ORDER BY k.tag = 'person' DESC, a.id LIMIT 1",
            (dataset,),
        ).fetchone()

    examples = [(f"images like image {first_image} ({first_name})",
                 SearchRequest(image_ids=[first_image], datasets=[dataset], limit=5))]
    if first_box:
        ann_id, tag, file_name = first_box
        examples.append((f"objects like annotation {ann_id} (#{tag} in {file_name})",
                         SearchRequest(mode="objects", annotation_id=ann_id, datasets=[dataset], limit=5)))
        if tag:
            examples.append((f"#{tag} objects, most typical first",
                             SearchRequest(mode="objects", query=f"#{tag}", datasets=[dataset], limit=5)))
    if model.embeds_text:
        examples.append(("text: 'a photo of a cat'",
                         SearchRequest(query="a photo of a cat", datasets=[dataset], limit=5)))
    for title, req in examples:
        echo(f"\n== {title}")
        echo(format_result(search(db, req, settings)))
    echo(f"\nTry: visearch search --image-id {first_image} -k 5   |   visearch db shell   (psql, the server held)")
