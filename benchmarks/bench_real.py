"""Quality of a model on a real image with ground truth that you supply (issue 12's check).

The repo holds no real microscopy: give one 2D image and its instance labels (TIFF or
.npy; 0 = background). Prints one JSON line per measurement:

  zero_shot   ``predict`` with default settings (``diameter="auto"``) on the image and on
              the image resampled as a whole by each ``--scales`` factor (bilinear,
              anti-aliased when shrinking; labels by nearest neighbour): AP50, AP75, the
              touching pairs whose two cells both come out matched, object counts, the
              diameter factor the estimate chose, seconds.
  reference   the same scores for a classical pipeline in the same run (Otsu threshold,
              watershed on the distance transform), the baseline the issue quotes.
  finetune    with ``--finetune-minutes`` / ``--finetune-steps``: fine-tuned from the
              model on the image's left half (``TrainConfig`` defaults, as ``unet-cells
              finetune``), scored on the right half, which training never sees; one line
              per budget and run (``--runs`` seeds), next to the model's zero-shot AP50
              on that right half.

    python benchmarks/bench_real.py --image IMG.tif --labels MASK.tif [--model M.npz]
        [--scales 1 0.5 2 3] [--finetune-minutes 3 8] [--runs 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _record import emit  # benchmarks/_record.py
from scipy import ndimage as ndi

from napari_unet_cells.core.metrics import match, pairs_separated
from napari_unet_cells.core.predict import predict_iter
from napari_unet_cells.core.registry import resolve_model
from napari_unet_cells.core.scale import labels_to_shape, resize_plane


def read_plane(path: Path) -> np.ndarray:
    """A 2D array from a TIFF or .npy file."""
    if path.suffix == ".npy":
        array = np.load(path)
    else:
        import tifffile

        array = tifffile.imread(path)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise SystemExit(f"{path}: expected one 2D plane, got shape {array.shape}")
    return array


def scores(true: np.ndarray, pred: np.ndarray) -> dict:
    """AP50, AP75 (TP / (TP + FP + FN)), touching pairs separated, object counts."""
    m50, m75 = match(true, pred, (0.5, 0.75))
    separated, pairs = pairs_separated(true, pred)
    return dict(
        ap50=round(m50.tp / max(1, m50.tp + m50.fp + m50.fn), 4),
        ap75=round(m75.tp / max(1, m75.tp + m75.fp + m75.fn), 4),
        pairs_separated=separated,
        touching_pairs=pairs,
        n_true=m50.tp + m50.fn,
        n_pred=m50.tp + m50.fp,
    )


def classical(image: np.ndarray) -> np.ndarray:
    """Otsu threshold, then a watershed on the distance transform from its smoothed
    maxima (at least a third of the typical radius apart): the usual pre-deep-learning
    baseline."""
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    smooth = gaussian(image.astype(np.float32), 1.0)
    mask = ndi.binary_fill_holes(smooth > threshold_otsu(smooth))
    distance = ndi.distance_transform_edt(mask)
    radius = max(2.0, float(np.percentile(distance[distance > 0], 90)) if mask.any() else 2.0)
    peaks = peak_local_max(
        ndi.gaussian_filter(distance, 1.0), min_distance=max(2, int(radius / 3)), labels=mask
    )
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask).astype(np.int32)


def rescaled(image: np.ndarray, labels: np.ndarray, factor: float):
    """The image and labels resampled as a whole by ``factor``."""
    if factor == 1:
        return image, labels
    shape = (round(image.shape[0] * factor), round(image.shape[1] * factor))
    return resize_plane(image.astype(np.float32), shape, order=1), labels_to_shape(labels, shape)


def predicted(image: np.ndarray, model):
    """(labels, diameter factor, seconds) of ``predict`` with its defaults."""
    began = time.perf_counter()
    events = predict_iter(image, model)
    try:
        while True:
            next(events)
    except StopIteration as done:
        result = done.value
    return result.labels, round(float(result.scale.factor), 3), time.perf_counter() - began


def bench_zero_shot(image, labels, model, scales) -> None:
    for factor in scales:
        img, true = rescaled(image, labels, factor)
        pred, diameter_factor, seconds = predicted(img, model)
        emit(
            bench="zero_shot",
            scale=factor,
            shape=list(img.shape),
            diameter_factor=diameter_factor,
            seconds=round(seconds, 2),
            **scores(true, pred),
        )
        baseline = scores(true, classical(img))
        emit(bench="reference", method="otsu_watershed", scale=factor, **baseline)


def bench_finetune(image, labels, model, budgets, runs) -> None:
    from napari_unet_cells.core.config import TrainConfig
    from napari_unet_cells.core.data import as_samples
    from napari_unet_cells.core.train import train_iter

    half = image.shape[1] // 2
    left = as_samples(image[:, :half], labels[:, :half])
    test_image, test_labels = image[:, half:], labels[:, half:]
    before = scores(test_labels, predicted(test_image, model)[0])["ap50"]
    for kind, budget in budgets:
        for seed in range(runs):
            # a time budget alone, as `unet-cells finetune --minutes` (no step cap)
            steps = budget if kind == "steps" else None
            config = TrainConfig(seed=seed, steps=steps, minutes=budget if steps is None else None)
            result, began = None, time.perf_counter()
            for event in train_iter(left, model, config):
                if event.kind == "done":
                    result = event.result
            after = scores(test_labels, predicted(test_image, result.model)[0])
            emit(
                bench="finetune",
                budget=f"{budget} {kind}",
                seed=seed,
                steps=result.steps,
                stopped_by=result.stopped_by,
                wall_s=round(time.perf_counter() - began, 1),
                right_half_ap50_before=before,
                **{f"right_half_{key}": value for key, value in after.items()},
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--labels", type=Path, required=True)
    p.add_argument("--model", default=None, help="model file (default: bundled)")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 0.5, 2.0, 3.0])
    p.add_argument("--finetune-minutes", type=float, nargs="*", default=[])
    p.add_argument("--finetune-steps", type=int, nargs="*", default=[])
    p.add_argument("--runs", type=int, default=2, help="fine-tuning runs (seeds 0..) per budget")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = p.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    image, labels = read_plane(args.image), read_plane(args.labels).astype(np.int32)
    if image.shape != labels.shape:
        raise SystemExit(f"image {image.shape} and labels {labels.shape} differ in shape")
    model = resolve_model(args.model)
    bench_zero_shot(image, labels, model, args.scales)
    budgets = [("minutes", m) for m in args.finetune_minutes]
    budgets += [("steps", s) for s in args.finetune_steps]
    if budgets:
        bench_finetune(image, labels, model, budgets, args.runs)


if __name__ == "__main__":
    main()
