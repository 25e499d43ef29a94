"""Thumbnail decode memory: 8 concurrent 256-pixel thumbnails of an 8000x8000 image.

Each case runs in a fresh Python process (so peak RSS is its own): 8 threads each make a
thumbnail of the same image, either the way the API did before issue 11 (full decode, then
``Image.thumbnail``) or with :func:`visearch.catalog.decode_bounded` (JPEG draft scaling; large
decodes a few at a time). Reported: peak resident memory (``ru_maxrss``), resident memory after,
and wall time. "now" is the server's setting: ``decode_bounded`` and
:func:`visearch.catalog.return_freed_memory_to_the_os`.

    python bench/bench_thumbnails.py [--side 8000] [--threads 8]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

CHILD = r"""
import io, json, resource, sys, threading, time
import psutil
from PIL import Image
from visearch import catalog
from visearch.embedding.decode import decode_image
data = open(sys.argv[1], "rb").read()
mode, threads = sys.argv[2], int(sys.argv[3])
if mode != "full decode (before)":
    catalog.return_freed_memory_to_the_os()  # as visearch serve does
def thumb():
    if mode == "full decode (before)":
        image = decode_image(data, max_pixels=10**9)
    else:
        image = catalog.decode_bounded(data, max_pixels=10**9, fit=256)
    catalog._jpeg(image, 256)
base = psutil.Process().memory_info().rss
t0 = time.perf_counter()
ts = [threading.Thread(target=thumb) for _ in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
print(json.dumps({"seconds": time.perf_counter() - t0, "base": base,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "after": psutil.Process().memory_info().rss}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    from PIL import Image, ImageDraw

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        image = Image.new("RGB", (args.side, args.side), (240, 240, 230))
        draw = ImageDraw.Draw(image)
        for i in range(0, args.side, 200):
            draw.line([(0, i), (args.side, args.side - i)], fill=(20, 60, 200), width=9)
        for fmt in ("PNG", "JPEG"):
            path = Path(tmp) / f"big.{fmt.lower()}"
            image.save(path, format=fmt)
            for mode in ("full decode (before)", "decode_bounded (now)"):
                out = subprocess.run([sys.executable, "-c", CHILD, str(path), mode, str(args.threads)],
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                mb = 1024 * 1024
                rows.append([f"{fmt} {path.stat().st_size // 1024} kB", mode, (r["peak"] - r["base"]) / mb,
                             (r["after"] - r["base"]) / mb, r["seconds"]])
    print(f"\n{args.threads} concurrent 256-px thumbnails of a {args.side}x{args.side} image, one process per row")
    print(tabulate(rows, headers=["file", "decode", "peak MB over baseline", "resident MB after", "seconds"],
                   floatfmt=".1f"))


if __name__ == "__main__":
    main()
