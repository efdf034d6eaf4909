"""Benchmark: tiled prediction overhead and bounded memory for large zarr images.

1. The bare network forward over exactly the tiles (same tile size, same batches) of a
   1024^2 image, against the full ``predict`` on that image (normalisation, tiling with
   mirroring, stitching, instances). Prints both times, their ratio (target <= 1.15) and
   the output megapixels per second. Once with random weights of the --base/--depth
   network (many fragments: a worst case for the instance step) and once with the bundled
   model's trained weights and stored post-processing (realistic probabilities). Both
   run with ``predict``'s precision (bf16 autocast on CPUs with bf16 hardware, else fp32);
   where that is bf16, the same runs in fp32 are the reference for ``bf16_speedup``.
2. Peak resident memory of ``unet-cells predict`` on an 8192^2 zarr image (zarr in, zarr
   out, dask chunks), in a fresh process (target <= 2 GB).

Each measurement is one JSON line. Usage:

    python benchmarks/bench_predict.py [--weights random bundled] [--base 16] [--depth 4]
        [--size 1024] [--big 8192] [--rss-base 4] [--rss-depth 2] [--repeats 3] [--skip-rss]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import fp32_only  # benchmarks/_record.py


def _bare_forward(model, image, tile, batch_size, channels_last=True, precision="auto"):
    """Seconds for the network alone on the tiles ``predict`` uses (inputs prepared), in
    channels-last memory format (as ``predict``) or torch's default (contiguous), with
    ``predict``'s autocast ("auto": bf16 where the hardware has it) or in "fp32"."""
    import torch

    from napari_unet_cells.core.device import autocast, inference_dtype

    cpu = torch.device("cpu")
    dtype = inference_dtype(cpu) if precision == "auto" else None
    layout = torch.channels_last if channels_last else torch.contiguous_format

    from napari_unet_cells.core.tiling import plan_tiles

    grid = plan_tiles(image.shape, tile, model.config.depth, model.config.padding)
    ty, tx = grid.tile_shape
    rng = np.random.default_rng(0)
    batches = [
        torch.from_numpy(
            rng.random((min(batch_size, len(grid) - i), 1, ty, tx), np.float32)
        ).contiguous(memory_format=layout)
        for i in range(0, len(grid), batch_size)
    ]
    net = model.net.to(memory_format=layout).eval()
    with torch.inference_mode(), autocast(cpu, dtype):
        net(batches[0][:1])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            torch.softmax(net(batch).float(), dim=1).numpy()
        return time.perf_counter() - start, len(grid), grid.tile_shape


def _full_predict_fp32(predict, image, model, tile, batch) -> float:
    """Seconds for ``predict`` with bf16 autocast turned off (the environment variable)."""
    with fp32_only():
        start = time.perf_counter()
        predict(image, model, device="cpu", tile=tile, batch_size=batch)
        return time.perf_counter() - start


def bench_overhead(
    base: int, depth: int, size: int, repeats: int = 3, weights: str = "random"
) -> None:
    import torch

    from napari_unet_cells.core.checkpoint import CellModel
    from napari_unet_cells.core.config import ModelConfig
    from napari_unet_cells.core.device import inference_dtype
    from napari_unet_cells.core.predict import auto_tile_and_batch, predict
    from napari_unet_cells.core.synthetic import synthetic_cells

    if weights == "bundled":  # trained weights: realistic probabilities and post-processing
        from napari_unet_cells.core.registry import resolve_model

        model = resolve_model(None)
        base, depth = model.config.base, model.config.depth
    else:
        model = CellModel.new(ModelConfig(base=base, depth=depth, dropout=0.0), seed=0)
    image, _ = synthetic_cells((size, size), seed=0)
    tile, batch = auto_tile_and_batch(model.config, torch.device("cpu"))
    predict(image[:200, :200], model, device="cpu", tile=tile, batch_size=batch)  # warm-up
    bf16 = inference_dtype(torch.device("cpu")) is not None
    bares, contiguous, fp32s, fulls, full_fp32s = [], [], [], [], []
    for _ in range(repeats):  # alternate, keep the best of each: robust to a busy machine
        contiguous.append(_bare_forward(model, image, tile, batch, channels_last=False)[0])
        bare, n_tiles, tile_shape = _bare_forward(model, image, tile, batch)
        bares.append(bare)
        start = time.perf_counter()
        labels = predict(image, model, device="cpu", tile=tile, batch_size=batch)
        fulls.append(time.perf_counter() - start)
        if bf16:  # the same in fp32: the reference for bf16 autocast
            fp32s.append(_bare_forward(model, image, tile, batch, precision="fp32")[0])
            full_fp32s.append(_full_predict_fp32(predict, image, model, tile, batch))
    bare, full, plain = min(bares), min(fulls), min(contiguous)
    mpx = size * size / 1e6
    common = {"weights": weights, "base": base, "depth": depth, "image": [size, size]}
    common |= {"tiles": n_tiles}
    common |= {"repeats": repeats, "load": round(os.getloadavg()[0], 2)}
    common |= {"tile": list(tile_shape), "batch": batch, "threads": torch.get_num_threads()}
    common |= {"precision": "bf16 autocast" if bf16 else "fp32"}
    print(json.dumps({"measurement": "bare_forward_s", "value": round(bare, 3), **common}))
    print(
        json.dumps(
            {
                "measurement": "channels_last_speedup",
                "value": round(plain / bare, 3),
                "contiguous_forward_s": round(plain, 3),
                "reference": "bare forward in torch's default layout (same tiles, same run)",
                **common,
            }
        )
    )
    if bf16:
        for name, fast, slow in (
            ("bf16_speedup", bare, min(fp32s)),
            ("bf16_predict_speedup", full, min(full_fp32s)),
        ):
            print(
                json.dumps(
                    {
                        "measurement": name,
                        "value": round(slow / fast, 3),
                        "fp32_s": round(slow, 3),
                        "reference": "the same in fp32 (NAPARI_UNET_CELLS_PRECISION=fp32, "
                        "same tiles, same run)",
                        **common,
                    }
                )
            )
    print(json.dumps({"measurement": "full_predict_s", "value": round(full, 3), **common}))
    print(
        json.dumps(
            {
                "measurement": "full_over_bare",
                "value": round(full / bare, 3),
                "target": 1.15,
                "ok": full / bare <= 1.15,
                "reference": "bare_forward_s (same tiles, same run)",
                **common,
            }
        )
    )
    print(json.dumps({"measurement": "output_mpx_per_s", "value": round(mpx / full, 4), **common}))
    if weights == "bundled" and size == 1024:  # the issue-12 target, diameter estimate included
        print(
            json.dumps(
                {
                    "measurement": "predict_1024_s",
                    "value": round(full, 3),
                    "target": 1.0,
                    "ok": full <= 1.0,
                    "reference": "bare_forward_s",
                    **common,
                }
            )
        )
    assert labels.shape == image.shape


