"""Benchmark of the per-cell measurements (core.measure.measure).

Prints one JSON line per measurement:
  measure     measure(labels, image) on 2048^2 with ~1,200 and ~5,000 synthetic nuclei;
              target on a 2-core CPU: ~1,200 cells well under 1 s
  reference   skimage.measure.regionprops_table computing every property cell by cell on
              the same labels (the plain way), with the speed-up of measure and the largest
              difference between the two tables' shared columns (solidity differs by
              definition: see core/measure.py, so it is not compared)
Each line records the load average, since other processes change the timings.

    python benchmarks/bench_measure.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from _record import best_time, emit  # benchmarks/_record.py
from skimage.measure import regionprops_table

from napari_unet_cells.core.measure import measure
from napari_unet_cells.core.synthetic import SyntheticConfig, synthetic_cells

SHARED = {  # regionprops name -> our column
    "area": "area_px",
    "centroid-0": "centroid_y",
    "centroid-1": "centroid_x",
    "perimeter": "perimeter_px",
    "axis_major_length": "major_axis_px",
    "axis_minor_length": "minor_axis_px",
    "eccentricity": "eccentricity",
    "intensity_mean": "mean_intensity",
    "intensity_max": "max_intensity",
}


PROPERTIES = sorted({"label", *(k.split("-")[0] for k in SHARED)})


def tiled(diameter: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2048^2 from 4 x 4 different 512^2 synthetic images, each tile its own cell ids."""
    config = dataclasses.replace(SyntheticConfig(), diameter=diameter)
    images, labels, top = [], [], 0
    for k in range(16):
        image, lab = synthetic_cells((512, 512), config=config, seed=seed + k)
        labels.append(np.where(lab > 0, lab + top, 0))
        images.append(image)
        top += int(lab.max())
    rows = [slice(4 * i, 4 * i + 4) for i in range(4)]
    return np.block([images[r] for r in rows]), np.block([labels[r] for r in rows]).astype(
        np.int32
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for diameter in ((30.0, 40.0), (14.0, 20.0)):
        image, labels = tiled(diameter)
        cells = len(np.unique(labels)) - 1
        seconds, table = best_time(lambda lab=labels, im=image: measure(lab, im), args.repeat)
        emit(bench="measure", shape=list(labels.shape), cells=cells, seconds=round(seconds, 3))
        ref_seconds, ref = best_time(
            lambda lab=labels, im=image: regionprops_table(lab, im, properties=PROPERTIES), 1
        )
        worst = max(
            float(np.max(np.abs(np.asarray(ref[k], float) - table[v]))) for k, v in SHARED.items()
        )
        emit(
            bench="reference",
            what="regionprops_table, every property",
            shape=list(labels.shape),
            cells=cells,
            seconds=round(ref_seconds, 3),
            speedup=round(ref_seconds / seconds, 2),
            max_abs_difference=worst,
        )


if __name__ == "__main__":
    main()
