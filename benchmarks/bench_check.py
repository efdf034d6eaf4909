"""Benchmark of the annotation check (Annotate > Check): one pass vs the per-pair way.

Prints one JSON line per measurement:
  check       core.annotation.check_annotation on 2048^2 (~5,000 synthetic nuclei,
              ~5,300 touching pairs) and 1024^2; target on a 2-core CPU: 2048^2 < 2 s
  reference   the former algorithm's touching-pair notes (a full-image binary dilation per
              touching pair, O(pairs x pixels)) on --reference-size, with the speed-up of
              the check on the same labels and whether both found the same pairs at the
              same positions
Each line records the load average, since other processes change the timings.

    python benchmarks/bench_check.py [--repeat 3] [--reference-size 512]
"""

from __future__ import annotations

import argparse

import numpy as np
from _record import best_time, emit  # benchmarks/_record.py
from scipy import ndimage as ndi

from napari_unet_cells.core.annotation import check_annotation
from napari_unet_cells.core.labels import touching_pairs
from napari_unet_cells.core.synthetic import synthetic_cells


def reference_notes(labels: np.ndarray) -> dict[tuple[int, int], tuple[float, float]]:
    """The former check's touching-pair notes: per pair, a full-image dilation of one cell
    intersected with the other; returns {(a, b): centre (y, x) of b's contact pixels}."""
    eight = np.ones((3, 3), bool)
    notes = {}
    for a, b in sorted(touching_pairs(labels)):
        both = ndi.binary_dilation(labels == a, structure=eight) & (labels == b)
        ys, xs = np.nonzero(both)
        notes[(a, b)] = (float(ys.mean()), float(xs.mean()))
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference-size", type=int, default=512)
    args = parser.parse_args()

    for size in (1024, 2048):
        _, labels = synthetic_cells((size, size), seed=0)
        seconds, report = best_time(lambda labels=labels: check_annotation(labels), args.repeat)
        emit(
            bench="check",
            shape=[size, size],
            cells=report.n_cells,
            touching_pairs=report.n_touching_pairs,
            problems=len(report.problems),
            notes=len(report.notes),
            seconds=round(seconds, 3),
            target_s=2.0 if size == 2048 else None,
        )

    size = args.reference_size
    _, labels = synthetic_cells((size, size), seed=0)
    ref_s, ref = best_time(lambda: reference_notes(labels), 1)
    new_s, report = best_time(lambda: check_annotation(labels), args.repeat)
    new = {p.ids: p.position for p in report.notes}
    same_pairs = set(new) == set(ref)
    max_shift = max((float(np.hypot(*np.subtract(new[k], ref[k]))) for k in ref), default=0.0)
    emit(
        bench="reference",
        shape=[size, size],
        touching_pairs=len(ref),
        reference_seconds=round(ref_s, 3),
        check_seconds=round(new_s, 3),
        speedup=round(ref_s / new_s, 1),
        same_pairs=same_pairs,
        max_position_difference_px=round(max_shift, 6),
    )


if __name__ == "__main__":
    main()
