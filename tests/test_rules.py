"""One place for each rule: the concept tag (SQL ``concept_tag()``), box validity (the
``annotations`` constraints), the pixel limit (``Settings.max_image_pixels``, honoured by
ingest and by every embed run alike)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import visearch
from visearch.config import DEFAULT_MAX_PIXELS, Settings
from visearch.errors import NotFoundError
from visearch.search.filters import resolve_concept_ids

from test_freshness import add_dataset, add_image, coco_files


@pytest.mark.parametrize("name, term", [
    ("Traffic light", "#traffic_light"),
    ("Traffic light", "TRAFFIC_LIGHT"),
    ("\tcat", "\tcat"),  # btrim() keeps the tab: tag "_cat" (Python's strip() made it "cat")
    ("Straße\u00a0sign", "straße\u00a0sign"),  # a no-break space is not [[:space:]] in this locale
])
def test_a_concept_is_found_by_what_the_database_says_its_tag_is(db, name, term):
    with db.connect() as conn:
        cid = conn.execute("INSERT INTO concepts (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]
        assert resolve_concept_ids(conn, [term]) == [cid]


def test_an_unknown_tag_is_named_with_the_databases_spelling(db):
    with db.connect() as conn:
        conn.execute("INSERT INTO concepts (name) VALUES ('\tcat')")
        with pytest.raises(NotFoundError, match=r"#cat \(did you mean #_cat\?\)"):
            resolve_concept_ids(conn, ["cat"])


def test_rules_are_written_once():
    """No Python copy of the tag rule or of the box constraints, one pixel-limit constant."""
    sources = {p: p.read_text(encoding="utf-8") for p in Path(visearch.__file__).parent.rglob("*.py")}
    copies = [p.name for p, text in sources.items() if re.search(r"\[\\s#\]|def concept_tag", text)]
    assert not copies, f"the concept-tag rule is SQL's concept_tag(); Python copies in {copies}"
    limits = [p.name for p, text in sources.items() if "89_478_485" in text or "89478485" in text]
    assert limits == ["config.py"], limits
    assert Settings().max_image_pixels == DEFAULT_MAX_PIXELS
    tolerance = [p.name for p, text in sources.items() if "bbox" in text
                 and any(isinstance(n, ast.Constant) and n.value == 0.01 for n in ast.walk(ast.parse(text)))]
    assert not tolerance, f"the box-inside-image tolerance lives in 0001_core.sql; also in {tolerance}"


def test_the_embed_command_honours_the_pixel_limit_ingest_uses(db, tmp_path):
    """VISEARCH_MAX_IMAGE_PIXELS bounds what `visearch embed` decodes, as it bounds ingest: an
    image over the limit fails with `too_large` instead of being embedded regardless (and with a
    limit raised above the default, what ingest took is no longer refused by embedding)."""
    with db.connect() as conn:
        ds = add_dataset(conn, "limits")
        big = add_image(conn, ds, coco_files(1, start=90)[0])  # 640 x 480 and so
        conn.commit()
    with db.connect() as conn:
        w, h = conn.execute("SELECT width, height FROM images WHERE id = %s", (big,)).fetchone()
    env = os.environ | {"VISEARCH_DATABASE_URL": db.url, "VISEARCH_DATA_DIR": str(tmp_path),
                        "VISEARCH_MAX_IMAGE_PIXELS": str(w * h - 1)}
    done = subprocess.run([sys.executable, "-m", "visearch", "embed", "--workers", "0"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"image {big}: undecodable image (too_large)" in done.stdout, done.stdout
    with db.connect() as conn:
        assert conn.execute("SELECT count(*) FROM image_embeddings").fetchone()[0] == 0
