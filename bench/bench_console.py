"""The web console's cost over the bare API, and the thumbnail endpoint cold vs warm.

What it does, end to end (it stops by itself):

1. Prepares CIFAR-10 test in the embedded database of ``--data-dir`` (``--per-class`` images of
   each class, default 1000 = all 10,000; embedded with efficientnet-lite0; re-runs reuse it),
   with ``bench_http.prepare``, and starts ``visearch serve`` on a free port of 127.0.0.1.
2. **Time to first results** for ``--runs`` image-id queries (random stored ids, the same ids
   for every row), measured side by side in one run:
     * page: Debian's chromium (Playwright, headless, a fresh browser context per query, so no
       cache) opens ``/#image_ids=ID``; time from navigation start to the first result thumbnail
       painted (the console records ``performance.now()`` in the frame after its first
       thumbnail's ``load``). Includes loading the page, its script, the dataset list, the
       search and the thumbnail;
     * API: ``POST /v1/search`` with the very body the page sends (first page of 60, ranking of
       1000 kept, 20-bin histogram), then ``GET`` of the first item's thumbnail: the same
       "first result visible" work without the page;
     * API search alone (no thumbnail).
   Printed: p50 / p95 ms and the page / API ratio.
3. **Thumbnails**: 100 stored images' ``/v1/images/{id}/thumbnail?size=256``, one client: a
   cold pass (first request of each), then a warm pass of the same URLs sending
   ``If-None-Match`` with the ``ETag`` when the server gave one (a 304 then carries no body).
   Printed: requests/s, 304 answers, bytes.

Usage:  python bench/bench_console.py [--per-class 1000] [--runs 20] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import free_port, prepare, start_server  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
PAGE_BODY = {"mode": "images", "depth": 1000, "limit": 60, "histogram_bins": 20}


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * len(values))) - 1))]


def time_page(base: str, ids: list[int]) -> list[float]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for image_id in ids:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(f"{base}/#image_ids={image_id}&mode=images")
            page.wait_for_function("() => window.__visearchFirstThumb", timeout=120_000)
            out.append(page.evaluate("window.__visearchFirstThumb"))
            context.close()
        browser.close()
    return out


def time_api(base: str, ids: list[int], *, thumbnail: bool) -> list[float]:
    out = []
    with httpx.Client(base_url=base, timeout=120) as http:
        for image_id in ids:
            t0 = time.perf_counter()
            r = http.post("/v1/search", json={**PAGE_BODY, "image_ids": [image_id]})
            r.raise_for_status()
            if thumbnail:
                http.get(r.json()["items"][0]["thumbnail_url"]).raise_for_status()
            out.append((time.perf_counter() - t0) * 1000)
    return out


def time_thumbnails(base: str, ids: list[int]) -> list[tuple[str, float, int, int]]:
    rows = []
    etags: dict[int, str] = {}
    with httpx.Client(base_url=base, timeout=120) as http:
        for name in ("cold (first request)", "warm (same URLs, If-None-Match)"):
            not_modified = size = 0
            t0 = time.perf_counter()
            for image_id in ids:
                headers = {"If-None-Match": etags[image_id]} if image_id in etags else {}
                r = http.get(f"/v1/images/{image_id}/thumbnail?size=256", headers=headers)
                if r.status_code == 304:
                    not_modified += 1
                else:
                    r.raise_for_status()
                    if r.headers.get("etag"):
                        etags[image_id] = r.headers["etag"]
                size += len(r.content)
            rows.append((name, len(ids) / (time.perf_counter() - t0), not_modified, size))
    return rows


def main() -> None:
    from tabulate import tabulate

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=1000, help="CIFAR-10 images per class (1000 = all)")
    ap.add_argument("--runs", type=int, default=20, help="queries timed per row")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "visearch-bench-console")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} not found: apt-get install -y chromium")

    ids = prepare(args.data_dir, args.per_class)
    port = free_port()
    server = start_server(args.data_dir, port, args.data_dir / "serve.log", torch_threads=1)
    base = f"http://127.0.0.1:{port}"
    try:
        rng = random.Random(7)
        queries = rng.sample(ids, args.runs)
        time_page(base, queries[:2])  # warm-up: server caches, chromium start
        time_api(base, queries[:2], thumbnail=True)
        page = time_page(base, queries)
        api_thumb = time_api(base, queries, thumbnail=True)
        api_only = time_api(base, queries, thumbnail=False)
        p50 = statistics.median(api_thumb)
        rows = [
            ("page: navigation start -> first thumbnail painted", statistics.median(page), _pct(page, 0.95),
             statistics.median(page) / p50),
            ("API: POST /v1/search (same body) + first thumbnail", p50, _pct(api_thumb, 0.95), 1.0),
            ("API: POST /v1/search alone", statistics.median(api_only), _pct(api_only, 0.95),
             statistics.median(api_only) / p50),
        ]
        print(f"\nTime to first results, image-id query over {len(ids):,} CIFAR-10 images, {args.runs} queries")
        print(tabulate(rows, headers=["", "p50 ms", "p95 ms", "ratio to API"], floatfmt=".1f"))
        thumbs = time_thumbnails(base, rng.sample(ids, 100))
        print("\nThumbnail endpoint, 100 images, size=256, one client")
        print(tabulate(thumbs, headers=["pass", "requests/s", "304 answers", "bytes"], floatfmt=".1f"))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
