"""Train the bundled nuclei U-Net from a seed, reproducibly and resumably.

    .venv/bin/python scripts/train_bundled.py                    # the shipped recipe
    .venv/bin/python scripts/train_bundled.py --steps-per-round 40   # a quick, weaker model

Training runs in rounds. Every round draws fresh synthetic images from a wide range of
looks (``core.synthetic.random_config``: nuclei of 8-60 px, sparse to crowded, dim to
saturated, clean to dusty, 8/16-bit), fine-tunes the previous round's model on them with
the project's own ``train_iter`` (the paper's weighted loss, elastic deformation) and
saves the round's best model under ``--work``. Re-running the command resumes after the
last finished round. The final model is copied to ``--out`` (atomically) and evaluated
on held-out images drawn from a seed stream that training never uses
(``scripts/evaluate_model.py`` repeats that evaluation on its own).

Cell size: every training image's typical nucleus diameter is drawn from
[diameter / 1.5, diameter * 1.5] (``--diameter``, 20 px) and tiles are zoomed by up to
1.5x either way (``--scale-aug``); the model records ``extra["diameter"]`` and
``predict`` rescales images so that their nuclei appear at that size
(core/scale.py). ``--classes 3`` trains the boundary-aware variant (background, cell,
boundary); ``--init`` continues from an earlier model (a 2-class head is widened to 3
classes, the boundary row starting as the mean of the other two). ``--post-processing init`` keeps
the ``--init`` model's post-processing instead of tuning it at the end (the tuning images
are diverse looks only; v4's tuned pick, no seeds, separated 40% of the touching pairs on
the sample data's look against 94% with v3's settings).

Each round keeps its best validated step (``--keep best``, the recipe of v1-v8; a round
whose validation images never beat its start changes nothing) or the mean of the
weights of its last half (``--keep average``, v10); ``--average-last N`` makes the final
model the mean of the last N rounds' weights (rounds of one run differ by several
points of AP50 on real images; their mean is steadier).

Uses a GPU when one is available (``--device auto``), else the CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_unet_cells.core.checkpoint import CellModel, default_classes, load_model, save_model
from napari_unet_cells.core.config import (
    AugmentConfig,
    InstanceConfig,
    ModelConfig,
    TrainConfig,
    config_to_dict,
)
from napari_unet_cells.core.data import as_samples
from napari_unet_cells.core.instances import tune_instances
from napari_unet_cells.core.predict import predict
from napari_unet_cells.core.scale import labels_to_shape, resize_plane
from napari_unet_cells.core.synthetic import random_config, synthetic_cells
from napari_unet_cells.core.train import train_iter

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src/napari_unet_cells/core/models/nuclei_unet.npz"

# seed streams: training rounds, per-round validation, and (in evaluate_model.py) testing
TRAIN_STREAM, VAL_STREAM = 1, 2
#: typical nucleus diameters, px, of the images that ``--resampled`` resamples
SOURCE_DIAMETERS = (5.0, 60.0)
SOURCE_RANGE = f"{SOURCE_DIAMETERS[0]:g}-{SOURCE_DIAMETERS[1]:g} px"
#: ranges of the SyntheticConfig fields of ``--crowded`` images
CROWDED = {"coverage": (0.5, 0.7), "cluster_fraction": (0.8, 0.95)}


def make_images(
    seed: int,
    stream: int,
    index: int,
    n: int,
    size: int,
    diameter: float,
    resampled: float = 0.0,
    crowded: float = 0.0,
):
    """``n`` synthetic (image, labels) pairs of size x size px from one seed stream.

    Each image is, with probability ``1 - resampled``, drawn with typical nucleus
    diameters in [diameter / 1.5, diameter * 1.5] px; otherwise it is drawn at a typical
    diameter anywhere in SOURCE_DIAMETERS (5-60 px, the microscope's own blur and noise
    at that size) and resampled as a whole so that its nuclei come out at diameter / 1.3
    to diameter * 1.3 px: what ``predict`` shows the network after its diameter estimate.
    A fraction ``crowded`` of the images is made crowded (CROWDED: most nuclei in
    clusters, covering half the image or more).
    """
    rng = np.random.default_rng([seed, stream, index])
    pairs = []
    for _ in range(n):
        if rng.random() >= resampled:
            config = random_config(rng, diameter=(diameter / 1.5, diameter * 1.5))
            if crowded and rng.random() < crowded:
                config = dataclasses.replace(
                    config, **{k: float(rng.uniform(*v)) for k, v in CROWDED.items()}
                )
            pairs.append(synthetic_cells((size, size), seed=rng, config=config))
            continue
        source = float(np.exp(rng.uniform(*np.log(SOURCE_DIAMETERS))))
        target = float(np.exp(rng.uniform(np.log(diameter / 1.3), np.log(diameter * 1.3))))
        side = max(32, round(size * source / target))
        config = random_config(rng, diameter=(source, source))
        image, labels = synthetic_cells((side, side), seed=rng, config=config)
        pairs.append(
            (
                resize_plane(image.astype(np.float32), (size, size), order=1),
                labels_to_shape(labels, (size, size)),
            )
        )
    return pairs


def initial_model(path: Path, n_classes: int) -> CellModel:
    """The model in ``path`` with its output head widened to ``n_classes`` if needed
    (new rows start as the mean of the existing ones: the same backbone for both)."""
    model = load_model(path)
    if model.config.n_classes == n_classes:
        return model
    config = dataclasses.replace(model.config, n_classes=n_classes)
    wider = CellModel.new(config, classes=default_classes(n_classes))
    state = model.net.state_dict()
    for name in ("head.weight", "head.bias"):
        old = state[name]
        extra = old.mean(dim=0, keepdim=True).repeat(
            n_classes - old.shape[0], *[1] * (old.dim() - 1)
        )
        state[name] = torch.cat([old, extra])
    wider.net.load_state_dict(state)
    wider.normalization, wider.extra = model.normalization, dict(model.extra)
    # seeds in the interiors (score ~1), cells flooded over their outlines (score ~0.5)
    wider.extra["instances"] = {
        **model.extra.get("instances", {}),
        "threshold": 0.4,
        "seed_threshold": 0.8,
        "min_confidence": 0.6,
    }
    return wider


#: the largest minimum size the shipped model may recommend: nuclei of half the model's
#: diameter (10 px, ~80 px area) share images with the typical ones and must be kept
MAX_MIN_SIZE = 30


def tune_post_processing(model, pairs) -> tuple[InstanceConfig, dict[str, float]]:
    """The post-processing with the best pooled AP50 on ``pairs`` (core.instances.
    tune_instances) among those with a minimum size of at most ``MAX_MIN_SIZE`` px; the
    network runs once per image, at the image's own scale (the pairs are drawn at the
    model's diameter)."""
    probabilities = [
        predict(image, model, device="auto", return_probabilities=True, diameter=None)[1]
        for image, _ in pairs
    ]
    start = InstanceConfig(min_size=MAX_MIN_SIZE)
    best, _, scores = tune_instances(
        probabilities,
        [labels for _, labels in pairs],
        start=start,
        max_min_size=MAX_MIN_SIZE,
    )
    return best, scores


