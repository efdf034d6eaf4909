"""Fine-tuning benchmarks: augmentation speed, step rate, optimiser choice, time to quality.

Prints one JSON line per measurement; each compares against a reference computed in the
same run:

- ``augment``: ms per 380 px tile for the torch implementation (core/augment.py) and for
  a scipy reference of the same recipe (``ndimage.zoom(order=3)`` of the coarse grid +
  ``map_coordinates``); and ms per tile to recompute the weight map from deformed labels
  (the alternative to deforming it with the image).
- ``steps``: optimiser steps per second of the default recipe for a network config, split
  into data (tile sampling + augmentation) and network (forward + backward + update).
- ``quality``: fine-tune on 2 synthetic images of a "new look" (larger, elongated,
  textured nuclei, blurrier and noisier than the generator's defaults) for a wall-time
  budget, validating on 2 held-out images of the same look; one line per validation
  (AP50 against wall time), then the AP50 of the full prediction pipeline
  (core/predict.py, with the model's stored post-processing) on the 2 validation images
  (which chose the best step and the post-processing: optimistic) and on 3 test images
  used for neither, before and after fine-tuning. ``--optimizers adam sgd`` runs the same
  budget once per optimiser: the reference for the default choice.
- ``stability``: the spread over repeated runs on one small image: fine-tune from the
  bundled model on the left half of a 512 x 512 synthetic image of ~60 nuclei
  (``random_config``) for each step budget, method (``METHODS``: TrainConfig fields) and
  seed, and score AP50 of ``predict`` on the right half (seen by neither training,
  validation nor the post-processing search); one line per run with the wall time per
  step.

    python benchmarks/bench_finetune.py augment steps
    python benchmarks/bench_finetune.py quality --minutes 5 --optimizers adam sgd
    python benchmarks/bench_finetune.py quality --base path/to/bundled.npz --minutes 5
    python benchmarks/bench_finetune.py stability --methods old new --threads 1 --out r.jsonl

Run on a quiet machine; note ``uptime``'s load with the numbers.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

import numpy as np
import torch
from scipy import ndimage as ndi

from napari_unet_cells.core import augment as A
from napari_unet_cells.core.config import AugmentConfig, ModelConfig, TrainConfig
from napari_unet_cells.core.data import TileSampler, as_samples, choose_tile, split_validation
from napari_unet_cells.core.synthetic import SyntheticConfig, synthetic_cells
from napari_unet_cells.core.train import SCRATCH_CONFIG, train_iter
from napari_unet_cells.core.weightmap import weight_map

#: a look unlike the generator's defaults (diameter 10-28 px, round, smooth, sharp)
NEW_LOOK = SyntheticConfig(
    diameter=(22.0, 40.0),
    aspect=(1.2, 2.0),
    irregularity=0.12,
    coverage=0.4,
    blur_sigma=(1.5, 2.5),
    photons=(20.0, 200.0),
    condensed_fraction=0.1,
    background_texture=0.15,
    debris=1.0,
)


def emit(**record) -> None:
    record.setdefault("load_1min", round(os.getloadavg()[0], 2))
    record.setdefault("threads", torch.get_num_threads())
    print(json.dumps(record), flush=True)


def _timed(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


# --------------------------------------------------------------------------------------


def scipy_reference(params, image, weight, target, labels):
    """The same recipe with scipy: bicubic zoom of the coarse grid, map_coordinates."""
    out = []
    for p, img, w, t, lab in zip(params, image, weight, target, labels, strict=True):
        h, wd = img.shape
        g = p.displacement.shape[-1]
        field = np.stack([ndi.zoom(p.displacement[i], (h / g, wd / g), order=3) for i in (0, 1)])
        yy, xx = np.meshgrid(np.arange(h), np.arange(wd), indexing="ij")
        coords = np.stack([yy + field[0], xx + field[1]])
        smooth = [ndi.map_coordinates(a, coords, order=1, mode="mirror") for a in (img, w)]
        nearest = [ndi.map_coordinates(a, coords, order=0, mode="mirror") for a in (t, lab)]
        arrays = [*smooth, *nearest]
        if p.flip_y:
            arrays = [a[::-1] for a in arrays]
        if p.flip_x:
            arrays = [a[:, ::-1] for a in arrays]
        arrays = [np.rot90(a, p.rot90) for a in arrays]
        arrays[0] = arrays[0] * p.gain + p.offset
        out.append(arrays)
    return out


def bench_augment(tile: int = 380, batch: int = 4, repeat: int = 5) -> None:
    image, labels = synthetic_cells((tile, tile * batch), seed=0, config=NEW_LOOK)
    split = lambda a: np.ascontiguousarray(np.stack(np.split(a, batch, axis=1)))  # noqa: E731
    img = split(image.astype(np.float32) / image.max())
    lab = split(labels)
    tgt = (lab > 0).astype(np.uint8)
    wgt = np.stack([weight_map(x) for x in lab])
    params = A.draw_params(np.random.default_rng(0), None, batch)
    t_torch = _timed(lambda: A.augment_batch(params, img, wgt, tgt, lab), repeat) / batch
    t_scipy = _timed(lambda: scipy_reference(params, img, wgt, tgt, lab), repeat) / batch
    t_wmap = _timed(lambda: [weight_map(x) for x in lab], repeat) / batch
    emit(
        bench="augment",
        tile=tile,
        torch_ms_per_tile=round(1e3 * t_torch, 2),
        scipy_ms_per_tile=round(1e3 * t_scipy, 2),
        speedup=round(t_scipy / t_torch, 2),
        recompute_weight_map_ms_per_tile=round(1e3 * t_wmap, 2),
    )


def bench_steps(config: ModelConfig, steps: int = 4, batch: int = 4) -> None:
    images = [synthetic_cells((512, 512), seed=s, config=NEW_LOOK) for s in (1, 2)]
    samples = as_samples([i for i, _ in images], [lab for _, lab in images])
    train_config = TrainConfig(steps=steps + 1, batch_size=batch, val_fraction=0.0)
    train, _ = split_validation(samples, None, train_config, config)
    tile, out = choose_tile(config, [p.shape for p in train])
    sampler = TileSampler(train, tile, out)
    rng = np.random.default_rng(0)

    def data_part():
        b = sampler.sample(rng, batch)
        return A.augment_batch(A.draw_params(rng, None, batch), b.image, b.weight, b.target)

    t_data = _timed(data_part, steps)
    times = []
    gen = train_iter(samples, config, train_config, device="cpu")
    for event in gen:
        if event.kind == "step":
            times.append(event.elapsed_s)
    per_step = float(np.median(np.diff(times)))
    emit(
        bench="steps",
        model=f"base {config.base} depth {config.depth}",
        tile=tile,
        output_tile=out,
        batch=batch,
        steps_per_s=round(1 / per_step, 3),
        s_per_step=round(per_step, 3),
        data_s_per_step=round(t_data, 3),
        network_s_per_step=round(per_step - t_data, 3),
        output_kpx_per_s=round(batch * out * out / per_step / 1e3, 1),
    )


def bench_quality(
    base, minutes: float | None, optimizers, size: int, seed: int, steps=None, every=25, lr=None
) -> None:
    from napari_unet_cells.core.metrics import match
    from napari_unet_cells.core.predict import predict

    train = [synthetic_cells((size, size), seed=seed + s, config=NEW_LOOK) for s in (0, 1)]
    held = [synthetic_cells((size, size), seed=seed + s, config=NEW_LOOK) for s in (10, 11)]
    # test images: used neither for choosing the best step nor for tuning post-processing
    test = [synthetic_cells((size, size), seed=seed + s, config=NEW_LOOK) for s in (20, 21, 22)]
    samples = as_samples([i for i, _ in train], [lab for _, lab in train])
    val = as_samples([i for i, _ in held], [lab for _, lab in held])
    start_name = "scratch" if base is None else str(base)
    for optimizer in optimizers:
        config = TrainConfig(
            steps=steps,
            minutes=None if steps else minutes,
            optimizer=optimizer,
            learning_rate=lr,
            validate_every=every,
            patience=None,
        )
        model = base if base is not None else SCRATCH_CONFIG
        gen = train_iter(samples, model, config, val_samples=val, device="cpu")
        result = None
        for event in gen:
            if event.kind == "validation":
                emit(
                    bench="quality_curve",
                    start=start_name,
                    optimizer=optimizer,
                    step=event.step,
                    elapsed_s=round(event.elapsed_s, 1),
                    val_ap50=round(event.metrics["ap50"], 4),
                    val_fg_iou=round(event.metrics["fg_iou"], 4),
                    val_loss=round(event.metrics["loss"], 4),
                )
            if event.kind == "done":
                result = event.result

        def pipeline_ap50(pairs, model) -> float:
            tp = fp = fn = 0
            for image, labels in pairs:
                [m] = match(labels, predict(image, model, device="cpu"), 0.5)
                tp, fp, fn = tp + m.tp, fp + m.fp, fn + m.fn
            return round(tp / max(1, tp + fp + fn), 4)

        emit(
            bench="quality",
            start=start_name,
            optimizer=optimizer,
            minutes=None if steps else minutes,
            elapsed_s=round(result.elapsed_s, 1),
            steps=result.steps,
            best_step=result.best_step,
            best_val_ap50=round(result.best_metrics["ap50"], 4),
            validation_ap50_predict=pipeline_ap50(held, result.model),
            test_ap50_before=pipeline_ap50(test, base) if base is not None else None,
            test_ap50_predict=pipeline_ap50(test, result.model),
            target_ap50=0.85,
        )


#: the fine-tuning methods ``stability`` compares: TrainConfig fields over the defaults
METHODS: dict[str, dict] = {
    "old": {"average_from": None, "min_val_cells": 0},  # before 2026-12-02
    "new": {},  # the defaults: final weights averaged over the last half (and, since
    # 2026-12-03, the tile zoom; "new" runs recorded before that had no zoom)
    "lr3e-4": {"learning_rate": 3e-4},  # the defaults with a third of Adam's peak rate
    "zoom": {"augment": {"scale": 0.5}},  # the bundled recipe's tile zoom (0.67-1.5x)
    "nozoom": {"augment": {"scale": 0.0}},  # the default before 2026-12-03
}


def method_config(method: str, budget: int, seed: int) -> TrainConfig:
    """The TrainConfig of a ``METHODS`` entry (an ``augment`` dict overrides AugmentConfig
    fields), so that the entries stay plain JSON for the records."""
    overrides = dict(METHODS[method])
    if "augment" in overrides:
        overrides["augment"] = AugmentConfig(**overrides["augment"])
    return TrainConfig(steps=budget, seed=seed, **overrides)


def stability_pair(
    index: int, size: int = 512, cells: tuple[int, int] = (45, 80), look: str = "random"
):
    """A realistic synthetic image of ~60 nuclei (``random_config``, diameter 28-40 px)
    of ``size`` x ``size`` px, redrawn until its cell count is within ``cells``; or, with
    ``look`` one of ``scripts/evaluate_model.py``'s stress sets (e.g. "dense",
    "low_contrast", "scale_0.5x"), an image of that set's look from its own seed stream."""
    import dataclasses

    from napari_unet_cells.core.synthetic import random_config

    if look != "random":
        return synthetic_cells((size, size), seed=7000 + index, config=_stress_look(look))
    rng = np.random.default_rng(5000 + index)
    while True:
        config = random_config(rng, diameter=(28.0, 40.0))
        config = dataclasses.replace(config, coverage=float(rng.uniform(0.15, 0.3)))
        image, labels = synthetic_cells((size, size), seed=rng, config=config)
        if cells[0] <= len(np.unique(labels)) - 1 <= cells[1]:
            return image, labels


