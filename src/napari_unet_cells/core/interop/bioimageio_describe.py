"""The bioimage.io description (spec 0.5) of the files ``write_files`` put in a folder.

``describe`` assembles a ``bioimageio.spec.model.v0_5.ModelDescr`` from small builders:
the input tensor (with its ``scale_range`` preprocessing), the output tensor (softmax,
size referenced to the input minus the context margin), the weights, the citations, and
this plugin's own header under ``config.napari_unet_cells``. ``bio`` below is the
``bioimageio.spec.model.v0_5`` module (imported only when a package is described).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bioimageio_files import (
    ARCHITECTURE_CALLABLE,
    ARCHITECTURE_FILE,
    CONFIG_KEY,
    INPUT_ID,
    OUTPUT_ID,
    PACKAGE_URL,
    PAPER_DOI,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    cpu_network,
    state_dict_cpu,
    tile_constraints,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..checkpoint import CellModel

TAGS = ["unet", "segmentation", "cells", "nuclei", "2d", "pytorch", "napari-unet-cells"]


def describe(
    cell_model: CellModel,
    folder: Path,
    name: str,
    description: str | None,
    authors: list[str],
    license: str,
):
    """The package's description, pointing at the files in ``folder``.

    Parameters
    ----------
    cell_model : CellModel
        The exported model.
    folder : Path
        The folder ``write_files`` wrote.
    name, description, license : str
        As given to ``export_bioimageio`` (``description`` None: a default sentence).
    authors : list of str
        Who trained the model.

    Returns
    -------
    bioimageio.spec.model.v0_5.ModelDescr
        Raises pydantic's ValidationError (a ValueError) for a field bioimage.io refuses.
    """
    from bioimageio.spec.model import v0_5 as bio

    from ... import __version__

    return bio.ModelDescr(
        name=name,
        description=description or _default_description(cell_model, __version__),
        authors=[bio.Author(name=author) for author in authors],
        cite=_citations(bio, __version__),
        license=bio.LicenseId(license),
        covers=[bio.FileDescr(source=folder / "cover.png")],
        documentation=bio.FileDescr(source=folder / "README.md"),
        git_repo=bio.HttpUrl(PACKAGE_URL),
        tags=TAGS,
        inputs=[_input_tensor(bio, cell_model, folder)],
        outputs=[_output_tensor(bio, cell_model, folder)],
        weights=_weights(bio, cell_model.config, folder),
        config=bio.Config(
            bioimageio=_bioimageio_config(bio, cell_model),
            **{CONFIG_KEY: our_header(cell_model)},
        ),
    )


def _default_description(cell_model: CellModel, version: str) -> str:
    return (
        f"2015 U-Net (Ronneberger et al.) for cell segmentation, trained with "
        f"napari-unet-cells {version}: {cell_model.config.n_classes}-class probabilities "
        f"({', '.join(cell_model.classes)}); touching cells come apart at the "
        "separation borders."
    )


def _citations(bio, version: str) -> list:
    return [
        bio.CiteEntry(
            text="Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for "
            "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351: 234-241.",
            doi=bio.Doi(PAPER_DOI),
        ),
        bio.CiteEntry(
            text=f"napari-unet-cells {version}: the 2015 U-Net for cell segmentation in napari.",
            url=bio.HttpUrl(PACKAGE_URL),
        ),
    ]


def _preprocessing(bio, cell_model: CellModel) -> list[Any]:
    """``scale_range`` with the model's percentiles per sample over channel, y and x;
    then ``clip`` to [0, 1] if the model clips."""
    norm = cell_model.normalization
    axes = [bio.AxisId("channel"), bio.AxisId("y"), bio.AxisId("x")]
    steps: list[Any] = [
        bio.ScaleRangeDescr(
            kwargs=bio.ScaleRangeKwargs(
                axes=axes, min_percentile=norm.p_low, max_percentile=norm.p_high
            )
        )
    ]
    if norm.clip:
        steps.append(bio.ClipDescr(kwargs=bio.ClipKwargs(min=0.0, max=1.0)))
    return steps


def _input_tensor(bio, cell_model: CellModel, folder: Path):
    """``raw``: (batch, channel, y, x) float32, y and x of ``min + n * step`` px."""
    config = cell_model.config
    constraints = tile_constraints(config)
    size = bio.ParameterizedSize(min=constraints["min"], step=constraints["step"])
    channels = ["raw"] if config.in_channels == 1 else [f"c{i}" for i in range(config.in_channels)]
    space = "valid input sizes: min + n * step px"
    return bio.InputTensorDescr(
        id=bio.TensorId(INPUT_ID),
        description="image, any intensity range (percentile-normalised per plane)",
        axes=[
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=channels),
            bio.SpaceInputAxis(id=bio.AxisId("y"), size=size, description=space),
            bio.SpaceInputAxis(id=bio.AxisId("x"), size=size, description=space),
        ],
        test_tensor=bio.FileDescr(source=folder / "test_input.npy"),
        sample_tensor=bio.FileDescr(source=folder / "sample_input.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=_preprocessing(bio, cell_model),
    )


def _output_tensor(bio, cell_model: CellModel, folder: Path):
    """``probabilities``: (batch, class, y, x) float32 after softmax; y and x are the
    input's plus ``offset`` (minus twice the context margin: the network crops it, so it
    is an offset, not a halo a consumer would crop again)."""
    constraints = tile_constraints(cell_model.config)
    margin = -constraints["offset"] // 2
    crop = f"input size - 2 x {margin} px (context used up by valid convolutions)"
    ref = {"tensor_id": bio.TensorId(INPUT_ID), "offset": constraints["offset"]}

    def space(axis: str):
        axis_id = bio.AxisId(axis)
        return bio.SpaceOutputAxis(
            id=axis_id, size=bio.SizeReference(axis_id=axis_id, **ref), description=crop
        )

    return bio.OutputTensorDescr(
        id=bio.TensorId(OUTPUT_ID),
        description="class probabilities (softmax), one channel per class",
        axes=[
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=list(cell_model.classes)),
            space("y"),
            space("x"),
        ],
        test_tensor=bio.FileDescr(source=folder / "test_output.npy"),
        sample_tensor=bio.FileDescr(source=folder / "sample_output.tif"),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=bio.AxisId("channel")))],
    )


def _weights(bio, config, folder: Path):
    """``pytorch_state_dict`` (architecture from ``unet2015.py``), and ``torchscript``
    when ``write_files`` could compile it."""
    import torch

    from ..config import config_to_dict

    torch_version = bio.Version(torch.__version__.split("+")[0])
    weights: dict[str, Any] = {
        "pytorch_state_dict": bio.PytorchStateDictWeightsDescr(
            source=folder / WEIGHTS_FILE,
            architecture=bio.ArchitectureFromFileDescr(
                source=folder / ARCHITECTURE_FILE,
                callable=bio.Identifier(ARCHITECTURE_CALLABLE),
                kwargs=config_to_dict(config),
            ),
            pytorch_version=torch_version,
        )
    }
    scripted = folder / TORCHSCRIPT_FILE
    if scripted.is_file():
        weights["torchscript"] = bio.TorchscriptWeightsDescr(
            source=scripted, pytorch_version=torch_version, parent="pytorch_state_dict"
        )
    return bio.WeightsDescr(**weights)


def _bioimageio_config(bio, cell_model: CellModel):
    from ..unet import count_parameters

    config = cell_model.config
    n_parameters = count_parameters(cpu_network(cell_model))
    return bio.BioimageioConfig(
        architecture_type="U-Net (2015)",
        architecture_description=(
            f"U-Net, {config.padding} 3x3 convolutions, depth {config.depth}, "
            f"{config.base} base channels, {n_parameters:,} parameters"
        ),
        task="semantic segmentation (instances via separation borders)",
        target_structure=["cells", "nuclei"],
        model_parameter_count=n_parameters,
    )


def our_header(cell_model: CellModel) -> dict[str, Any]:
    """The model file's own header, stored under ``config.napari_unet_cells``.

    Parameters
    ----------
    cell_model : CellModel
        The exported model.

    Returns
    -------
    dict
        JSON-ready: format and version, config, normalisation, classes, provenance,
        extra (post-processing settings, diameter) and the tensors' dtypes and shapes, so
        that ``load_bioimageio`` rebuilds exactly the same ``CellModel``.
    """
    from ... import __version__
    from ..checkpoint import FORMAT_NAME, FORMAT_VERSION
    from ..config import config_to_dict

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model_config": config_to_dict(cell_model.config),
        "normalization": config_to_dict(cell_model.normalization),
        "classes": list(cell_model.classes),
        "provenance": json.loads(json.dumps(cell_model.provenance)),
        "extra": json.loads(json.dumps(cell_model.extra)),
        "tensors": {
            k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
            for k, v in state_dict_cpu(cell_model).items()
        },
    }
