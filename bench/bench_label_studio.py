"""Label Studio -> visearch latency: an annotation saved through Label Studio's REST API until
its box is searchable in visearch (has a vector), idle and while a 1,000-image backfill drains.

Everything runs for real on this machine: the embedded PostgreSQL, Label Studio (its own
virtualenv, on that database, tables in schema ``label_studio``), and two visearch processes as
deployed: ``visearch connect label-studio --project P`` (the follower) and ``visearch worker
--interval 3600`` (so only NOTIFY wakes it). Each sample saves one annotation with one COCO box
on a coco128 task through label-studio-sdk (``annotations.create``) and polls the database
every 2 ms for the box row (synced) and its vector (searchable). Idle: one annotation at a
time. Backfill: 1,000 CIFAR-10 test images are ingested (queued for embedding); once the
worker has claimed its first batch, ``--samples`` annotations are saved ``--spacing`` s apart
while it drains, and each is timed until searchable.

    python bench/bench_label_studio.py [--samples 10] [--backfill 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate

from visearch.config import Settings
from visearch.db.database import open_database
from visearch.ingest import ingest_folder
from visearch.integrations.label_studio.server import LabelStudioServer
from visearch.search import SearchRequest, search

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
COCO = SHARED / "coco128"
CIFAR = SHARED / "cifar10-test"
VISEARCH = str(Path(sys.executable).with_name("visearch"))
TASKS = 20
HEADERS = ["scenario", "samples", "queue at save", "API s", "box row s (median)", "searchable s (median)",
           "searchable p90", "max"]


def spawn(args: list[str], url: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISEARCH_")}
    env.update(VISEARCH_DATABASE_URL=url, PYTHONUNBUFFERED="1")
    return subprocess.Popen([VISEARCH, *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)


def wait(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    sys.exit(f"timed out after {timeout} s waiting for {what}")


def save(sdk, task_id: int, image: dict, box: dict, name: str, n: int) -> tuple[float, str, float]:
    """Save one annotation with one box through the API; returns (start time, box external id, API seconds)."""
    x, y, w, h = box["bbox"]
    W, H = image["width"], image["height"]
    result = [{"id": f"s{n}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
               "original_width": W, "original_height": H, "image_rotation": 0,
               "value": {"x": 100 * x / W, "y": 100 * y / H, "width": 100 * w / W, "height": 100 * h / H,
                         "rotation": 0, "rectanglelabels": [name]}}]
    t0 = time.perf_counter()
    annotation = sdk.annotations.create(id=task_id, result=result)
    return t0, f"{annotation.id}/s{n}", time.perf_counter() - t0


def wait_searchable(db, pending: list[tuple[float, str, float]], timeout: float) -> list[dict]:
    """Poll every 2 ms until each saved box has a row (synced) and a vector (searchable)."""
    out: dict[str, dict] = {}
    rows: dict[str, float] = {}
    with db.connect(autocommit=True) as conn:
        start = time.perf_counter()
        while len(out) < len(pending) and time.perf_counter() - start < timeout:
            ids = [e for _, e, _ in pending if e not in out]
            found = conn.execute(
                "SELECT a.external_id, a.id, e.annotation_id IS NOT NULL FROM annotations a"
                " LEFT JOIN object_embeddings e ON e.annotation_id = a.id"
                " WHERE a.source = 'label-studio' AND a.external_id = ANY(%s)", (ids,)).fetchall()
            now = time.perf_counter()
            for external_id, box_id, has_vector in found:
                rows.setdefault(external_id, now)
                if has_vector:
                    t0, _, api = next(p for p in pending if p[1] == external_id)
                    out[external_id] = {"api": api, "row": rows[external_id] - t0, "vector": now - t0, "id": box_id}
            time.sleep(0.002)
        if len(out) < len(pending):
            queue = conn.execute("SELECT item_kind, count(*), count(claimed_by) FROM embedding_queue GROUP BY 1").fetchall()
            sys.exit(f"{len(pending) - len(out)} boxes not searchable after {timeout} s (queue {queue})")
    for sample in out.values():  # searchable: a search by the box finds it (score 1; samples that
        # reuse a task's box tie with their twin, so it need not come first)
        hits = search(db, SearchRequest(mode="objects", annotation_id=sample["id"], limit=3)).hits
        assert any(h.annotation_id == sample["id"] and h.score > 0.999 for h in hits)
    return list(out.values())


def summarize(label: str, samples: list[dict], queued: list[int]) -> list:
    def med(k):
        return statistics.median(s[k] for s in samples)

    def p90(k):
        v = sorted(s[k] for s in samples)
        return v[int(0.9 * (len(v) - 1))]

    return [label, len(samples), f"{statistics.median(queued):.0f}" if queued else "0",
            med("api"), med("row"), med("vector"), p90("vector"), max(s["vector"] for s in samples)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=10, help="annotations timed per scenario")
    parser.add_argument("--backfill", type=int, default=1000, help="CIFAR images in the backfill (<= 1000)")
    parser.add_argument("--skip-backfill", action="store_true")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds between saves during the backfill")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds a saved box may take")
    args = parser.parse_args()
    from label_studio_sdk import LabelStudio as SDK

    coco = json.loads((COCO / "annotations" / "instances_train2017.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = sorted(coco["images"], key=lambda i: i["file_name"])[:TASKS]
    boxes = {i["id"]: next(a for a in coco["annotations"] if a["image_id"] == i["id"] and not a["iscrowd"])
             for i in images if any(a["image_id"] == i["id"] and not a["iscrowd"] for a in coco["annotations"])}
    images = [i for i in images if i["id"] in boxes]
    classes = sorted(p.name for p in CIFAR.iterdir())

    with tempfile.TemporaryDirectory(prefix="bench-label-studio-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o755)
        db = open_database(Settings(data_dir=tmp / "data"))
        t0 = time.perf_counter()
        with LabelStudioServer(db.url, local_files_root=SHARED, data_dir=tmp / "ls") as server:
            t_ls = time.perf_counter() - t0
            sdk = SDK(base_url=server.url, api_key=server.token)
            labels = "".join(f'<Label value="{n}"/>' for n in sorted({names[b["category_id"]] for b in boxes.values()}))
            project = sdk.projects.create(title="bench latency", label_config=(
                f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
                f'{labels}</RectangleLabels></View>'))
            task_ids = sdk.projects.import_tasks(id=project.id, return_task_ids=True, request=[
                {"image": f"/data/local-files/?d=coco128/train2017/{i['file_name']}"} for i in images]).task_ids
            procs = [spawn(["worker", "--interval", "3600"], db.url, tmp / "worker.log"),
                     spawn(["connect", "label-studio", "--project", str(project.id), "--local-files-root", str(SHARED)],
                           db.url, tmp / "connect.log")]
            try:
                with db.connect(autocommit=True) as conn:
                    def ready():
                        for p in procs:
                            if p.poll() is not None:
                                sys.exit(f"{p.args[1]} exited: {(tmp / (p.args[1] + '.log')).read_text()[-2000:]}")
                        return (conn.execute("SELECT count(*) FROM tool_tasks").fetchone()[0] == len(images)
                                and conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0] == 0
                                and conn.execute("SELECT count(*) FROM embedding_workers").fetchone()[0] == 1)
                    wait(ready, 600, "tasks imported and embedded, worker registered")
                rows, n = [], 0
                idle = []
                for k in range(args.samples):
                    i = images[k % len(images)]
                    saved = save(sdk, task_ids[k % len(images)], i, boxes[i["id"]], names[boxes[i["id"]]["category_id"]], n)
                    n += 1
                    idle += wait_searchable(db, [saved], args.timeout)
                rows.append(summarize("idle worker", idle, []))
                print(tabulate(rows, headers=HEADERS, floatfmt=".3f"), flush=True)  # in case the backfill runs long
                if not args.skip_backfill:
                    folder = tmp / "backfill"
                    folder.mkdir()
                    for f in sorted((CIFAR / classes[0]).iterdir())[: args.backfill]:
                        os.symlink(f, folder / f.name)
                    ingest_folder(db, "backfill", folder, progress=False)
                    pending, queued = [], []
                    with db.connect(autocommit=True) as conn:
                        # the worker has claimed its first batch: the backfill is draining
                        wait(lambda: conn.execute("SELECT count(*) FROM embedding_queue WHERE claimed_by IS NOT NULL").fetchone()[0] > 0,
                             300, "the worker to start on the backfill", poll=0.01)
                        for k in range(args.samples):
                            queued.append(conn.execute("SELECT count(*) FROM embedding_queue").fetchone()[0])
                            i = images[k % len(images)]
                            pending.append(save(sdk, task_ids[k % len(images)], i, boxes[i["id"]],
                                                names[boxes[i["id"]]["category_id"]], n))
                            n += 1
                            time.sleep(args.spacing)
                    busy = wait_searchable(db, pending, args.timeout)
                    rows.append(summarize(f"{args.backfill}-image backfill draining", busy, queued))
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(30)
                    except subprocess.TimeoutExpired:  # a worker finishing a long batch
                        p.kill()
                        p.wait()
    print(f"\nLabel Studio (started in {t_ls:.0f} s) -> visearch: annotation saved through the REST API until its box "
          f"is searchable; efficientnet-lite0, {os.cpu_count()} CPUs")
    print(tabulate(rows, headers=HEADERS, floatfmt=".3f"))


if __name__ == "__main__":
    main()