def training_record(args: argparse.Namespace, **extra) -> dict:
    """The command line of this run for a model's provenance (no machine paths)."""
    options = {
        k: str(v) if isinstance(v, Path) else v
        for k, v in vars(args).items()
        if k not in ("work", "out", "init")
    }
    return {"script": "scripts/train_bundled.py", "args": options, **extra}


def average_weights(model: CellModel, paths: list[Path]) -> None:
    """Replace ``model``'s weights by the mean of those in the model files ``paths`` (one
    architecture): a smoother model than any single round (rounds of one run differ by
    several points of AP50 on real images)."""
    states = [load_model(path).net.state_dict() for path in paths]
    mean = {
        key: (sum(state[key].float() for state in states) / len(states)).to(states[0][key].dtype)
        for key in states[0]
    }
    model.net.load_state_dict(mean)
    model.provenance["weights_averaged_over"] = [path.name for path in paths]
    logging.getLogger("train_bundled").info(
        "weights averaged over %s", ", ".join(path.name for path in paths)
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=20, help="rounds of fresh synthetic data")
    p.add_argument("--steps-per-round", type=int, default=175, help="optimiser steps per round")
    p.add_argument("--images", type=int, default=32, help="training images per round")
    p.add_argument("--size", type=int, default=384, help="training image size, px")
    p.add_argument("--base", type=int, default=16, help="channels of the first level")
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of round 0")
    p.add_argument(
        "--lr-half-life", type=float, default=7.0, help="rounds over which the rate halves"
    )
    p.add_argument(
        "--warmup", type=int, default=5, help="learning-rate warm-up steps of rounds after 0"
    )
    p.add_argument(
        "--keep",
        choices=("best", "average"),
        default="best",
        help="each round keeps its best validated step, or its last half's mean weights",
    )
    p.add_argument(
        "--average-last",
        type=int,
        default=1,
        help="the final model is the mean of the last N rounds' weights (1: the last round)",
    )
    p.add_argument("--classes", type=int, default=3, choices=(2, 3), help="output classes")
    p.add_argument("--diameter", type=float, default=20.0, help="typical nucleus size, px")
    p.add_argument(
        "--resampled",
        type=float,
        default=0.0,
        help=f"fraction of images drawn at {SOURCE_RANGE} and resampled to --diameter",
    )
    p.add_argument("--crowded", type=float, default=0.0, help="fraction of images made crowded")
    p.add_argument("--scale-aug", type=float, default=0.5, help="tile zoom range 1/(1+s)..1+s")
    p.add_argument("--init", type=Path, default=None, help="continue from this model file")
    p.add_argument(
        "--post-processing",
        choices=("tune", "init"),
        default="tune",
        help="tune it at the end (default) or keep the --init model's",
    )
    p.add_argument(
        "--seed-threshold",
        type=float,
        default=None,
        help="with --post-processing init: store this seed threshold instead of the --init "
        "model's (chosen beforehand on images that are neither training nor test images)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--work", type=Path, default=ROOT / ".train_bundled")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("train_bundled")

    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_config = ModelConfig(
        n_classes=args.classes, base=args.base, depth=args.depth, dropout=0.1
    )
    val_pairs = make_images(args.seed, VAL_STREAM, 0, 6, args.size, args.diameter, args.resampled)
    val = as_samples([im for im, _ in val_pairs], [lb for _, lb in val_pairs])

    model = model_config if args.init is None else initial_model(args.init, args.classes)
    for round_index in range(args.rounds):
        path = args.work / f"round_{round_index:02d}.npz"
        if path.exists():
            log.info("round %d: done before, resuming from %s", round_index, path)
            model = path
            continue
        pairs = make_images(
            args.seed,
            TRAIN_STREAM,
            round_index,
            args.images,
            args.size,
            args.diameter,
            args.resampled,
            args.crowded,
        )
        samples = as_samples(
            [im for im, _ in pairs],
            [lb for _, lb in pairs],
            names=[f"round {round_index} image {i}" for i in range(len(pairs))],
        )
        config = TrainConfig(
            steps=args.steps_per_round,
            batch_size=args.batch,
            learning_rate=args.lr * 0.5 ** (round_index / args.lr_half_life),
            warmup_steps=20 if round_index == 0 else args.warmup,
            validate_every=60,
            patience=None,
            # "best" (the recipe of v1-v8): each round keeps its best validated step (6
            # validation images, hundreds of cells), which may be the round's start;
            # "average": the weights averaged over the round's last half, always kept
            average_from=None if args.keep == "best" else 0.5,
            min_val_cells=0 if args.keep == "best" else 10**9,
            augment=AugmentConfig(scale=args.scale_aug),
            seed=args.seed * 1000 + round_index,
            tune_post_processing=False,  # tuned once, at the end, on separate images
        )
        started = time.perf_counter()
        result = None
        gen = train_iter(samples, model, config, val_samples=val, device=args.device)
        try:
            while True:
                event = next(gen)
                if event.kind == "validation":
                    m = event.metrics
                    log.info(
                        "round %d step %d: val loss %.4f AP50 %.3f fg IoU %.3f",
                        round_index,
                        event.step,
                        m["loss"],
                        m["ap50"],
                        m["fg_iou"],
                    )
        except StopIteration as done:
            result = done.value
        result.model.provenance["bundled_training"] = training_record(args, round=round_index)
        save_model(result.model, path)
        log.info(
            "round %d: %d steps in %.0f s, best AP50 %.3f -> %s",
            round_index,
            result.steps,
            time.perf_counter() - started,
            (result.best_metrics or {}).get("ap50", float("nan")),
            path,
        )
        model = path

    final = load_model(model)
    if args.average_last > 1:
        rounds = range(max(0, args.rounds - args.average_last), args.rounds)
        average_weights(final, [args.work / f"round_{r:02d}.npz" for r in rounds])
        # the last round's validation figures are not the averaged weights'
        final.provenance["validation"] = None
    # the command that made this file (the last round's record names the run's first one)
    final.provenance["bundled_training"] = training_record(
        args, init=None if args.init is None else args.init.name, rounds=args.rounds
    )
    # provenance names rounds by file name only: no machine paths in the shipped file
    final.provenance["trained_from"] = Path(final.provenance.get("trained_from", "")).name
    final.extra["diameter"] = args.diameter
    if args.post_processing == "init" and args.init is not None:
        kept = dict(load_model(args.init).extra.get("instances") or {})
        if args.seed_threshold is not None:
            kept["seed_threshold"] = args.seed_threshold
        final.extra["instances"] = kept
        final.provenance["instance_tuning"] = {"kept_from": args.init.name, "chosen": kept}
        if args.seed_threshold is not None:
            final.provenance["instance_tuning"]["seed_threshold"] = "given (--seed-threshold)"
        log.info("post-processing kept from %s: %s", args.init.name, kept)
    else:
        tuning = make_images(args.seed, VAL_STREAM, 1, 8, args.size, args.diameter, args.resampled)
        best, scores = tune_post_processing(final, tuning)
        final.extra["instances"] = config_to_dict(best)
        final.provenance["instance_tuning"] = {
            "data": "8 synthetic images from the validation seed stream (not test, not training)",
            "chosen": config_to_dict(best),
            "ap50_by_setting": scores,
        }
        log.info("post-processing: %s", best)
    final.provenance["data"] = (
        f"synthetic only: {args.rounds} rounds x {args.images} images of {args.size}^2 px "
        "from core.synthetic.random_config (no real images)"
        + (f", {args.crowded:.0%} of them made crowded" if args.crowded else "")
        + (
            f", {args.resampled:.0%} of them drawn at {SOURCE_RANGE} and resampled"
            if args.resampled
            else ""
        )
    )
    save_model(final, args.out)
    log.info("saved %s (%.1f MB)", args.out, args.out.stat().st_size / 1e6)
    print(
        json.dumps(
            {
                "model": str(args.out.relative_to(ROOT))
                if args.out.is_relative_to(ROOT)
                else str(args.out),
                "validation": final.provenance.get("validation"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
