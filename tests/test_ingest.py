"""visearch.ingest against the real database and the real images in ../shared/data."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from visearch.ingest import IngestReport, ingest_coco, ingest_folder, path_from_source_uri

COCO_IMAGES = 10  # files copied for the tmp-folder tests: enough variety, still fast


def _count(db, sql: str, *params) -> int:
    with db.connect() as conn:
        return conn.execute(sql, params).fetchone()[0]


def _copy_coco_subset(coco128: Path, dest: Path, n: int = COCO_IMAGES) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    sources = sorted((coco128 / "train2017").glob("*.jpg"))[:n]
    for src in sources:
        shutil.copyfile(src, dest / src.name)
    return sources


def test_coco128_instances_and_rerun_adds_nothing(db, coco128):
    images = coco128 / "train2017"
    instances = coco128 / "annotations" / "instances_train2017.json"

    first = ingest_coco(db, "coco128", images, instances, progress=False)
    assert (first.images_added, first.annotations_added, first.concepts_added) == (128, 939, 80)
    assert first.images_existing == 0 and first.skipped == []
    assert _count(db, "SELECT count(*) FROM images") == 128
    assert _count(db, "SELECT count(*) FROM annotations WHERE source = 'coco'") == 939
    assert _count(db, "SELECT count(*) FROM concepts") == 80
    assert _count(db, "SELECT count(*) FROM annotations WHERE iscrowd") == 10
    assert _count(db, "SELECT count(*) FROM image_content") == 128
    # 71 of the 80 categories have boxes; the other 9 are concepts all the same.
    assert _count(db, "SELECT count(DISTINCT concept_id) FROM annotations") == 71

    with db.connect() as conn:
        row = conn.execute(
            "SELECT external_id, width, height, format, file_name, metadata FROM images"
            " WHERE file_name = '000000000009.jpg'"
        ).fetchone()
        box = conn.execute(
            "SELECT a.bbox_x, a.bbox_w, c.name, a.iscrowd, a.metadata ? 'area' FROM annotations a"
            " JOIN concepts c ON c.id = a.concept_id WHERE a.external_id = '1038967'"
        ).fetchone()
    assert row[:5] == ("9", 640, 480, "JPEG", "000000000009.jpg")
    assert row[5]["license"] == 3 and "coco_url" in row[5] and "width" not in row[5]
    coco = json.loads(instances.read_text())
    ann = next(a for a in coco["annotations"] if a["id"] == 1038967)
    cat = next(c["name"] for c in coco["categories"] if c["id"] == ann["category_id"])
    assert box == (ann["bbox"][0], ann["bbox"][2], cat, bool(ann["iscrowd"]), True)

    second = ingest_coco(db, "coco128", images, instances, progress=False)
    assert (
        second.images_added, second.annotations_added, second.concepts_added,
        second.captions_added, second.labels_added,
    ) == (0, 0, 0, 0, 0)
    assert second.images_existing == 128 and second.skipped == []
    assert _count(db, "SELECT count(*) FROM images") == 128
    assert _count(db, "SELECT count(*) FROM annotations") == 939
    assert "128 images" in second.summary()


def test_bad_files_are_skipped_with_distinct_reasons(db, coco128, tmp_path):
    folder = tmp_path / "mixed"
    sources = _copy_coco_subset(coco128, folder / "good")
    bad = folder / "bad"
    bad.mkdir()
    (bad / "garbage.jpg").write_bytes(bytes(range(256)) * 40)
    (bad / "empty.jpg").write_bytes(b"")
    whole = sources[0].read_bytes()
    (bad / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (bad / "notes.txt").write_text("these are not the images you are looking for\n")  # not an image: ignored
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: ignored, not a reject

    report = ingest_folder(db, "mixed", folder, progress=False, workers=2)

    assert report.images_added == len(sources)
    reasons = {path_from_source_uri(s.source_uri).name: s.reason for s in report.skipped}
    assert set(reasons) == {"garbage.jpg", "empty.jpg", "truncated.jpg"}
    assert report.not_images == 1
    kinds = {name: reason.split(":")[0] for name, reason in reasons.items()}
    assert kinds["empty.jpg"] == "empty"
    assert kinds["truncated.jpg"] == "truncated"
    assert kinds["garbage.jpg"] == "unidentified"
    assert len(set(reasons.values())) == 3  # each says what is wrong with that file

    with db.connect() as conn:
        rejects = dict(conn.execute("SELECT source_uri, reason FROM ingest_rejects").fetchall())
        names = {r[0] for r in conn.execute("SELECT file_name FROM images")}
    assert rejects == {s.source_uri: s.reason for s in report.skipped}
    assert names == {f"good/{s.name}" for s in sources}
    summary = report.summary()
    assert "truncated: 1" in summary and "unidentified: 1" in summary and "1 files that are not images" in summary

    # Re-running neither duplicates images nor piles up reject rows.
    again = ingest_folder(db, "mixed", folder, progress=False)
    assert (again.images_added, again.images_existing, len(again.skipped)) == (0, len(sources), 3)
    assert _count(db, "SELECT count(*) FROM ingest_rejects") == 3


def test_coco_mini_captions_then_instances_share_images(db, coco_mini):
    images = coco_mini / "train2017"
    ann = coco_mini / "annotations"

    caps = ingest_coco(db, "coco-mini", images, captions_json=ann / "captions_train2017.json", progress=False)
    assert (caps.images_added, caps.captions_added, caps.annotations_added) == (80, 400, 0)
    assert _count(db, "SELECT count(*) FROM captions WHERE source = 'coco'") == 400
    assert _count(db, "SELECT count(DISTINCT external_id) FROM captions") == 400

    boxes = ingest_coco(db, "coco-mini", images, ann / "instances_train2017.json", progress=False)
    assert (boxes.images_added, boxes.images_existing, boxes.annotations_added) == (0, 80, 739)
    assert _count(db, "SELECT count(*) FROM images") == 80


def test_bad_boxes_are_skipped_and_the_rest_go_in(db, coco128, tmp_path):
    sources = _copy_coco_subset(coco128, tmp_path / "img", n=3)
    coco = json.loads((coco128 / "annotations" / "instances_train2017.json").read_text())
    names = {s.name for s in sources}
    coco["images"] = [i for i in coco["images"] if i["file_name"] in names]
    ids = {i["id"]: i for i in coco["images"]}
    coco["images"].append({"id": 1, "file_name": "gone.jpg", "width": 10, "height": 10})
    anns = [a for a in coco["annotations"] if a["image_id"] in ids]
    first = anns[0]
    img = ids[first["image_id"]]
    anns += [
        {**first, "id": 9_000_001, "bbox": [img["width"] - 5.0, 0.0, 50.0, 10.0]},  # past the edge
        {**first, "id": 9_000_002, "bbox": [1.0, 1.0, 0.0, 10.0]},  # no area
        {**first, "id": 9_000_003, "image_id": 1, "bbox": [1.0, 1.0, 2.0, 2.0]},  # image missing
        {**first, "id": 9_000_004, "image_id": 424242},  # image id not listed
    ]
    coco["annotations"] = anns
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))

    report = ingest_coco(db, "boxes", tmp_path / "img", path, progress=False)
    good = len(anns) - 4
    assert report.images_added == 3 and report.annotations_added == good
    by_id = {s.source_uri.replace("=", "/").rsplit("/", 1)[-1]: s.reason.split(":")[0] for s in report.skipped}
    assert by_id["9000001"] == "bad_box" and by_id["9000002"] == "bad_box"
    assert by_id["9000003"] == "image_skipped" and by_id["9000004"] == "unknown_image"
    assert by_id["gone.jpg"] == "missing"
    assert _count(db, "SELECT count(*) FROM annotations") == good
    assert _count(db, "SELECT count(*) FROM ingest_rejects") == 1  # the missing file


def test_labels_from_folders_cifar_subset(db, cifar10, tmp_path):
    classes = ("cat", "ship")
    for cls in classes:
        (tmp_path / "cifar" / cls).mkdir(parents=True)
        for src in sorted((cifar10 / cls).glob("*.jpg"))[:20]:
            shutil.copyfile(src, tmp_path / "cifar" / cls / src.name)

    report = ingest_folder(db, "cifar", tmp_path / "cifar", labels_from_folders=True, progress=False)
    assert (report.images_added, report.labels_added, report.concepts_added) == (40, 40, 2)
    with db.connect() as conn:
        assert {r[0] for r in conn.execute("SELECT name FROM concepts")} == set(classes)
        rows = conn.execute(
            "SELECT i.file_name, c.name, l.source FROM images i"
            " JOIN image_labels l ON l.image_id = i.id JOIN concepts c ON c.id = l.concept_id"
        ).fetchall()
    assert len(rows) == 40 and all(f.split("/")[0] == c and s == "folder" for f, c, s in rows)
    assert all(w == h == 32 for w, h in _sizes(db))

    again = ingest_folder(db, "cifar", tmp_path / "cifar", labels_from_folders=True, progress=False)
    assert (again.images_added, again.labels_added, again.concepts_added, again.images_existing) == (0, 0, 0, 40)


def _sizes(db) -> list[tuple[int, int]]:
    with db.connect() as conn:
        return conn.execute("SELECT width, height FROM images").fetchall()


def test_exif_rotation_swaps_stored_size(db, coco128, tmp_path):
    raw = Image.open(sorted((coco128 / "train2017").glob("*.jpg"))[0])
    raw_w, raw_h = raw.size
    assert raw_w != raw_h
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    raw.save(buf, format="JPEG", exif=exif.tobytes())
    (tmp_path / "rot").mkdir()
    (tmp_path / "rot" / "rotated.jpg").write_bytes(buf.getvalue())

    report = ingest_folder(db, "rot", tmp_path / "rot", progress=False)
    assert report.images_added == 1
    assert _sizes(db) == [(raw_h, raw_w)]


def test_store_bytes_false_keeps_a_readable_reference(db, coco128, tmp_path):
    sources = _copy_coco_subset(coco128, tmp_path / "ref", n=3)
    report = ingest_folder(db, "ref", tmp_path / "ref", store_bytes=False, progress=False)
    assert report.images_added == 3
    assert _count(db, "SELECT count(*) FROM image_content") == 0
    with db.connect() as conn:
        rows = conn.execute("SELECT source_uri, sha256 FROM images").fetchall()
    for uri, sha in rows:
        assert uri.startswith("file:///")
        assert hashlib.sha256(path_from_source_uri(uri).read_bytes()).digest() == bytes(sha)
    assert {path_from_source_uri(u).name for u, _ in rows} == {s.name for s in sources}


def test_store_bytes_true_stores_the_original_bytes(db, coco128, tmp_path):
    _copy_coco_subset(coco128, tmp_path / "bytes", n=3)
    ingest_folder(db, "bytes", tmp_path / "bytes", progress=False)
    with db.connect() as conn:
        rows = conn.execute(
            "SELECT i.sha256, c.content, i.source_uri FROM images i JOIN image_content c ON c.image_id = i.id"
        ).fetchall()
    assert len(rows) == 3
    for sha, content, uri in rows:
        assert hashlib.sha256(content).digest() == bytes(sha)
        assert bytes(content) == path_from_source_uri(uri).read_bytes()


def test_duplicate_files_are_one_image(db, coco128, tmp_path):
    src = sorted((coco128 / "train2017").glob("*.jpg"))[0]
    (tmp_path / "dup" / "a").mkdir(parents=True)
    shutil.copyfile(src, tmp_path / "dup" / "a" / "x.jpg")
    shutil.copyfile(src, tmp_path / "dup" / "y.jpg")
    report = ingest_folder(db, "dup", tmp_path / "dup", progress=False)
    assert (report.images_added, report.images_existing) == (1, 1)
    assert _count(db, "SELECT count(*) FROM images") == 1


def test_clear_errors_for_bad_input(db, coco128, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-folder"):
        ingest_folder(db, "x", tmp_path / "no-such-folder", progress=False)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match="broken.json"):
        ingest_coco(db, "x", coco128 / "train2017", broken, progress=False)
    not_coco = tmp_path / "list.json"
    not_coco.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="list.json"):
        ingest_coco(db, "x", coco128 / "train2017", not_coco, progress=False)
    # a captions file given as instances: told which it looks like
    with pytest.raises(ValueError, match="captions"):
        ingest_coco(db, "x", coco128 / "train2017", _captions_like(tmp_path), progress=False)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        ingest_coco(db, "x", coco128 / "train2017", tmp_path / "missing.json", progress=False)
    assert _count(db, "SELECT count(*) FROM images") == 0


def _captions_like(tmp_path: Path) -> Path:
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [], "annotations": [{"id": 1, "image_id": 1, "caption": "a"}]}))
    return path


def test_summary_groups_skips_by_reason():
    from visearch.ingest import Skipped

    report = IngestReport(dataset="d", dataset_id=1, images_added=2, seconds=1.0)
    report.skipped = [Skipped(f"file:///x/{i}.jpg", f"truncated: cut at byte {i}") for i in range(5)]
    report.skipped.append(Skipped("file:///x/e.jpg", "empty: empty image data (0 bytes)"))
    text = report.summary()
    assert "truncated: 5" in text and "empty: 1" in text and "... and 2 more" in text
    assert text.index("truncated: 5") < text.index("empty: 1")


def test_database_has_the_last_word_on_boxes(db, coco128, tmp_path):
    """A box that passes the Python checks but that the database refuses costs only itself."""
    from visearch.ingest.writer import NewAnnotation, insert_annotations

    _copy_coco_subset(coco128, tmp_path / "one", n=1)
    ingest_folder(db, "one", tmp_path / "one", progress=False)
    with db.connect() as conn:
        image_id, width = conn.execute("SELECT id, width FROM images").fetchone()
        rows = [
            NewAnnotation(image_id, None, box, False, str(i), {}, f"test#annotation={i}")
            for i, box in enumerate([(1.0, 1.0, 5.0, 5.0), (width - 1.0, 0.0, 9.0, 9.0), (2.0, 2.0, 3.0, 3.0)])
        ]
        with conn.transaction():
            added, refused = insert_annotations(conn, rows, source="test")
        assert added == 2 and [s.source_uri for s in refused] == ["test#annotation=1"]
        assert "outside image" in refused[0].reason and refused[0].kind == "bad_box"
        assert conn.execute("SELECT count(*) FROM annotations").fetchone()[0] == 2


def test_pixel_limit_rejects_large_images(db, coco128, tmp_path):
    _copy_coco_subset(coco128, tmp_path / "big", n=2)
    report = ingest_folder(db, "big", tmp_path / "big", max_pixels=100_000, progress=False)
    assert report.images_added == 0
    assert [s.kind for s in report.skipped] == ["too_large", "too_large"]
    assert _count(db, "SELECT count(*) FROM ingest_rejects") == 2


def test_every_supported_format_goes_in(db, coco128, tmp_path):
    """JPEG, PNG (16-bit and with alpha), GIF (animated: first frame), WebP, BMP, TIFF (CMYK)."""
    base = Image.open(sorted((coco128 / "train2017").glob("*.jpg"))[0]).convert("RGB")
    base = base.resize((base.width // 4, base.height // 4))
    folder = tmp_path / "formats"
    folder.mkdir()
    base.save(folder / "a.jpg")
    base.convert("RGBA").save(folder / "b.png")
    base.convert("I;16").save(folder / "c16.png")
    frames = [base.convert("P"), base.rotate(90).convert("P")]
    frames[0].save(folder / "d.gif", save_all=True, append_images=frames[1:])
    base.save(folder / "e.webp")
    base.save(folder / "f.bmp")
    base.convert("CMYK").save(folder / "g.tif")

    report = ingest_folder(db, "formats", folder, progress=False)
    assert report.skipped == [] and report.images_added == 7
    with db.connect() as conn:
        got = dict(conn.execute("SELECT file_name, format FROM images").fetchall())
        sizes = {tuple(r) for r in conn.execute("SELECT width, height FROM images")}
    assert got == {
        "a.jpg": "JPEG", "b.png": "PNG", "c16.png": "PNG", "d.gif": "GIF",
        "e.webp": "WEBP", "f.bmp": "BMP", "g.tif": "TIFF",
    }
    assert sizes == {base.size}
