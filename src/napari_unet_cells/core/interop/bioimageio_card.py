"""The model card (``README.md``) of a bioimage.io package: one function per section."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .bioimageio_files import (
    INPUT_ID,
    OUTPUT_ID,
    PACKAGE_URL,
    PAPER_DOI,
    PAPER_URL,
    tile_constraints,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..checkpoint import CellModel


def model_card(cell_model: CellModel, *, name: str, authors: list[str], license: str) -> str:
    """The package's README.md.

    Parameters
    ----------
    cell_model : CellModel
        The exported model.
    name : str
        The package's name (the title).
    authors : list of str
        Who trained the model.
    license : str
        SPDX id of the weights' licence.

    Returns
    -------
    str
        Markdown: what the model is, its input, output and limits, its provenance and
        validation figures, how to use it and how to cite.
    """
    from ... import __version__

    sections = [
        [
            f"# {name}",
            "",
            f"A 2015 U-Net (Ronneberger, Fischer & Brox) for segmenting cells, exported by "
            f"napari-unet-cells {__version__}. Authors: {', '.join(authors)}. Licence of the "
            f"weights: {license}.",
            "",
        ],
        _network(cell_model),
        _preprocessing(cell_model),
        _cell_size(cell_model),
        _instances(cell_model),
        _provenance(cell_model),
        _validation(cell_model),
        _use_and_cite(authors, __version__),
    ]
    return "\n".join(line for section in sections for line in section)


def _network(cell_model: CellModel) -> list[str]:
    config = cell_model.config
    constraints = tile_constraints(config)
    margin = -constraints["offset"] // 2
    return [
        "## Network",
        "",
        f"- `UNet2015` in `unet2015.py` (torch only): in_channels {config.in_channels}, "
        f"n_classes {config.n_classes}, base {config.base}, depth {config.depth}, "
        f"{config.padding} 3x3 convolutions, dropout {config.dropout}, "
        f"batch_norm {config.batch_norm}.",
        f"- Input `{INPUT_ID}` (batch, channel, y, x), float32. y and x must be "
        f"{constraints['min']} + {constraints['step']}n px.",
        f"- Output `{OUTPUT_ID}` (batch, class, y, x): softmax probabilities of the classes "
        f"{', '.join(f'{i} {c}' for i, c in enumerate(cell_model.classes))}. y and x are "
        f"the input's minus {2 * margin} px: the network uses {margin} px of context on "
        "each side, so to segment a whole image, mirror-pad it by that much and tile it "
        "with output tiles that touch (overlap-tile, paper Fig. 2).",
        "",
    ]


def _preprocessing(cell_model: CellModel) -> list[str]:
    norm = cell_model.normalization
    return [
        "## Preprocessing",
        "",
        f"Per plane (over channels, y and x): the {norm.p_low} and {norm.p_high} percentiles "
        f"of the intensities map to 0 and 1 (`scale_range`)"
        + (", then clipped to [0, 1]." if norm.clip else "; values outside are kept."),
        "",
    ]


def _cell_size(cell_model: CellModel) -> list[str]:
    diameter = cell_model.extra.get("diameter")
    if diameter:
        text = (
            f"The model was trained around nuclei of about {diameter:g} px in diameter. "
            "napari-unet-cells resamples each image so that its nuclei have this size before "
            "running the network (and maps the labels back); other tools run it on the "
            "pixels as given, so resample your images to this nucleus size first."
        )
    else:
        text = (
            "The model records no nucleus size: it works best on nuclei of the size it "
            "was trained on."
        )
    return ["## Cell size", "", text, ""]


def _instances(cell_model: CellModel) -> list[str]:
    from ..predict import cell_score_weights

    score = " + ".join(
        f"{w:g} p({c})" if w != 1 else f"p({c})"
        for w, c in zip(cell_score_weights(cell_model), cell_model.classes, strict=True)
        if w
    )
    return [
        "## Instances",
        "",
        f"The cell score is {score}. Cells are its connected regions, seeded and grown back "
        "over the separation borders between touching cells. napari-unet-cells does this "
        "with the settings stored with the model:",
        "",
        "```json",
        json.dumps(cell_model.extra.get("instances", {}), indent=1, sort_keys=True),
        "```",
        "",
    ]


def _provenance(cell_model: CellModel) -> list[str]:
    prov = cell_model.provenance
    lines = ["## Training and provenance", ""]
    if prov.get("data"):
        lines += [f"Data: {prov['data']}", ""]
    summary = {k: v for k, v in prov.items() if k not in ("history", "instance_tuning")}
    lines += [
        "```json",
        json.dumps(summary, indent=1, sort_keys=True, default=str)[:6000],
        "```",
        "",
    ]
    return lines


def _validation(cell_model: CellModel) -> list[str]:
    lines = ["## Validation", ""]
    history = cell_model.provenance.get("history") or []
    if history:
        last = history[-1]
        figures = ", ".join(f"{k} {v}" for k, v in last.items() if k != "elapsed_s")
        lines += [f"Last validation during training: {figures}.", ""]
    else:
        lines += ["No validation was recorded with this model.", ""]
    lines += [
        "Check it on your own annotated images before relying on it: in napari-unet-cells, "
        "`unet-cells evaluate` or the Fine-tune dock's validation report AP at IoU 0.5. "
        "The package's test input and expected output (`test_input.npy`, "
        "`test_output.npy`) only check that a tool reproduces the network.",
        "",
    ]
    return lines


def _use_and_cite(authors: list[str], version: str) -> list[str]:
    return [
        "## Use it",
        "",
        "- napari-unet-cells: `unet-cells predict image.tif -o labels.tif --model "
        "this_package.zip` (or choose the .zip as model file in the Predict dock).",
        "- bioimage.io tools (bioimageio.core, deepImageJ, ilastik, ...): open the .zip.",
        "",
        "## How to cite",
        "",
        "If you use this model, cite the U-Net paper and napari-unet-cells:",
        "",
        "- Ronneberger O, Fischer P, Brox T (2015). U-Net: Convolutional Networks for "
        "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351: 234-241. "
        f"doi:{PAPER_DOI} ({PAPER_URL})",
        f"- napari-unet-cells {version}, {PACKAGE_URL}",
        "",
        f"and name the authors of this model ({', '.join(authors)}).",
        "",
    ]
