"""Per-image cost of the up-front image checks (``datasets.readers.check_image_files``).

    python bench/image_check.py [--images 200] [--json out.json]

Writes photo-like JPEGs (smooth colour fields, edges and grain; quality 90) at three sizes: EuroSAT's 64x64, a
typical ImageNet / Caltech photo (500x375) and a large one (1024x768). Times, per image (median of 3 passes over
the files, page-cached, one thread):

- ``image_problem``: header and end marker (what every train, val and test file gets);
- ``decoder_warning``: the strict libjpeg-turbo decode of every training image (simplejpeg);
- PIL's full decode, for scale: what the data loader pays for each image at every epoch.

Then ``check_image_files`` on all files of a size with every file decoded, on the worker threads it uses.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageFilter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from datasets.readers import check_image_files  # noqa: E402
from trainers.dpc.image_files import decoder_warning, image_problem, open_image  # noqa: E402

SIZES = {"eurosat 64x64": (64, 64), "photo 500x375": (500, 375), "large 1024x768": (1024, 768)}


def photo(size, rng) -> Image.Image:
    w, h = size
    coarse = rng.random((max(h // 32, 2), max(w // 32, 2), 3)) * 255
    img = Image.fromarray(coarse.astype(np.uint8)).resize(size, Image.BICUBIC)
    pixels = np.asarray(img, dtype=float)
    stripes = (np.sin(np.arange(w) / rng.uniform(3, 9))[None, :, None] * 25) * (np.arange(h)[:, None, None] > h // 2)
    grain = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(pixels + stripes + grain, 0, 255).astype(np.uint8)).filter(ImageFilter.SMOOTH)


def per_image_ms(function, paths, passes=3) -> float:
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        for path in paths:
            function(path)
        times.append((time.perf_counter() - start) / len(paths) * 1e3)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="files per size")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, size in SIZES.items():
            paths = []
            for i in range(args.images):
                path = os.path.join(folder, f"{size[0]}_{i}.jpg")
                photo(size, rng).save(path, quality=90)
                paths.append(path)
            check_image_files(paths, decoded=paths)  # warm the page cache and the decoders
            start = time.perf_counter()
            check_image_files(paths, decoded=paths)
            threaded = (time.perf_counter() - start) / len(paths) * 1e3
            rows.append({"images": name, "kB": round(statistics.mean(os.path.getsize(p) for p in paths) / 1e3, 1),
                         "image_problem_ms": round(per_image_ms(image_problem, paths), 3),
                         "decoder_warning_ms": round(per_image_ms(decoder_warning, paths), 3),
                         "pil_decode_ms": round(per_image_ms(open_image, paths), 3),
                         "check_image_files_decoded_ms": round(threaded, 3)})
    print(f"{'images':<16} {'kB':>6} {'header+end':>11} {'strict decode':>14} {'PIL decode':>11} "
          f"{'check, threads':>15}   (ms per image)")
    for r in rows:
        print(f"{r['images']:<16} {r['kB']:>6} {r['image_problem_ms']:>11} {r['decoder_warning_ms']:>14} "
              f"{r['pil_decode_ms']:>11} {r['check_image_files_decoded_ms']:>15}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus": os.cpu_count(), "load_average": os.getloadavg(), "results": rows}, f, indent=2)


if __name__ == "__main__":
    main()