def _stress_look(name: str) -> SyntheticConfig:
    """The SyntheticConfig of a stress set of ``scripts/evaluate_model.py``."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "evaluate_model.py"
    spec = importlib.util.spec_from_file_location("evaluate_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.STRESS_SETS[name]
    if not isinstance(config, SyntheticConfig):
        raise SystemExit(f"--look {name}: choose a stress set drawn by the generator")
    return config


def _test_ap50(model, image, labels) -> float:
    """AP50 of ``predict`` (the model's stored post-processing) on one image."""
    from napari_unet_cells.core.metrics import match
    from napari_unet_cells.core.predict import predict

    [m] = match(labels, predict(image, model, device="cpu"), 0.5)
    return round(m.tp / max(1, m.tp + m.fp + m.fn), 4)


def _with_post(model, post):
    """``model`` with the post-processing ``post`` (a dict) instead of its own."""
    import dataclasses

    return dataclasses.replace(model, extra={**model.extra, "instances": post})


def _stability_run(left, base, config) -> tuple:
    """One fine-tuning run: (the TrainResult, its wall time, median s per step)."""
    result, step_times = None, []
    began = time.perf_counter()
    for event in train_iter(left, base, config, device="cpu"):
        if event.kind == "step":
            step_times.append(event.elapsed_s)
        if event.kind == "done":
            result = event.result
    median = float(np.median(np.diff(step_times))) if len(step_times) > 1 else None
    return result, time.perf_counter() - began, median


def bench_stability(
    base, methods, budgets, images, seeds, out=None, size=512, look="random"
) -> None:
    """Train on the left half of a synthetic image from ``base`` for each step budget,
    method and seed; score AP50 of ``predict`` on the right half (never seen in
    training, validation or post-processing tuning), with the post-processing the run
    stored and with the start model's. One JSON line per run (appended to ``out``)."""
    from napari_unet_cells.core.checkpoint import load_model

    half = size // 2
    start_post = load_model(base).extra.get("instances")
    for index in images:
        image, labels = stability_pair(index, size, look=look)
        left = as_samples(image[:, :half], labels[:, :half])
        test = (image[:, half:], labels[:, half:])
        ap_before = _test_ap50(base, *test)
        for budget, method, seed in itertools.product(budgets, methods, seeds):
            config = method_config(method, budget, seed)
            result, wall, per_step = _stability_run(left, base, config)
            metrics = result.best_metrics or {}
            record = dict(
                bench="stability",
                look=look,
                method=method,
                overrides=METHODS[method],
                image=index,
                seed=seed,
                budget=budget,
                steps=result.steps,
                best_step=result.best_step,
                stopped_by=result.stopped_by,
                val_ap50=round(metrics.get("ap50", -1), 4),
                val_cells=int(metrics.get("n_true", -1)),
                test_cells=len(np.unique(test[1])) - 1,
                test_ap50_before=ap_before,
                test_ap50=_test_ap50(result.model, *test),
                test_ap50_start_post=_test_ap50(_with_post(result.model, start_post), *test),
                post=result.model.extra.get("instances"),
                wall_s=round(wall, 1),
                s_per_step=round(wall / max(1, result.steps), 3),
                s_per_step_median=None if per_step is None else round(per_step, 3),
                validations=len(result.history),
            )
            emit(**record)
            if out:
                with open(out, "a") as fh:
                    fh.write(json.dumps({**record, "load_1min": os.getloadavg()[0]}) + "\n")


def pretrain(minutes: float, size: int, seed: int, path: str) -> str:
    """A stand-in for the bundled model while the plugin ships none: SCRATCH_CONFIG
    trained on 4 images of the generator's *default* look for ``minutes``."""
    images = [synthetic_cells((size, size), seed=seed + 1000 + s) for s in range(4)]
    samples = as_samples([i for i, _ in images], [lab for _, lab in images])
    config = TrainConfig(steps=None, minutes=minutes, validate_every=100, patience=None)
    result = None
    for event in train_iter(samples, SCRATCH_CONFIG, config, device="cpu", save_to=path):
        if event.kind == "done":
            result = event.result
    emit(
        bench="pretrain",
        look="default",
        minutes=minutes,
        steps=result.steps,
        val_ap50_default_look=round(result.best_metrics["ap50"], 4),
        saved=path,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="+", choices=("augment", "steps", "quality", "stability"))
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-time budget")
    parser.add_argument("--steps", type=int, help="step budget instead of --minutes")
    parser.add_argument("--validate-every", type=int, default=25)
    parser.add_argument("--optimizers", nargs="+", default=["adam"], choices=("adam", "sgd"))
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate")
    parser.add_argument("--base", help="model file to start from (default: scratch)")
    parser.add_argument(
        "--pretrain-minutes",
        type=float,
        help="first train a stand-in for the bundled model on the default look for this "
        "long (saved to --pretrain-path), then fine-tune from it",
    )
    parser.add_argument("--pretrain-path", default="pretrained_default_look.npz")
    parser.add_argument("--size", type=int, default=384, help="synthetic image size, px")
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--methods", nargs="+", default=["old"], help="stability: METHODS")
    parser.add_argument("--budgets", nargs="+", type=int, default=[100, 300, 800])
    parser.add_argument("--images", nargs="+", type=int, default=[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", help="stability: append the JSON lines to this file")
    parser.add_argument("--look", default="random", help="stability: a stress set's look")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if "augment" in args.what:
        bench_augment()
    if "steps" in args.what:
        bench_steps(SCRATCH_CONFIG)
        bench_steps(ModelConfig(base=64, depth=4), steps=2, batch=1)
    if "stability" in args.what:
        base = args.base or "src/napari_unet_cells/core/models/nuclei_unet.npz"
        bench_stability(
            base, args.methods, args.budgets, args.images, args.seeds, args.out, look=args.look
        )
    if "quality" in args.what:
        base = args.base
        if args.pretrain_minutes and base is None:
            base = pretrain(args.pretrain_minutes, args.size, args.seed, args.pretrain_path)
        bench_quality(
            base,
            args.minutes,
            args.optimizers,
            args.size,
            args.seed,
            steps=args.steps,
            every=args.validate_every,
            lr=args.lr,
        )


if __name__ == "__main__":
    main()
