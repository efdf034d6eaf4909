"""Benchmark: training speed on the CPU by memory layout and precision.

1. One optimiser step of the bundled model's architecture (base 16, depth 4) on a batch of
   4 tiles of 380 px (the bundled recipe's), forward + backward + Adam, in torch's
   default layout and fp32 (the reference), channels-last fp32, and channels-last with
   bf16 autocast where the CPU has bf16 hardware (``core.device.cpu_has_fast_bf16``).
2. Steps per second of the real ``train_iter`` (augmentation, weight maps, loss), as
   training runs it (channels-last, ``predict``'s precision), and, where that is bf16,
   with ``NAPARI_UNET_CELLS_PRECISION=fp32`` as the reference.

Each measurement is one JSON line. Usage:

    python benchmarks/bench_train.py [--steps 20] [--repeats 3] [--threads 0] [--wide]

``--wide`` also times the step of the base-32 network (the issue's "wider") and prints
its cost per step relative to base 16 (same variant, same run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import emit, fp32_only


def bench_step(repeats: int, base: int = 16) -> dict[str, float]:
    """Best seconds per optimiser step for each layout and precision (same batch), for a
    depth-4 U-Net of ``base`` channels; returns them by variant name."""
    import torch

    from napari_unet_cells.core.checkpoint import CellModel
    from napari_unet_cells.core.config import ModelConfig
    from napari_unet_cells.core.device import autocast, cpu_has_fast_bf16

    cpu = torch.device("cpu")
    model = CellModel.new(ModelConfig(base=base, depth=4, dropout=0.1), seed=0)
    net = model.net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    x = torch.rand(4, 1, 380, 380, generator=torch.Generator().manual_seed(0))
    variants = [("fp32_contiguous", torch.contiguous_format, None)]
    variants.append(("fp32_channels_last", torch.channels_last, None))
    if cpu_has_fast_bf16():
        variants.append(("bf16_channels_last", torch.channels_last, torch.bfloat16))
    best = {}
    for _ in range(repeats):  # alternate: robust to a busy machine
        for name, layout, dtype in variants:
            net.to(memory_format=layout)
            batch = x.contiguous(memory_format=layout)
            times = []
            for _ in range(3):  # the first is a warm-up
                start = time.perf_counter()
                with autocast(cpu, dtype):
                    logits = net(batch)
                loss = logits.float().square().mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                times.append(time.perf_counter() - start)
            best[name] = min(best.get(name, float("inf")), *times[1:])
    common = {"base": base, "depth": 4, "batch": 4, "tile": 380, "repeats": repeats}
    common["threads"] = torch.get_num_threads()
    reference = best["fp32_contiguous"]
    for name, seconds in best.items():
        emit(measurement=f"train_step_s_{name}", value=round(seconds, 3), **common)
        if name != "fp32_contiguous":
            emit(
                measurement=f"train_step_speedup_{name}",
                value=round(reference / seconds, 3),
                reference="fp32 step in torch's default layout (same batch, same run)",
                **common,
            )
    return best


def _train_iter_rate(steps: int) -> float:
    """Optimiser steps per second of ``train_iter`` on synthetic images (after its setup)."""
    from napari_unet_cells.core.checkpoint import CellModel
    from napari_unet_cells.core.config import ModelConfig, TrainConfig
    from napari_unet_cells.core.data import as_samples
    from napari_unet_cells.core.synthetic import synthetic_cells
    from napari_unet_cells.core.train import train_iter

    pairs = [synthetic_cells((384, 384), seed=seed) for seed in range(4)]
    model = CellModel.new(ModelConfig(base=16, depth=4, dropout=0.1), seed=0)
    config = TrainConfig(
        steps=steps,
        batch_size=4,
        validate_every=10_000,
        patience=None,
        seed=0,
        tune_post_processing=False,
    )
    samples = as_samples([p[0] for p in pairs], [p[1] for p in pairs])
    times = []
    gen = train_iter(samples, model, config, device="cpu")
    try:
        while True:
            event = next(gen)
            if event.kind == "step":
                times.append(time.perf_counter())
    except StopIteration:
        pass
    return (len(times) - 2) / (times[-1] - times[1])  # steps after the first two


def bench_train_iter(steps: int) -> None:
    """Steps per second of ``train_iter`` as it runs, and in fp32 where it runs bf16."""
    import torch

    from napari_unet_cells.core.device import inference_dtype

    bf16 = inference_dtype(torch.device("cpu")) is not None
    common = {"base": 16, "depth": 4, "batch": 4, "steps": steps}
    common |= {"threads": torch.get_num_threads(), "precision": "bf16" if bf16 else "fp32"}
    rate = _train_iter_rate(steps)
    emit(measurement="train_iter_steps_per_s", value=round(rate, 3), **common)
    if bf16:
        with fp32_only():
            rate_fp32 = _train_iter_rate(steps)
        emit(
            measurement="train_iter_bf16_speedup",
            value=round(rate / rate_fp32, 3),
            fp32_steps_per_s=round(rate_fp32, 3),
            reference="train_iter in fp32 (NAPARI_UNET_CELLS_PRECISION=fp32, same run)",
            **common,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--wide", action="store_true", help="also time base 32")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    narrow = bench_step(args.repeats)
    if args.wide:
        wide = bench_step(args.repeats, base=32)
        for name in narrow:
            emit(
                measurement=f"train_step_cost_base32_over_base16_{name}",
                value=round(wide[name] / narrow[name], 3),
                reference="the base-16 step, same variant, same run",
                threads=torch.get_num_threads(),
            )
    bench_train_iter(args.steps)


if __name__ == "__main__":
    main()
