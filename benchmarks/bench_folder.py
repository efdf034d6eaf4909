"""Benchmark of a folder run: one ``unet-cells predict --table`` over N images vs the same
N images predicted one by one, each in its own process (start-up paid N times).

Prints one JSON line per measurement:
  batch       one process for all images (model loaded once), with --table
  separate    N processes, one image each, with --table (the reference)
  amortised   the time saved per image by the batch
Each line records the load average, since other processes change the timings.

    python benchmarks/bench_folder.py [--images 20] [--size 1024]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tifffile
from _record import emit  # benchmarks/_record.py

from napari_unet_cells.core.synthetic import synthetic_cells


def unet_cells(*args: str) -> float:
    start = time.perf_counter()
    command = [sys.executable, "-m", "napari_unet_cells.cli", *args]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = []
        for seed in range(args.images):
            image, _ = synthetic_cells((args.size, args.size), seed=seed)
            images.append(folder / f"image{seed:02d}.tif")
            tifffile.imwrite(images[-1], image)
        batch_out, one_out = folder / "batch", folder / "one"
        batch_out.mkdir()
        one_out.mkdir()
        common = dict(images=args.images, shape=[args.size, args.size])
        batch = unet_cells("predict", *map(str, images), "-o", str(batch_out), "--table")
        emit(
            bench="batch",
            seconds=round(batch, 2),
            per_image=round(batch / args.images, 2),
            **common,
        )
        separate = 0.0
        for image in images:
            out = one_out / f"{image.stem}_cells.tif"
            separate += unet_cells("predict", str(image), "-o", str(out), "--table")
        emit(
            bench="separate",
            seconds=round(separate, 2),
            per_image=round(separate / args.images, 2),
            **common,
        )
        emit(
            bench="amortised",
            saved_per_image=round((separate - batch) / args.images, 2),
            speedup=round(separate / batch, 2),
            **common,
        )


if __name__ == "__main__":
    main()
