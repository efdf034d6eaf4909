"""Evaluate a model file on held-out synthetic images; prints one JSON line per result.

    .venv/bin/python scripts/evaluate_model.py [MODEL] [--images 16] [--size 512] [--tta]

MODEL defaults to the bundled model. The test images come from a seed stream that
``scripts/train_bundled.py`` never uses for training or validation (stream 3), in the
held-out stress suite (``--sets``, all by default):

- "default": the default ``SyntheticConfig`` (the look of the sample data, nuclei
  10-28 px);
- "diverse": ``random_config`` looks over the wide 8-60 px range;
- "scale_0.5x", "scale_2x", "scale_3x": the default look with nuclei 0.5, 2 and 3 times
  the default size (5-14, 20-56, 30-84 px);
- "low_contrast": soft-edged, dim nuclei in 8-bit values stored as 16-bit, with a few
  saturated outliers that leave ordinary nuclei dim after percentile normalisation,
  nucleoli, and a bright background;
- "dense": crowded clusters of touching nuclei with faint or no seams;
- "rescaled_0.5x", "rescaled_2x", "rescaled_3x": a default image resampled as a whole
  (its blur, noise and nuclei together), as a real image taken at another magnification
  or resized; the "scale_*" sets instead draw smaller or larger nuclei with the default
  blur and noise, which at 0.5x blurs 5-px nuclei far more than a microscope would;
- "glow": the default look with a few saturated outliers and a wide out-of-focus halo
  (``SyntheticConfig.glow``) that is as bright as an ordinary nucleus around them.

Prediction uses the model's defaults (``diameter="auto"``). Metrics per set, pooled over its
images: AP at IoU 0.5 and 0.75 (TP / (TP + FP + FN)), foreground IoU, the fraction of
ground-truth touching pairs whose two cells both come out as separate matched objects
(IoU >= 0.5), the fraction of touching pairs merged into one predicted object, merges
and splits. Finally the CPU time of ``predict`` on a 1024^2 image.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np

from napari_unet_cells.core.labels import touching_pairs
from napari_unet_cells.core.metrics import match, pairs_separated, split_merge_counts
from napari_unet_cells.core.predict import predict
from napari_unet_cells.core.registry import bundled_model_path, resolve_model
from napari_unet_cells.core.synthetic import SyntheticConfig, random_config, synthetic_cells

TEST_STREAM = 3


def pairs_merged(true: np.ndarray, pred: np.ndarray) -> int:
    """Ground-truth touching pairs whose two cells fall mostly into one predicted object."""
    ids = np.unique(true[true > 0])
    owner = {}
    for cell in ids.tolist():
        values, counts = np.unique(pred[true == cell], return_counts=True)
        owner[cell] = int(values[np.argmax(counts)])
    return sum(owner[a] == owner[b] != 0 for a, b in touching_pairs(true))


DEFAULT = SyntheticConfig()
STRESS_SETS = {
    "default": DEFAULT,
    "diverse": None,  # random_config per image
    "scale_0.5x": dataclasses.replace(DEFAULT, diameter=(5.0, 14.0)),
    "scale_2x": dataclasses.replace(DEFAULT, diameter=(20.0, 56.0)),
    "scale_3x": dataclasses.replace(DEFAULT, diameter=(30.0, 84.0)),
    "low_contrast": dataclasses.replace(
        DEFAULT,
        outlier_fraction=0.05,
        edge_softness=(0.2, 0.5),
        background=(0.1, 0.3),
        photons=(20.0, 80.0),
        saturation=(2.5, 4.0),
        brightness_spread=0.5,
        nucleoli=1.0,
        dtype="uint16_8bit",
    ),
    "dense": dataclasses.replace(
        DEFAULT, coverage=0.6, cluster_fraction=0.95, border_dip=(0.85, 1.0)
    ),
    # a default image rescaled as a whole (blur and noise scale with it), as a real image
    # taken at another magnification or resized: what the real-image check does
    "rescaled_0.5x": 0.5,
    "rescaled_2x": 2.0,
    "rescaled_3x": 3.0,
    # (added 2026-12-04, last so that the other sets keep their seeds) saturated outliers
    # inside a wide out-of-focus halo as bright as an ordinary nucleus, 8-bit values
    "glow": dataclasses.replace(
        DEFAULT,
        outlier_fraction=0.05,
        saturation=(2.5, 4.0),
        glow=(0.15, 0.4),
        brightness_spread=0.4,
        dtype="uint16_8bit",
    ),
}


def test_images(kind: str, n: int, size: int, seed: int = 0):
    """``n`` (image, labels) pairs of the named stress set, from the test seed stream."""
    index = list(STRESS_SETS).index(kind)
    rng = np.random.default_rng([seed, TEST_STREAM, index])
    for _ in range(n):
        if isinstance(STRESS_SETS[kind], float):
            yield _rescaled(STRESS_SETS[kind], size, rng)
            continue
        config = STRESS_SETS[kind] or random_config(rng)
        yield synthetic_cells((size, size), seed=rng, config=config)


def _rescaled(factor: float, size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """A default-look image of ``size / factor`` px resampled to ``size`` px (bilinear,
    anti-aliased when shrinking; labels by nearest neighbour, no cell lost)."""
    from napari_unet_cells.core.scale import labels_to_shape, resize_plane

    source = round(size / factor)
    image, labels = synthetic_cells((source, source), seed=rng, config=DEFAULT)
    resized = resize_plane(image.astype(np.float32), (size, size), order=1)
    return resized, labels_to_shape(labels, (size, size))


def evaluate_set(model, kind: str, n: int, size: int, seed: int = 0, **predict_kwargs) -> dict:
    tp = fp = fn = tp75 = fp75 = fn75 = 0
    inter = union = sep = total_pairs = merges = splits = merged_pairs = 0
    for image, labels in test_images(kind, n, size, seed):
        pred = predict(image, model, device="cpu", **predict_kwargs)
        m50, m75 = match(labels, pred, (0.5, 0.75))
        tp, fp, fn = tp + m50.tp, fp + m50.fp, fn + m50.fn
        tp75, fp75, fn75 = tp75 + m75.tp, fp75 + m75.fp, fn75 + m75.fn
        inter += int(np.count_nonzero((labels > 0) & (pred > 0)))
        union += int(np.count_nonzero((labels > 0) | (pred > 0)))
        s, t = pairs_separated(labels, pred)
        sep, total_pairs = sep + s, total_pairs + t
        merged_pairs += pairs_merged(labels, pred)
        counts = split_merge_counts(labels, pred)
        merges, splits = merges + counts["merges"], splits + counts["splits"]
    return {
        "set": kind,
        "images": n,
        "size": size,
        "ap50": round(tp / max(1, tp + fp + fn), 4),
        "ap75": round(tp75 / max(1, tp75 + fp75 + fn75), 4),
        "fg_iou": round(inter / max(1, union), 4),
        "touching_pairs_separated": round(sep / max(1, total_pairs), 4),
        "touching_pairs": total_pairs,
        "touching_pairs_merged": round(merged_pairs / max(1, total_pairs), 4),
        "n_true": tp + fn,
        "n_pred": tp + fp,
        "merges": merges,
        "splits": splits,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model", nargs="?", default=None, help="model file (default: bundled)")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--threshold", type=float, default=None, help="default: the model's")
    p.add_argument("--seed-threshold", type=float, default=None, help="default: the model's")
    p.add_argument("--min-size", type=int, default=None, help="default: the model's")
    p.add_argument("--min-confidence", type=float, default=None, help="default: the model's")
    p.add_argument("--diameter", default="auto", help="auto (default), a number of px, or none")
    p.add_argument("--sets", nargs="+", default=list(STRESS_SETS), choices=list(STRESS_SETS))
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation (4x slower)")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="0 (default): the suite's images; another seed draws other images of the same "
        "sets, for choosing settings without looking at the suite",
    )
    p.add_argument("--skip-timing", action="store_true")
    args = p.parse_args(argv)
    model = resolve_model(args.model or bundled_model_path())
    kwargs = {
        "threshold": args.threshold,
        "seed_threshold": args.seed_threshold,
        "min_size": args.min_size,
        "min_confidence": args.min_confidence,
        "diameter": args.diameter,
        "tta": args.tta,
    }
    if args.diameter.lower() == "none":
        kwargs["diameter"] = None
    for kind in args.sets:
        result = evaluate_set(model, kind, args.images, args.size, args.seed, **kwargs)
        settings = {"seed": args.seed, "threshold": args.threshold}
        settings["seed_threshold"] = args.seed_threshold
        settings["min_confidence"] = args.min_confidence
        print(json.dumps({**result, "tta": args.tta, **settings}), flush=True)
    if args.skip_timing:
        return 0
    image, _ = synthetic_cells((1024, 1024), seed=12345)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        predict(image, model, device="cpu", tta=args.tta)
        times.append(time.perf_counter() - start)
    timing = {"measurement": "predict_1024x1024_cpu_s", "seconds": round(min(times), 2)}
    print(json.dumps({**timing, "tta": args.tta}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
