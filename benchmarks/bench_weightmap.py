"""Benchmark of the weight map (paper eq. 2): windowed algorithm vs brute force, live updates.

Prints one JSON line per measurement:
  weightmap        full map, 1024^2 (~300 touching cells) and 2048^2 (~1200 cells)
  bruteforce       the reference on 1024^2: a full-image distance transform per cell
  speedup          bruteforce / weightmap at 1024^2, with the max abs difference
  incremental      update after a brush stroke that changes one cell, 2048^2
Targets on a 2-core CPU: 2048^2 <= 0.3 s, incremental <= 20 ms, speed-up >= 100x.
Each line records the load average, since other processes change the timings.

    python benchmarks/bench_weightmap.py [--repeat 5] [--strokes 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _record import best_time, emit  # benchmarks/_record.py
from scipy import ndimage as ndi

from napari_unet_cells.core.config import WeightMapConfig
from napari_unet_cells.core.synthetic import SyntheticConfig, synthetic_cells
from napari_unet_cells.core.weightmap import (
    separation_target,
    update_weight_map,
    weight_map,
    weight_map_state,
)

# ~300 touching cells per 1024^2, ~1200 per 2048^2
CELLS = SyntheticConfig(diameter=(25.0, 50.0), coverage=0.32)


def brute_force(labels: np.ndarray, config: WeightMapConfig) -> np.ndarray:
    """Eq. 2 with one full-image distance transform per cell (the O(cells x pixels) way)."""
    target = separation_target(labels, config)
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for k in np.unique(labels[labels > 0]):
        d = ndi.distance_transform_edt(labels != k)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    background = target == 0
    n_bg, n_cell = np.count_nonzero(background), np.count_nonzero(~background)
    w = np.where(background, 1.0, n_bg / n_cell)
    w += np.where(background, config.w0 * np.exp(-((d1 + d2) ** 2) / (2 * config.sigma**2)), 0)
    return w.astype(np.float32)


def strokes(labels: np.ndarray, n: int, rng: np.random.Generator):
    """(cell, brush mask, region) for n strokes that grow one cell by a 6 px disc."""
    boxes = ndi.find_objects(labels)
    h, w = labels.shape
    yy, xx = np.ogrid[:h, :w]
    cells = rng.choice(np.unique(labels[labels > 0]), size=n, replace=False)
    for cell in cells:
        sl = boxes[cell - 1]
        y = int(sl[0].stop - 1)  # the bottom edge of the cell
        xs = np.flatnonzero(labels[y, sl[1]] == cell) + sl[1].start
        x = int(xs[len(xs) // 2])
        region = (slice(max(0, y - 6), y + 7), slice(max(0, x - 6), x + 7))
        brush = (yy - y) ** 2 + (xx - x) ** 2 <= 36
        yield int(cell), brush, region


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per timing (best is kept)")
    parser.add_argument("--strokes", type=int, default=20, help="brush strokes to time")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    config = WeightMapConfig()

    # 1024^2: windowed vs brute force, same run
    _, labels = synthetic_cells((1024, 1024), seed=args.seed, config=CELLS)
    n_cells = int(len(np.unique(labels)) - 1)
    weights = weight_map(labels, config=config)
    fast = best_time(lambda: weight_map(labels, config=config), args.repeat)[0]
    emit(name="weightmap", size=1024, cells=n_cells, seconds=round(fast, 4))
    start = time.perf_counter()
    reference = brute_force(labels, config)
    slow = time.perf_counter() - start
    emit(name="bruteforce", size=1024, cells=n_cells, seconds=round(slow, 3))
    diff = float(np.abs(weights - reference).max())
    emit(
        name="speedup",
        size=1024,
        speedup=round(slow / fast, 1),
        target=100,
        max_abs_diff=diff,
        ok=bool(slow / fast >= 100 and diff <= 1e-5),
    )

    # 2048^2: full map and live updates
    _, labels = synthetic_cells((2048, 2048), seed=args.seed, config=CELLS)
    n_cells = int(len(np.unique(labels)) - 1)
    full = best_time(lambda: weight_map(labels, config=config), args.repeat)[0]
    ok = bool(full <= 0.3)
    emit(name="weightmap", size=2048, cells=n_cells, seconds=round(full, 4), target_s=0.3, ok=ok)
    state = weight_map_state(labels, config=config)
    edited = labels.copy()
    rng = np.random.default_rng(args.seed)
    times, hinted, checks = [], [], []
    for i, (cell, brush, region) in enumerate(strokes(labels, args.strokes, rng)):
        edited[brush] = cell  # grow the cell over background and into its neighbours
        start = time.perf_counter()
        update_weight_map(state, edited)
        times.append(time.perf_counter() - start)
        if i < 3:
            checks.append(np.abs(state.weights - weight_map(edited, config=config)).max())
        edited[brush] = labels[brush]  # undo, this time telling where the edit was
        start = time.perf_counter()
        update_weight_map(state, edited, region=region)
        hinted.append(time.perf_counter() - start)
    checks.append(np.abs(state.weights - weight_map(edited, config=config)).max())
    check = float(max(checks))
    emit(
        name="incremental",
        size=2048,
        cells=n_cells,
        strokes=len(times),
        median_seconds=round(float(np.median(times)), 5),
        max_seconds=round(float(np.max(times)), 5),
        median_seconds_with_region=round(float(np.median(hinted)), 5),
        target_s=0.02,
        max_abs_diff_vs_full=check,
        ok=bool(np.median(times) <= 0.02 and check <= 1e-6),
    )


if __name__ == "__main__":
    main()
