"""What every benchmark prints: one JSON line per measurement, with the machine's load."""

from __future__ import annotations

import contextlib
import json
import os
import time


def emit(**record) -> None:
    """Print ``record`` as one JSON line, with the 1-minute load average and CPU count
    (other processes change timings: the load says how much)."""
    record["load_avg_1min"] = round(os.getloadavg()[0], 2)
    record["cpus"] = os.cpu_count()
    print(json.dumps(record), flush=True)


def best_time(fn, repeat: int) -> tuple[float, object]:
    """(fastest of ``repeat`` calls of ``fn``, in s; the last call's result)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


@contextlib.contextmanager
def fp32_only():
    """Within the block, the package computes in fp32 (bf16 autocast off), as with
    ``NAPARI_UNET_CELLS_PRECISION=fp32``: the reference for bf16 speed-ups."""
    from napari_unet_cells.core.device import PRECISION_VARIABLE

    before = os.environ.get(PRECISION_VARIABLE)
    os.environ[PRECISION_VARIABLE] = "fp32"
    try:
        yield
    finally:
        if before is None:
            del os.environ[PRECISION_VARIABLE]
        else:
            os.environ[PRECISION_VARIABLE] = before