def _make_big_zarr(path: Path, size: int) -> None:
    """An 8192^2 uint16 zarr image, written chunk by chunk from synthetic 1024^2 tiles."""
    import zarr

    from napari_unet_cells.core.synthetic import synthetic_cells

    chunk = 1024
    z = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(chunk, chunk), dtype="u2")
    tiles = [synthetic_cells((chunk, chunk), seed=s)[0] for s in range(4)]
    for i in range(0, size, chunk):
        for j in range(0, size, chunk):
            tile = tiles[(i // chunk + 2 * (j // chunk)) % 4]
            z[i : i + chunk, j : j + chunk] = tile[: size - i, : size - j]


_CHILD = """
import resource, sys, time, json
from napari_unet_cells.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
elapsed = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("RESULT " + json.dumps({"code": code, "seconds": elapsed, "peak_rss": peak}))
"""


def bench_big_zarr(size: int, base: int, depth: int) -> None:
    from napari_unet_cells.core.checkpoint import CellModel, save_model
    from napari_unet_cells.core.config import ModelConfig

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        save_model(
            CellModel.new(ModelConfig(base=base, depth=depth, dropout=0.0), seed=0),
            folder / "model.npz",
        )
        _make_big_zarr(folder / "big.zarr", size)
        argv = [
            "predict",
            str(folder / "big.zarr"),
            "-o",
            str(folder / "cells.zarr"),
            "--model",
            str(folder / "model.npz"),
            "--device",
            "cpu",
            "--chunk",
            "1024",
        ]
        run = subprocess.run(
            [sys.executable, "-c", _CHILD, *argv],
            capture_output=True,
            text=True,
            check=False,
            env=os.environ.copy(),
        )
        line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
        if run.returncode or not line:
            raise SystemExit(f"the zarr prediction failed:\n{run.stdout}\n{run.stderr}")
        result = json.loads(line[0][len("RESULT ") :])
        gb = result["peak_rss"] / 1e9
        print(
            json.dumps(
                {
                    "measurement": "zarr_peak_rss_gb",
                    "value": round(gb, 3),
                    "target": 2.0,
                    "ok": gb <= 2.0,
                    "image": [size, size],
                    "chunk": 1024,
                    "base": base,
                    "depth": depth,
                    "seconds": round(result["seconds"], 1),
                    "mpx_per_s": round(size * size / 1e6 / result["seconds"], 4),
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--big", type=int, default=8192)
    parser.add_argument("--rss-base", type=int, default=4)
    parser.add_argument("--rss-depth", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--weights",
        nargs="+",
        choices=("random", "bundled"),
        default=["random", "bundled"],
        help="random: --base/--depth with random weights; bundled: the shipped model",
    )
    args = parser.parse_args()
    for weights in args.weights:
        bench_overhead(args.base, args.depth, args.size, args.repeats, weights)
    if not args.skip_rss:
        bench_big_zarr(args.big, args.rss_base, args.rss_depth)


if __name__ == "__main__":
    main()
