"""visearch as a library, end to end: ingest a folder, embed it, search it.

    python examples/search_from_python.py PHOTOS [--labels-from-folders]

The database is the one the CLI uses (VISEARCH_DATABASE_URL, or the bundled server). Every call
here is what a `visearch` command does: ingest_folder = `visearch ingest`, embed_pending =
`visearch embed`, search = `visearch search`. Run by tests/test_examples.py.
"""

import sys
from pathlib import Path

from visearch.config import get_settings
from visearch.db.database import open_database
from visearch.embed import embed_pending
from visearch.embedding import load_model
from visearch.ingest import ingest_folder
from visearch.search import SearchRequest, search

folder = Path(sys.argv[1])
settings = get_settings()
db = open_database(settings)  # starts/joins the server and migrates the schema

report = ingest_folder(db, "example", folder, progress=False,
                       labels_from_folders="--labels-from-folders" in sys.argv)
print(report.summary())

model = load_model(settings.model)  # efficientnet-lite0 unless VISEARCH_MODEL says otherwise
print(embed_pending(db, model, progress=False).summary())

with db.pooled() as conn:  # any image of the dataset as the query
    first = conn.execute("SELECT min(i.id) FROM images i JOIN datasets d ON d.id = i.dataset_id"
                         " WHERE d.name = 'example'").fetchone()[0]
result = search(db, SearchRequest(image_ids=[first], datasets=["example"], limit=3), settings)
print(f"images like image {first} ({result.model}, {'exact' if result.exact else 'HNSW'}):")
for hit in result.hits:
    print(f"  {hit.score:.4f}  {hit.image_id:>5}  {hit.file_name}")

if "--labels-from-folders" in sys.argv:  # the folder names became #concepts
    label = next(p.name for p in sorted(folder.iterdir()) if p.is_dir())
    typical = search(db, SearchRequest(query=f"#{label}", datasets=["example"], limit=3), settings)
    print(f"most typical #{label}: " + ", ".join(h.file_name for h in typical.hits))
