"""``unet-cells info``: what a model file holds, and which device prediction would use."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..core.errors import UNetCellsError


def add_info(sub) -> None:
    """Declare ``unet-cells info`` on the ``sub`` parsers.

    Parameters
    ----------
    sub : argparse._SubParsersAction
        The ``unet-cells`` subparsers; ``run_info`` is set as the command's ``run``.
    """
    p = sub.add_parser(
        "info",
        help="what a model file contains, and which device prediction would use here",
        description="Reads only the model file's header (no network is built): its network, "
        "input normalisation, cell size, recommended post-processing and provenance.",
    )
    p.add_argument(
        "model",
        type=Path,
        nargs="?",
        help="a model file (.npz) or bioimage.io package (.zip); default: the bundled model",
    )
    p.add_argument("--json", action="store_true", help="print the file's whole header as JSON")
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    """Print a model file's summary and the device, or its header as JSON.

    Parameters
    ----------
    args : argparse.Namespace
        ``model`` (Path or None for the bundled model) and ``json`` (bool).

    Returns
    -------
    int
        0.
    """
    from ..core.checkpoint import read_model_info
    from ..core.registry import bundled_model_path

    path = args.model or bundled_model_path()
    if path is None:
        raise UNetCellsError(
            "No model file given and the bundled model is missing from this installation; "
            "give a model file, or reinstall napari-unet-cells."
        )
    meta = read_model_info(path)
    if args.json:
        meta.pop("tensors", None)
        print(json.dumps(meta, indent=2, sort_keys=True))
        return 0
    print(model_summary(Path(path), meta, bundled=args.model is None))
    print(device_summary())
    return 0


def model_summary(path: Path, meta: dict, bundled: bool) -> str:
    """A few readable lines about a model file's header (``--json`` shows all of it).

    Parameters
    ----------
    path : Path
        The model file (its name and size are shown).
    meta : dict
        Its header, as ``core.checkpoint.read_model_info`` returns it.
    bundled : bool
        Whether it is the bundled model (said after its name).

    Returns
    -------
    str
        Lines of ``label: value``, joined by newlines.
    """
    cfg = meta.get("model_config", {})
    params = sum(math.prod(t["shape"]) for t in meta.get("tensors", {}).values())
    norm = meta.get("normalization", {})
    lines = [
        f"model:      {path.name}{' (bundled)' if bundled else ''}, "
        f"{path.stat().st_size / 2**20:.1f} MiB, {params:,} parameters",
        f"network:    U-Net, base {cfg.get('base')}, depth {cfg.get('depth')}, "
        f"{cfg.get('padding')} convolutions, {cfg.get('in_channels')} input channel(s), "
        f"classes {', '.join(meta.get('classes', []))}",
        f"input:      percentiles {norm.get('p_low')} and {norm.get('p_high')} of each image "
        "map to 0 and 1",
        _cell_size_line(meta.get("extra", {}).get("diameter")),
    ]
    rec = meta.get("extra", {}).get("instances")
    if rec:
        lines.append(
            f"cells:      threshold {rec.get('threshold')}, "
            f"{_seeds(rec.get('seed_threshold'))}, min size {rec.get('min_size')} px, "
            f"min confidence {rec.get('min_confidence')} (the model's recommendation)"
        )
    lines += _provenance_lines(meta.get("provenance", {}))
    lines.append("(all of the header: unet-cells info --json)")
    return "\n".join(lines)


def _cell_size_line(diameter) -> str:
    if diameter:
        return (
            f"cell size:  trained around nuclei of {diameter:g} px; images are resampled to it "
            "(--diameter)"
        )
    return "cell size:  not recorded (images are predicted at their own scale)"


def _provenance_lines(prov: dict) -> list[str]:
    """When it was saved, from what, on which data, and its validation AP50."""
    lines = []
    if prov.get("saved"):
        origin = f", fine-tuned from {prov['trained_from']}" if prov.get("trained_from") else ""
        lines.append(f"saved:      {prov['saved']}{origin}")
    if prov.get("data"):
        lines.append(f"data:       {prov['data']}")
    images = (prov.get("training") or {}).get("data")
    if isinstance(images, list) and images:  # a fine-tuned model: its training images
        cells = sum(int(item.get("cells", 0)) for item in images)
        names = ", ".join(str(item.get("name", "?")) for item in images[:3])
        more = f" and {len(images) - 3} more" if len(images) > 3 else ""
        lines.append(f"data:       {len(images)} image(s), {cells} cells ({names}{more})")
    ap50 = (prov.get("validation") or {}).get("ap50")  # None when nothing was validated
    if ap50 is not None:
        lines.append(f"validation: AP50 {ap50:.3f} on its validation images")
    return lines


def _seeds(seed_threshold) -> str:
    return "no seeds" if seed_threshold is None else f"seeds at {seed_threshold}"


def device_summary() -> str:
    """Which device ``device="auto"`` picks here, and why a GPU may be missing.

    Returns
    -------
    str
        Two lines, the device and its precision (three for a CPU-only PyTorch build).
    """
    import torch

    from ..core.device import (
        PRECISION_VARIABLE,
        available_devices,
        inference_dtype,
        resolve_device,
    )

    device = resolve_device("auto")
    line = f"device:     auto -> {device} (PyTorch {torch.__version__}; "
    line += f"available: {', '.join(available_devices())})"
    if device.type == "cpu" and torch.version.cuda is None:
        line += (
            "\n            this PyTorch is a CPU-only build: for an NVIDIA GPU install the "
            "CUDA build from pytorch.org"
        )
    if inference_dtype(device) is not None:
        line += f"\nprecision:  bf16 autocast ({PRECISION_VARIABLE}=fp32 turns it off)"
    else:
        line += "\nprecision:  fp32"
    return line
