"""Concept figures for docs/concepts/*.md, drawn from what napari_unet_cells computes.

Every number in these figures comes from the library: feature-map sizes from a pass
through ``core.unet.UNet`` (on torch's "meta" device: shapes only, no arithmetic), tile
plans from ``core.tiling``, probabilities from the bundled model through
``core.predict``, weight maps from ``core.weightmap``, deformations from
``core.augment``, instances from ``core.instances``. Nothing is typed in by hand.

Each entry of ``FIGURES`` is ``name -> function(out_dir, quick=False) -> [png paths]``;
``quick=True`` uses smaller images and fewer variants but the same code path (tests).
Run through the driver: ``.venv/bin/python scripts/make_figures.py --only NAME``.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import matplotlib.colors
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, Rectangle

DPI = 110
WIDTH = 11.0  # inches: 1210 px at DPI


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def _subplots(rows: int, cols: int, size: tuple[float, float]):
    """(figure, axes) like pyplot.subplots, without pyplot's global state."""
    fig = Figure(figsize=size)
    return fig, fig.subplots(rows, cols)


def _save(fig, out_dir: Path, name: str) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=DPI, facecolor="white")  # a bare Figure renders with Agg
    return path


def _label_rgb(labels: np.ndarray, seed: int = 3) -> np.ndarray:
    """Labels as an RGB float image: background black, each id a fixed random colour."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    top = int(labels.max(initial=0))
    hues = rng.permutation(max(top, 1)) / max(top, 1)
    colours = np.zeros((top + 1, 3))
    colours[1:] = matplotlib.colors.hsv_to_rgb(
        np.stack([hues, np.full(top, 0.65), np.full(top, 0.95)], axis=1)
    )
    return colours[labels]


def _off(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _grey(ax, image: np.ndarray, title: str, **kwargs) -> None:
    lo, hi = np.percentile(image, [1, 99.8])
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", **kwargs)
    ax.set_title(title, fontsize=9)
    _off(ax)


def _bundled_model():
    from napari_unet_cells.core.registry import bundled_model_path, resolve_model

    path = bundled_model_path()
    if path is None:  # pragma: no cover - the package ships one
        raise RuntimeError("no bundled model in core/models: the figures need it")
    return resolve_model(path)


def _cell_probability(image: np.ndarray, model, tile: int | None = None) -> np.ndarray:
    """Cell probability (Y, X) float32 from ``core.predict.predict_probabilities_iter``."""
    from napari_unet_cells.core.config import PredictConfig
    from napari_unet_cells.core.predict import predict_probabilities_iter
    from napari_unet_cells.core.progress import run

    config = PredictConfig(device="cpu", tile=tile, batch_size=1)
    return run(predict_probabilities_iter(image, model, config))


def _best_window(score: np.ndarray, size: int) -> tuple[int, int]:
    """(y0, x0) of the size x size window with the largest sum of ``score``."""
    integral = np.pad(score.astype(np.float64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (
        integral[size:, size:]
        - integral[:-size, size:]
        - integral[size:, :-size]
        + integral[:-size, :-size]
    )
    y0, x0 = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y0), int(x0)


# --------------------------------------------------------------------------------------
# 1. architecture and tile arithmetic
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureMap:
    """One box of the U-Net diagram: a layer's output as ``core.unet.UNet`` computes it.

    name: the module's name in the network ("input", "down.0.0", "up.3.up", "head", ...).
    kind: "input", "conv" (3x3 + ReLU), "upconv" (2x2 up-convolution) or "head" (1x1).
    path: "down" (contracting), "up" (expanding) or "out".
    level: 0 = full resolution ... depth = the bottom.
    channels, size: the feature map's channels and side length (pixels).
    concat: for the first 3x3 convolution of an expanding level, the channels of its
        input (the up-convolved map concatenated with the cropped skip), else 0.
    """

    name: str
    kind: str
    path: str
    level: int
    channels: int
    size: int
    concat: int = 0


def unet_feature_maps(config=None, input_size: int = 572) -> list[FeatureMap]:
    """The feature maps of ``core.unet.UNet(config)`` for a square input, in execution order.

    The network is built on torch's "meta" device (shapes without data) and run once;
    forward hooks on every convolution record the output shapes. So the sizes are what
    the plugin's network produces, not a formula. Default config: the paper's (base 64,
    depth 4): 572 px in, 388 px out.
    """
    import torch

    from napari_unet_cells.core.config import ModelConfig
    from napari_unet_cells.core.unet import UNet

    config = config or ModelConfig()
    with torch.device("meta"):
        net = UNet(config)
    depth = config.depth
    maps = [FeatureMap("input", "input", "down", 0, config.in_channels, input_size)]
    hooks = []

    def record(name):
        def hook(module, inputs, output):
            parts = name.split(".")
            concat = 0
            if parts[0] == "down":
                kind, path, level = "conv", "down", int(parts[1])
            elif parts[0] == "up":
                level = depth - 1 - int(parts[1])
                kind, path = ("upconv" if parts[2] == "up" else "conv"), "up"
                if parts[2:] == ["conv", "0"]:
                    concat = int(inputs[0].shape[1])
            else:
                kind, path, level = "head", "out", 0
            size = int(output.shape[-1])
            maps.append(FeatureMap(name, kind, path, level, int(output.shape[1]), size, concat))

        return hook

    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            hooks.append(module.register_forward_hook(record(name)))
    with torch.no_grad():
        net(torch.empty(1, config.in_channels, input_size, input_size, device="meta"))
    for hook in hooks:
        hook.remove()
    return maps


def _unet_counts(config) -> tuple[int, int]:
    """(parameters, convolution layers) of ``UNet(config)``, built on the meta device."""
    import torch

    from napari_unet_cells.core.unet import UNet, count_conv_layers, count_parameters

    with torch.device("meta"):
        net = UNet(config)
    return count_parameters(net), count_conv_layers(net)


def fig_architecture(out_dir: Path, quick: bool = False) -> list[Path]:
    """The U-Net diagram (paper Fig. 1) with sizes and channels from our network."""
    from napari_unet_cells.core.config import ModelConfig

    config = ModelConfig()  # the paper's network
    input_size = 572
    maps = unet_feature_maps(config, input_size)
    n_params, n_convs = _unet_counts(config)
    depth = config.depth

    def width(c: int) -> float:
        return 0.1 + 0.12 * np.log2(max(c, 1))

    def height(s: int) -> float:
        return 3.2 * s / input_size

    gap, level_gap = 0.32, 0.6
    # each level hangs below the one above it (true-scale heights, no vertical overlap)
    top = [0.0]
    for level in range(1, depth + 1):
        tallest = max(height(m.size) for m in maps if m.level == level - 1)
        top.append(top[-1] - tallest - level_gap)
    boxes: dict[str, tuple[float, float, float, float]] = {}  # name -> x0, y0, w, h
    row_down = {
        lv: {m.name for m in maps if m.path == "down" and m.level == lv} for lv in range(depth + 1)
    }
    x = 0.0
    last = None
    for m in maps:
        w, h = width(m.channels), height(m.size)
        if last is None:
            x = 0.0
        elif m.level == last.level:  # next box in the same row
            x = boxes[last.name][0] + boxes[last.name][2] + gap
            if m.kind == "head":
                x += 0.2
        elif m.level > last.level:  # pooling: straight down from the last box's left part
            x = boxes[last.name][0]
        else:  # up-convolution: up from the last box's right part, clear of the left side
            lx, _, lw, _ = boxes[last.name]
            down_end = max(
                bx + bw for n, (bx, _, bw, _) in boxes.items() if n in row_down[m.level]
            )
            x = max(lx + lw - w, down_end + 3.3 + w)
        boxes[m.name] = (x, top[m.level] - h, w, h)
        last = m

    fig, ax = _subplots(1, 1, (WIDTH, 6.0))
    colours = {"conv": "#4a7fb5", "pool": "#c0392b", "up": "#27ae60", "copy": "#7f8c8d"}
    colours["head"] = "#16a085"

    def arrow(p, q, colour, lw=1.6):
        ax.add_patch(
            FancyArrowPatch(p, q, arrowstyle="-|>", mutation_scale=9, color=colour, lw=lw)
        )

    skip_of = {}
    for m in maps:
        x, y, w, h = boxes[m.name]
        ax.add_patch(Rectangle((x, y), w, h, facecolor="#a9c4e4", edgecolor="#1d3557", lw=0.8))
        ax.text(x + w / 2, y + h + 0.04, f"{m.channels}", ha="center", va="bottom", fontsize=7)
        if m.kind != "conv" or m.name.endswith(".2"):
            if h > 1.0:
                ax.text(
                    x - 0.03,
                    y,
                    f"{m.size}²",
                    ha="right",
                    va="bottom",
                    fontsize=6.5,
                    rotation=90,
                    color="#333333",
                )
            else:
                ax.text(
                    x + w / 2,
                    y - 0.04,
                    f"{m.size}²",
                    ha="center",
                    va="top",
                    fontsize=6.5,
                    color="#333333",
                )
        if m.kind == "conv" and m.path == "down" and m.name.endswith(".2"):
            skip_of[m.level] = m
        if m.kind == "upconv":
            skip = skip_of[m.level]
            ax.add_patch(
                Rectangle((x - w, y), w, h, facecolor="white", edgecolor="#1d3557", lw=0.8)
            )
            ax.text(
                x - w / 2, y + h + 0.04, f"{skip.channels}", ha="center", va="bottom", fontsize=7
            )
            sx, _, sw, _ = boxes[skip.name]
            yy = y + h / 2
            arrow((sx + sw + 0.05, yy), (x - w - 0.05, yy), colours["copy"], 1.3)
            ax.text(
                (sx + sw + x - w) / 2,
                yy + 0.06,
                f"copy and crop {skip.size}² → {m.size}²",
                ha="center",
                va="bottom",
                fontsize=7,
                color=colours["copy"],
            )
    # arrows along the network, in execution order
    for a, b in itertools.pairwise(maps):
        ax0, ay0, aw, ah = boxes[a.name]
        bx0, by0, bw, bh = boxes[b.name]
        if a.level == b.level:
            colour = colours["head"] if b.kind == "head" else colours["conv"]
            yy = max(ay0, by0) + min(ah, bh) / 2
            arrow(
                (ax0 + aw + 0.02, yy), (bx0 - (bw if b.kind == "upconv" else 0) - 0.02, yy), colour
            )
        elif b.level > a.level:  # max-pooling
            xx = ax0 + 0.12 * min(aw, bw)
            arrow((xx, ay0 - 0.02), (xx, by0 + bh + 0.02), colours["pool"])
        else:  # up-convolution
            xa, xb = ax0 + aw - 0.12 * min(aw, bw), bx0 + bw - 0.12 * min(aw, bw)
            arrow((xa, ay0 + ah + 0.02), (xb, by0 - 0.02), colours["up"])
    legend = [
        ("conv 3x3 + ReLU, unpadded (-2 px)", colours["conv"]),
        ("max pool 2x2 (size / 2)", colours["pool"]),
        ("up-conv 2x2 (size x 2, channels / 2)", colours["up"]),
        ("copy and crop (white boxes)", colours["copy"]),
        ("conv 1x1 (one channel per class)", colours["head"]),
    ]
    right = max(x + w for x, _, w, _ in boxes.values())
    lx = right - 5.2
    for i, (text, colour) in enumerate(legend):
        y = top[depth] + 0.9 - 0.36 * i
        arrow((lx, y), (lx + 0.7, y), colour)
        ax.text(lx + 0.85, y, text, va="center", fontsize=8)
    first, final = maps[0], maps[-1]
    ax.set_title(
        f"core.unet.UNet(ModelConfig()) - the paper's network (base {config.base}, depth "
        f"{depth}, {config.padding} convolutions): {first.size} px in, {final.size} px out; "
        f"{n_params:,} parameters, {n_convs} convolution layers.\n"
        "Numbers above the boxes: channels; beside them: side length in px (both recorded "
        "from one pass through the network)",
        fontsize=9,
    )
    bottom = min(min(y for _, y, _, _ in boxes.values()) - 0.3, y - 0.3)
    ax.set_xlim(-0.4, right + 0.2)
    ax.set_ylim(bottom, 0.35)
    fig.set_size_inches(WIDTH, WIDTH * (0.35 - bottom) / (right + 0.6) + 0.8)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.tight_layout()
    return [_save(fig, out_dir, "concept_unet_architecture")]


def fig_tile_sizes(out_dir: Path, quick: bool = False) -> list[Path]:
    """Valid input sizes, output = input - 2 x 92 px, and what that costs per tile."""
    from napari_unet_cells.core.checkpoint import read_model_info
    from napari_unet_cells.core.config import ModelConfig, config_from_dict
    from napari_unet_cells.core.data import choose_tile
    from napari_unet_cells.core.device import resolve_device
    from napari_unet_cells.core.errors import UNetCellsError
    from napari_unet_cells.core.predict import auto_tile_and_batch
    from napari_unet_cells.core.registry import bundled_model_path
    from napari_unet_cells.core.unet import (
        context_margin,
        min_input_size,
        output_size,
        valid_input_sizes,
    )

    info = read_model_info(bundled_model_path())
    bundled = config_from_dict(ModelConfig, info["model_config"])
    paper = ModelConfig()
    depth = paper.depth
    margin = context_margin(depth)
    sizes = valid_input_sizes(700 if quick else 1200, depth)
    outs = [output_size(s, depth) for s in sizes]
    train_in, train_out = choose_tile(bundled, [(2048, 2048)])
    cpu_tile, _ = auto_tile_and_batch(_bundled_model().config, resolve_device("cpu"))
    try:
        output_size(570, depth)
        refusal = ""
    except UNetCellsError as err:
        refusal = str(err)

    fig, (ax1, ax2) = _subplots(1, 2, (WIDTH, 4.6))
    ax1.plot(sizes, sizes, color="#bbbbbb", lw=1, label="output = input (no context lost)")
    step, smallest = 2**depth, min_input_size(depth)
    rule = f"valid input sizes ({step}k + {smallest % step}, from {smallest} px)"
    ax1.plot(sizes, outs, "o", ms=2.5, color="#1d3557", label=rule)
    ax1.fill_between(sizes, outs, sizes, color="#f4d35e", alpha=0.35)
    mid = sizes[len(sizes) // 2]
    ax1.annotate(
        f"{2 * margin} px = 2 x {margin} px of context\n(lost by unpadded convolutions)",
        (mid, output_size(mid, depth) + margin),
        xytext=(min_input_size(depth) + 10, mid + 60),
        fontsize=8,
        arrowprops={"arrowstyle": "->", "color": "#555555"},
    )
    marks = [
        (572, "paper: 572 -> 388", "#c0392b"),
        (train_in, f"bundled model, training tile: {train_in} -> {train_out}", "#27ae60"),
    ]
    if cpu_tile <= sizes[-1]:
        marks.append(
            (
                cpu_tile,
                f"bundled model, automatic CPU tile: {cpu_tile} -> {output_size(cpu_tile, depth)}",
                "#8e44ad",
            )
        )
    for size, text, colour in marks:
        ax1.plot([size], [output_size(size, depth)], "s", ms=7, color=colour, label=text)
    ax1.set_xlabel("network input tile (px per side)")
    ax1.set_ylabel("output tile (px per side)")
    ax1.set_title(f"Depth {depth}, unpadded: output = input - {2 * margin} px", fontsize=9)
    ax1.legend(fontsize=7.5, loc="upper left")
    ax1.set_xlim(0, sizes[-1] + 20)
    ax1.set_ylim(0, sizes[-1] + 20)
    ax1.text(
        0.98,
        0.03,
        "Asking for 570 px:\n" + _wrap(refusal, 52),
        transform=ax1.transAxes,
        ha="right",
        va="bottom",
        fontsize=6.8,
        family="monospace",
        multialignment="left",
        bbox={"facecolor": "white", "edgecolor": "#cccccc"},
    )

    useful = [(o / s) ** 2 for s, o in zip(sizes, outs, strict=True)]
    ax2.plot(sizes, useful, "o-", ms=2.5, lw=1, color="#1d3557")
    for size, _, colour in marks:
        frac = (output_size(size, depth) / size) ** 2
        ax2.plot([size], [frac], "s", ms=7, color=colour)
        ax2.annotate(
            f"{frac:.0%}",
            (size, frac),
            xytext=(6, -12),
            textcoords="offset points",
            fontsize=8,
            color=colour,
        )
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("network input tile (px per side)")
    ax2.set_ylabel("share of the input area that becomes output")
    ax2.set_title("Bigger tiles spend less of their work on context", fontsize=9)
    ax2.grid(alpha=0.3)
    fig.suptitle(
        f"Tile arithmetic of core.unet (valid_input_sizes, output_size); bundled model: "
        f"base {bundled.base}, depth {bundled.depth}, {bundled.padding} (from its file header)",
        fontsize=9,
    )
    fig.tight_layout()
    return [_save(fig, out_dir, "concept_tile_sizes")]


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


# --------------------------------------------------------------------------------------
# 2. overlap-tile with mirroring
# --------------------------------------------------------------------------------------


def naive_blocks_probability(plane: np.ndarray, grid, predictor, channel: int) -> np.ndarray:
    """Each write region of ``grid`` predicted as if it were a separate image.

    plane: (Y, X, 1) float32, normalised. Every block is tiled on its own
    (``core.tiling.plan_tiles`` + ``core.predict.predict_tiles``), so the context at its
    edges is the block mirrored, not the real neighbouring pixels: this is tiling
    *without* shared context, for comparison with the overlap-tile strategy.
    """
    from napari_unet_cells.core.predict import predict_tiles
    from napari_unet_cells.core.tiling import plan_tiles

    out = np.empty(plane.shape[:2], np.float32)
    for tile in grid.tiles:
        y0, y1, x0, x1 = tile.write
        block = np.ascontiguousarray(plane[y0:y1, x0:x1])
        sub = plan_tiles(block.shape[:2], 4096, grid.depth, grid.padding)
        for _ in predict_tiles(block, sub, predictor, out[y0:y1, x0:x1], channel=channel):
            pass
    return out


def fig_overlap_tile(out_dir: Path, quick: bool = False) -> list[Path]:
    """Overlap-tile: the plan with mirroring, and the proof that it leaves no seams."""
    from napari_unet_cells.core.normalize import normalize
    from napari_unet_cells.core.predict import TorchPredictor, cell_class_index
    from napari_unet_cells.core.synthetic import synthetic_cells
    from napari_unet_cells.core.tiling import plan_tiles

    model = _bundled_model()
    cfg = model.config
    side = 192 if quick else 400
    image, _ = synthetic_cells((side, side), seed=11)
    tile_request = 300  # a valid size (16k + 12); the plan balances the tiles over the image
    grid = plan_tiles(image.shape, tile_request, cfg.depth, cfg.padding)
    margin = grid.margin

    whole = _cell_probability(image, model, tile=4096)
    tiled = _cell_probability(image, model, tile=grid.tile_shape[0])
    plane = normalize(image, model.normalization)[..., None]
    predictor = TorchPredictor(model.net, "cpu")
    naive = naive_blocks_probability(plane, grid, predictor, cell_class_index(model))
    diff_tiled = np.abs(tiled - whole)
    diff_naive = np.abs(naive - whole)

    # (a) the plan, drawn on the image with its mirrored surroundings
    fig = Figure(figsize=(WIDTH, 7.6))
    gs = fig.add_gridspec(2, 3, width_ratios=[1.35, 1, 1])
    ax = fig.add_subplot(gs[:, 0])
    padded = np.pad(image.astype(np.float32), margin, mode="reflect")
    extent = (-margin - 0.5, side + margin - 0.5, side + margin - 0.5, -margin - 0.5)
    lo, hi = np.percentile(image, [1, 99.8])
    ax.imshow(padded, cmap="gray", vmin=lo, vmax=hi, extent=extent, interpolation="nearest")
    veil = np.zeros((*padded.shape, 4))
    veil[..., :3] = (0.2, 0.4, 1.0)
    veil[..., 3] = 0.28
    veil[margin:-margin, margin:-margin, 3] = 0.0
    ax.imshow(veil, extent=extent, interpolation="nearest")

    def outline(region, **style):  # region: (y0, y1, x0, x1) in pixels
        y0, y1, x0, x1 = region
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, **style))

    for tile in grid.tiles:
        outline(tile.write, edgecolor="#f1c40f", lw=0.7, alpha=0.8)
    ax.add_patch(Rectangle((-0.5, -0.5), side, side, fill=False, edgecolor="white", lw=2))
    show = grid.tiles[0]
    ry0, ry1, rx0, rx1 = show.read
    wy0, wy1, wx0, wx1 = show.write
    outline(show.read, edgecolor="#00d5ff", lw=2, ls="--")
    outline(show.write, edgecolor="#ff3b3b", lw=2.2)
    box = {"facecolor": "black", "alpha": 0.6, "edgecolor": "none", "pad": 1.5}
    ax.text(
        rx0 + 3,
        ry0 + 4,
        f"input tile {ry1 - ry0}x{rx1 - rx0} px",
        color="#00d5ff",
        fontsize=8,
        va="top",
        fontweight="bold",
        bbox=box,
    )
    ax.text(
        wx0 + 4,
        wy0 + 4,
        f"its output\n{wy1 - wy0}x{wx1 - wx0} px",
        color="#ff6b6b",
        fontsize=8,
        va="top",
        fontweight="bold",
        bbox=box,
    )
    ax.text(
        side / 2,
        -margin / 2,
        f"mirrored context ({margin} px, tinted)",
        color="white",
        ha="center",
        va="center",
        fontsize=8,
    )
    ax.set_xlim(-margin - 0.5, side + margin - 0.5)
    ax.set_ylim(side + margin - 0.5, -margin - 0.5)
    ax.set_title(
        f"{side}x{side} px image (white frame) and its mirrored border;\n"
        f"{len(grid)} tiles: output regions (yellow) cover it exactly",
        fontsize=9,
    )
    ax.tick_params(labelsize=7)

    def panel(pos, data, title, cmap="magma", vmax=1.0):
        a = fig.add_subplot(gs[pos])
        im = a.imshow(data, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
        a.set_title(title, fontsize=8.5)
        _off(a)
        return a, im

    panel((0, 1), whole, "whole image in one piece:\ncell probability")
    a, im = panel(
        (0, 2),
        diff_tiled,
        f"overlap-tile ({len(grid)} tiles, mirrored context)\n"
        f"|tiled - whole|: max {diff_tiled.max():.1e}",
    )
    fig.colorbar(im, ax=a, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    panel((1, 1), naive, "each output region predicted\nas a separate image (no shared context)")
    a, im = panel(
        (1, 2),
        diff_naive,
        f"|separate pieces - whole|: max {diff_naive.max():.2f},\n"
        f"mean {diff_naive.mean():.3f} (errors along the tile edges, grey)",
    )
    for tile in grid.tiles:
        y0, y1, x0, x1 = tile.write
        a.add_patch(
            Rectangle(
                (x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="#888888", lw=0.5
            )
        )
    fig.colorbar(im, ax=a, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    fig.suptitle(
        "Overlap-tile prediction (core.tiling.plan_tiles, core.predict) with the bundled model "
        f"(depth {cfg.depth}: {margin} px context per side); colour scale 0-1 in all four panels",
        fontsize=9,
    )
    fig.tight_layout()
    return [_save(fig, out_dir, "concept_overlap_tile")]


# --------------------------------------------------------------------------------------
# 3. the weight map
# --------------------------------------------------------------------------------------


def _touching_crop(size: int, seed: int, crop: int):
    """(image, labels, (y0, x0)) of a synthetic image and the crop richest in contacts."""
    from napari_unet_cells.core.synthetic import synthetic_cells
    from napari_unet_cells.core.weightmap import separation_target

    image, labels = synthetic_cells((size, size), seed=seed)
    carved = (labels > 0) & (separation_target(labels) == 0)
    y0, x0 = _best_window(carved, crop)
    return image, labels, (y0, x0)


def fig_weight_map(out_dir: Path, quick: bool = False) -> list[Path]:
    """Labels, target, w_c, w (paper and fiji); and a w0 x sigma grid with one colour bar."""
    from napari_unet_cells.core.config import WeightMapConfig
    from napari_unet_cells.core.weightmap import separation_target, weight_map

    size, crop = (160, 80) if quick else (256, 96)
    image, labels, (y0, x0) = _touching_crop(size, seed=5, crop=crop)
    window = np.s_[y0 : y0 + crop, x0 : x0 + crop]
    paper = WeightMapConfig.preset("paper")
    fiji = WeightMapConfig.preset("fiji")
    # computed on the whole image, then cropped: cells at the crop's edge see their
    # real neighbours, as in training
    target = separation_target(labels, paper)[window]
    w_c = weight_map(labels, config=dataclasses.replace(paper, w0=0.0))[window]
    w_paper = weight_map(labels, config=paper)[window]
    w_fiji = weight_map(labels, config=fiji)[window]

    fig = Figure(figsize=(WIDTH, 3.0))
    gs = fig.add_gridspec(1, 6, width_ratios=[1, 1, 1, 1, 1, 0.06], wspace=0.08)
    axes = [fig.add_subplot(gs[0, i]) for i in range(5)]
    _grey(axes[0], image[window], "image")
    axes[1].imshow(_label_rgb(labels[window]), interpolation="nearest")
    axes[1].set_title("labels: one colour per cell", fontsize=8.5)
    axes[2].imshow(target, cmap="gray", interpolation="nearest")
    axes[2].set_title(
        f"training target (white = cell):\nborders carved, border_width = {paper.border_width}",
        fontsize=8.5,
    )
    vmax = float(max(w_paper.max(), w_c.max()))
    cells, background = float(w_c[target == 1].max()), float(w_c[target == 0].min())
    for ax, data, title in (
        (axes[3], w_c, f"w_c alone (w0 = 0): cells {cells:.2f},\nbackground {background:.2f}"),
        (
            axes[4],
            w_paper,
            f"w, paper preset (w0 = {paper.w0:g},\nsigma = {paper.sigma:g} px): "
            f"max {w_paper.max():.1f}",
        ),
    ):
        im = ax.imshow(data, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=8.5)
    fig.colorbar(im, cax=fig.add_subplot(gs[0, 5])).ax.tick_params(labelsize=7)
    for ax in axes:
        _off(ax)
    fig.suptitle(
        f"core.weightmap on a {crop}x{crop} px crop of touching synthetic nuclei (computed on "
        f"the whole {size}x{size} image, then cropped); w_c and w share one colour scale",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.01, right=0.96, top=0.76, bottom=0.02)
    paths = [_save(fig, out_dir, "concept_weight_map")]

    # the knobs: w0 x sigma with one colour bar; the fiji preset beside it, its own scale
    w0s = (5.0, 10.0) if quick else (5.0, 10.0, 20.0)
    sigmas = (2.0, 5.0) if quick else (2.0, 5.0, 10.0)
    maps = {
        (w0, s): weight_map(labels, config=WeightMapConfig(w0=w0, sigma=s))[window]
        for w0 in w0s
        for s in sigmas
    }
    vmax = max(float(m.max()) for m in maps.values())
    rows, cols = len(w0s), len(sigmas)
    fig = Figure(figsize=(WIDTH, 2.3 * rows + 0.5))
    gs = fig.add_gridspec(
        rows, cols + 3, width_ratios=[1] * cols + [0.06, 0.35, 1], wspace=0.06, hspace=0.22
    )
    for i, w0 in enumerate(w0s):
        for j, s in enumerate(sigmas):
            ax = fig.add_subplot(gs[i, j])
            im = ax.imshow(maps[w0, s], cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
            tag = "  (paper)" if (w0, s) == (paper.w0, paper.sigma) else ""
            ax.set_title(f"w0 = {w0:g}, sigma = {s:g} px{tag}", fontsize=8.5)
            _off(ax)
    fig.colorbar(im, cax=fig.add_subplot(gs[:, cols]), label="w(x), all panels on the left")
    ax = fig.add_subplot(gs[0, cols + 2])
    im = ax.imshow(w_fiji, cmap="viridis", vmin=0, interpolation="nearest")
    ax.set_title(
        f"fiji preset (w0 = {fiji.w0:g}, sigma = {fiji.sigma:g} px,\n"
        f"background {fiji.background_weight:g}, balance_sigma "
        f"{fiji.balance_sigma:g} px)",
        fontsize=8.5,
    )
    _off(ax)
    cbar = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.06, pad=0.04)
    cbar.ax.tick_params(labelsize=7)
    cbar.set_label("its own scale", fontsize=8)
    fig.suptitle(
        "What w0 (height of the border bonus) and sigma (its reach, px) change "
        f"(same {crop}x{crop} px crop)",
        fontsize=9,
    )
    fig.subplots_adjust(left=0.01, right=0.99, top=0.9, bottom=0.02)
    paths.append(_save(fig, out_dir, "concept_weight_map_knobs"))
    return paths


# --------------------------------------------------------------------------------------
# 4. elastic deformation
# --------------------------------------------------------------------------------------


def fig_elastic(out_dir: Path, quick: bool = False) -> list[Path]:
    """The paper's elastic deformation on a training tile: grid, image, labels."""
    from napari_unet_cells.core.augment import augment_batch, draw_params
    from napari_unet_cells.core.config import AugmentConfig, ModelConfig
    from napari_unet_cells.core.data import choose_tile
    from napari_unet_cells.core.normalize import normalize
    from napari_unet_cells.core.synthetic import synthetic_cells

    paper_aug = AugmentConfig()
    # only the elastic part of the recipe, so the pictures show the deformation alone
    elastic = dataclasses.replace(
        paper_aug, flip=False, rotate90=False, gain=0.0, offset=0.0, noise=0.0
    )
    tile, _ = choose_tile(ModelConfig(base=16), [(2048, 2048)])
    if quick:
        tile = 204
    image, labels = synthetic_cells((tile, tile), seed=21)
    image = normalize(image)
    step = 20
    lines = np.zeros((tile, tile), np.float32)
    lines[::step, :] = 1.0
    lines[:, ::step] = 1.0
    seeds = (1, 2, 3)
    params = [draw_params(np.random.default_rng(s), elastic)[0] for s in seeds]
    n = len(params)

    def stack(a):
        return np.repeat(a[None], n, axis=0)

    # the training call: image and weight map bilinear, target and labels nearest. The
    # grid rides in the weight map's place (bilinear, as the weight map is in training).
    binary = (labels > 0).astype(np.uint8)
    batch = augment_batch(params, stack(image), stack(lines), stack(binary), stack(labels))
    # the same deformation with the labels in the bilinear channel: what is NOT done
    smeared = augment_batch(params, stack(image), stack(labels.astype(np.float32)), stack(binary))
    d_image = batch.image[:, 0].numpy()
    d_lines = batch.weight.numpy()
    d_labels = batch.labels.numpy()
    d_smeared = smeared.weight[0].numpy()

    fig, axes = _subplots(4, n + 1, (WIDTH * 0.8, 10.2))
    g = paper_aug.elastic_grid
    coords = np.linspace(0, tile - 1, g)
    gy, gx = np.meshgrid(coords, coords, indexing="ij")
    zoom_size = max(24, tile // 8)
    zy, zx = _best_window(_edges(labels), zoom_size)
    zoom = np.s_[zy : zy + zoom_size, zx : zx + zoom_size]
    lo, hi = np.percentile(image, [1, 99.8])
    for j in range(n + 1):
        if j == 0:
            grid_img, img, lab, title = lines, image, labels, f"original {tile}x{tile} px tile"
        else:
            p = params[j - 1]
            grid_img, img, lab = d_lines[j - 1], d_image[j - 1], d_labels[j - 1]
            rms = float(np.sqrt((p.displacement**2).mean()))
            title = f"random draw, seed {seeds[j - 1]}\n(RMS of the 3x3 vectors {rms:.1f} px)"
            dy, dx = p.displacement
            axes[0, j].quiver(
                gx,
                gy,
                dx,
                dy,
                color="#c0392b",
                angles="xy",
                scale_units="xy",
                scale=0.2,
                width=0.012,
                zorder=3,
            )
            axes[0, j].plot(gx, gy, "o", color="#c0392b", ms=4)
        axes[0, j].imshow(grid_img, cmap="gray_r", vmin=0, vmax=1, interpolation="bilinear")
        axes[0, j].set_title(title, fontsize=8.5)
        axes[1, j].imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        axes[2, j].imshow(_label_rgb(lab), interpolation="nearest")
        axes[2, j].add_patch(
            Rectangle(
                (zx - 0.5, zy - 0.5), zoom_size, zoom_size, fill=False, edgecolor="white", lw=1.2
            )
        )
    new_ids = np.setdiff1d(np.unique(d_labels[0]), np.unique(labels)).size
    blended = int((np.abs(d_smeared - np.round(d_smeared)) > 1e-3).sum())
    zooms = [
        (image[zoom], "zoom: original image"),
        (d_image[0][zoom], f"zoom, seed {seeds[0]}: image\n(bilinear: smooth)"),
        (
            _label_rgb(d_labels[0])[zoom],
            f"zoom, seed {seeds[0]}: labels, nearest\n({new_ids} new ids in the tile)",
        ),
        (
            _label_rgb(np.round(d_smeared).astype(int).clip(0, labels.max()))[zoom],
            f"labels bilinear (NOT done):\n{blended} px in the tile blended",
        ),
    ]
    for ax, (data, title) in zip(axes[3], zooms, strict=True):
        if data.ndim == 2:
            ax.imshow(data, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        else:
            ax.imshow(data, interpolation="nearest")
        ax.set_title(title, fontsize=8.5)
    for ax in axes.ravel():
        _off(ax)
    for row, name in enumerate(("regular grid", "image", "labels", "zoom (white box)")):
        axes[row, 0].set_ylabel(name, fontsize=9)
    fig.suptitle(
        f"core.augment: displacements on a {g}x{g} grid, Gaussian with "
        f"{paper_aug.elastic_sigma:g} px standard deviation (red arrows, drawn 5x longer),\n"
        "upsampled bicubically to every pixel; image resampled bilinearly, labels by nearest "
        "neighbour (augment_batch, as in training)",
        fontsize=9,
    )
    fig.tight_layout()
    return [_save(fig, out_dir, "concept_elastic_deformation")]


def _edges(labels: np.ndarray) -> np.ndarray:
    """Pixels where the label changes to a right or lower neighbour (bool)."""
    out = np.zeros(labels.shape, bool)
    out[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    out[:-1, :] |= labels[:-1, :] != labels[1:, :]
    return out


# --------------------------------------------------------------------------------------
# 5. separating touching cells
# --------------------------------------------------------------------------------------


def fig_separation(out_dir: Path, quick: bool = False) -> list[Path]:
    """Ground truth, carved target, probability, plain threshold vs seeded watershed."""
    from napari_unet_cells.core.instances import (
        instance_defaults,
        probabilities_to_labels,
        seed_components,
    )
    from napari_unet_cells.core.metrics import split_merge_counts
    from napari_unet_cells.core.synthetic import synthetic_cells
    from napari_unet_cells.core.weightmap import separation_target

    model = _bundled_model()
    ours = instance_defaults(model)
    plain = dataclasses.replace(ours, seed_threshold=None)
    size, crop = (256, 80) if quick else (384, 96)
    image, truth = synthetic_cells((size, size), seed=0)
    prob = _cell_probability(image, model)
    lab_plain = probabilities_to_labels(prob, plain)
    lab_ours = probabilities_to_labels(prob, ours)
    # the crop where hysteresis fixes the most merges (objects covering >= 2 true cells)
    merged = _merged_mask(truth, lab_plain) & ~_merged_mask(truth, lab_ours)
    y0, x0 = _best_window(merged, crop)
    w = np.s_[y0 : y0 + crop, x0 : x0 + crop]
    seeds, _ = seed_components(prob, ours)

    def counts(pred):
        t, p = truth[w], pred[w]
        merges = split_merge_counts(t, p)["merges"]
        return np.unique(p[p > 0]).size, merges

    n_true = np.unique(truth[w][truth[w] > 0]).size
    n_plain, m_plain = counts(lab_plain)
    n_ours, m_ours = counts(lab_ours)
    profile = _profile_between(
        truth[w], lab_plain[w], lab_ours[w], prob[w], ours.threshold, ours.seed_threshold
    )

    fig, axes = _subplots(2, 4, (WIDTH, 6.2))
    _grey(axes[0, 0], image[w], f"image ({crop}x{crop} px crop)")
    axes[0, 1].imshow(_label_rgb(truth[w]), interpolation="nearest")
    axes[0, 1].set_title(f"ground truth: {n_true} cells", fontsize=9)
    axes[0, 2].imshow(separation_target(truth)[w], cmap="gray", interpolation="nearest")
    axes[0, 2].set_title(
        "training target: touching cells\ncarved apart (separation_target)", fontsize=9
    )
    im = axes[0, 3].imshow(prob[w], cmap="magma", vmin=0, vmax=1, interpolation="nearest")
    axes[0, 3].set_title("bundled model: cell probability", fontsize=9)
    fig.colorbar(im, ax=axes[0, 3], fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    axes[1, 0].imshow(_label_rgb(lab_plain[w]), interpolation="nearest")
    axes[1, 0].set_title(
        f"components of probability > {plain.threshold:g}:\n"
        f"{n_plain} objects, {m_plain} merged (white outline)",
        fontsize=9,
    )
    axes[1, 1].imshow(_label_rgb(seeds[w], seed=5), interpolation="nearest")
    axes[1, 1].set_title(f"seeds: probability > {ours.seed_threshold:g}", fontsize=9)
    axes[1, 2].imshow(_label_rgb(lab_ours[w]), interpolation="nearest")
    axes[1, 2].set_title(
        f"seeds flooded over probability > {ours.threshold:g}:\n{n_ours} objects, {m_ours} merged",
        fontsize=9,
    )
    for ax, pred in ((axes[1, 0], lab_plain), (axes[1, 2], lab_ours)):
        bad = _merged_mask(truth[w], pred[w])
        if bad.any():
            ax.contour(bad, levels=[0.5], colors="white", linewidths=1.3)
    for ax in axes.ravel()[:7]:
        _off(ax)
    ax = axes[1, 3]
    if profile is not None:
        (ay, ax_), (by, bx), values = profile
        for a in (axes[0, 3], axes[1, 0], axes[1, 2]):
            a.plot([ax_, bx], [ay, by], color="#00d5ff", lw=1.5)
            a.plot([ax_], [ay], "o", color="#00d5ff", ms=4)
        distance = np.linspace(0, np.hypot(by - ay, bx - ax_), values.size)
        ax.plot(distance, values, color="#1d3557")
        ax.axhline(
            plain.threshold, color="#c0392b", ls="--", lw=1, label=f"threshold {plain.threshold:g}"
        )
        ax.axhline(
            ours.seed_threshold,
            color="#27ae60",
            ls="--",
            lw=1,
            label=f"seed threshold {ours.seed_threshold:g}",
        )
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("px along the cyan line (dot = start)", fontsize=8)
        ax.set_ylabel("cell probability", fontsize=8)
        ax.set_title("probability from one cell's centre\nto its neighbour's", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
        ax.tick_params(labelsize=7)
    else:  # pragma: no cover - the crop is chosen to contain a fixed merge
        ax.axis("off")
    fig.suptitle(
        "core.instances.probabilities_to_labels with the bundled model's stored settings "
        f"(instance_defaults: threshold {ours.threshold:g}, seed_threshold "
        f"{ours.seed_threshold:g}, min_size {ours.min_size}, min_confidence "
        f"{ours.min_confidence:g})\nvs the same settings without seeds (seed_threshold=None)",
        fontsize=9,
    )
    fig.tight_layout()
    return [_save(fig, out_dir, "concept_separation")]


def _merged_mask(truth: np.ndarray, pred: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Pixels of predicted objects that hold most of the area of two or more true cells."""
    n_t, n_p = int(truth.max()) + 1, int(pred.max()) + 1
    overlap = np.bincount(
        (truth.astype(np.int64) * n_p + pred).ravel(), minlength=n_t * n_p
    ).reshape(n_t, n_p)
    inside = overlap[1:, 1:] > fraction * overlap[1:, :].sum(axis=1, keepdims=True)
    bad = np.flatnonzero(inside.sum(axis=0) >= 2) + 1
    return np.isin(pred, bad)


def _profile_between(truth, plain, ours, prob, low: float, high: float):
    """A line between the centres of two touching true cells that ``plain`` merges and
    ``ours`` separates, whose probability dips below ``high`` but not below ``low`` (the
    case seeds fix), preferring long lines away from the crop's edge:
    ((y, x) start, (y, x) end, probability along it), or None."""
    from scipy import ndimage as ndi

    ids = np.unique(truth[truth > 0])
    centres = dict(zip(ids, ndi.center_of_mass(truth > 0, truth, ids), strict=True))
    best = None
    for obj in np.unique(plain[plain > 0]):
        inside = truth[plain == obj]
        cells, n = np.unique(inside[inside > 0], return_counts=True)
        cells = [c for c, k in zip(cells, n, strict=True) if k > 0.5 * (truth == c).sum()]
        for i, a in enumerate(cells):
            for b in cells[i + 1 :]:
                oa = np.bincount(ours[truth == a]).argmax()
                ob = np.bincount(ours[truth == b]).argmax()
                if oa == ob or oa == 0 or ob == 0:
                    continue
                if not (ndi.binary_dilation(truth == a) & (truth == b)).any():
                    continue
                pa, pb = np.array(centres[a]), np.array(centres[b])
                length = float(np.hypot(*(pa - pb)))
                count = int(np.ceil(length * 4)) + 1
                line = [np.linspace(pa[0], pb[0], count), np.linspace(pa[1], pb[1], count)]
                values = ndi.map_coordinates(prob, line, order=1)
                if not low < values.min() < high:
                    continue
                edge = min(
                    *pa, *pb, *(np.array(truth.shape) - 1 - pa), *(np.array(truth.shape) - 1 - pb)
                )
                score = length + min(edge, 12.0)
                if best is None or score > best[0]:
                    best = (score, pa, pb, values)
    if best is None:
        return None
    _, pa, pb, values = best
    return (pa[0], pa[1]), (pb[0], pb[1]), values


# --------------------------------------------------------------------------------------

FIGURES: dict = {
    "concept_architecture": fig_architecture,
    "concept_tile_sizes": fig_tile_sizes,
    "concept_overlap_tile": fig_overlap_tile,
    "concept_weight_map": fig_weight_map,
    "concept_elastic": fig_elastic,
    "concept_separation": fig_separation,
}
