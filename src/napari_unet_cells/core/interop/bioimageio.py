"""bioimage.io model packages: export a model, load back a package this plugin exported.

Export (``export_bioimageio``) builds the description with ``bioimageio.spec`` (format
0.5), runs ``bioimageio.core.test_model`` on the finished zip and only then writes it
(atomically) to the requested path. The package holds:

- ``unet2015.py``: the network as standalone torch source (``UNet2015``; its kwargs are
  the model's ``ModelConfig``) and ``weights.pt``, its ``pytorch_state_dict``;
  ``weights_torchscript.pt`` too when TorchScript can compile the network;
- input ``raw``: (batch, channel, y, x) float32, y and x of ``min + n * step`` px (the
  valid input sizes: 16n + 188 for depth 4), preprocessing ``scale_range`` with the
  model's percentiles per sample over channel, y and x (then ``clip`` to [0, 1] if the
  model clips);
- output ``probabilities``: (batch, class, y, x) float32 after the ``softmax``
  postprocessing, one channel per class (``CellModel.classes``); y and x are the input's
  minus 2 * 92 px (depth 4): the context the valid convolutions use up. The spec
  expresses a margin that the network itself crops as the output size's ``offset``
  (its ``halo`` field is for margins a consumer must crop, which would crop twice here);
- test input / expected output (.npy) made by the prediction path (``normalize`` and
  ``TorchPredictor``), a cover image, the model card as ``README.md`` (with how to cite),
  and under ``config.napari_unet_cells`` the model file's own header (config,
  normalisation, classes, provenance, post-processing settings) so that
  ``load_bioimageio`` rebuilds exactly the same ``CellModel``.

Importing (``load_bioimageio``, ``read_bioimageio_info``) needs only torch and PyYAML
(no bioimageio packages); a package from another architecture raises UNetCellsError.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import UNetCellsError
from . import INTEROP_HINT, require

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..checkpoint import CellModel

logger = logging.getLogger(__name__)

#: key under the package's ``config`` that marks a package made by this plugin
CONFIG_KEY = "napari_unet_cells"
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
ARCHITECTURE_FILE = "unet2015.py"
ARCHITECTURE_CALLABLE = "UNet2015"
TORCHSCRIPT_FILE = "weights_torchscript.pt"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
PAPER_DOI = "10.1007/978-3-319-24574-4_28"
PAPER_URL = "https://arxiv.org/abs/1505.04597"
PACKAGE_URL = "https://github.com/napari-unet-cells/napari-unet-cells"
DEFAULT_LICENSE = "CC-BY-4.0"
_OUR_URLS = (PAPER_URL, PACKAGE_URL, f"https://doi.org/{PAPER_DOI}")

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_+\- ()]+")


# --------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------


def export_bioimageio(
    model: CellModel | str | os.PathLike | None,
    path: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: list[str] | tuple[str, ...] | None = None,
    license: str = DEFAULT_LICENSE,
    test_image: np.ndarray | None = None,
    torchscript: bool = True,
    overwrite: bool = False,
    test: bool = True,
) -> Path:
    """Write ``model`` as a bioimage.io model package (a .zip) that passes its own test.

    Parameters
    ----------
    model : CellModel, model file path, session model name, or None (the bundled model).
        A package exported earlier is accepted too.
    path : the .zip to write. An existing file is refused unless ``overwrite``.
    name : the package's human-readable name (letters, digits, spaces, ``_+-()``;
        5-128 characters); default from the file name.
    description : one or two sentences; default says what the model segments.
    authors : names of the people who trained the model; default
        ``["napari-unet-cells user"]`` (edit the package's rdf.yaml later, or pass names).
    license : SPDX id of the weights' licence (default CC-BY-4.0, bioimage.io's usual).
    test_image : (Y, X) or (Y, X, C) image for the package's test input; default a
        synthetic image (``core.synthetic``). Cropped centrally to at most one network
        input of about 280 px (depth 4); smaller images are mirror-padded.
    torchscript : also add TorchScript weights (for Fiji/deepImageJ and other consumers
        without Python), when TorchScript compiles the network.
    overwrite : replace an existing ``path``.
    test : run bioimageio.core's model test (all weight formats, CPU) before writing;
        False only checks the description against the spec (faster).

    Returns
    -------
    The written path. Raises UNetCellsError when the path is unusable, the ``interop``
    extra is missing, or the package fails bioimageio.core's test (nothing is written
    then).
    """
    path = Path(path)
    _check_target(path, overwrite)
    spec = require("bioimageio.spec", "Exporting to bioimage.io")
    require("bioimageio.core", "Exporting to bioimage.io")
    name = name or _default_name(path)
    _check_fields(name, license)
    from ..registry import resolve_model

    cell_model = resolve_model(model)
    with tempfile.TemporaryDirectory(prefix="unet-cells-export-") as tmp:
        folder = Path(tmp)
        authors = list(authors or ["napari-unet-cells user"])
        _write_files(cell_model, folder, name, authors, license, test_image, torchscript)
        with _offline_context(_folder_hashes(folder)):
            try:
                descr = _describe(cell_model, folder, name, description, authors, license)
            except ValueError as err:  # pydantic's ValidationError: a field the user gave
                raise UNetCellsError(
                    f"Cannot describe the model for bioimage.io: {_first_errors(err)}. Check "
                    "the name (5-128 letters, digits, spaces or _+-()), the licence (an SPDX "
                    "id such as CC-BY-4.0 or MIT) and the authors."
                ) from None
            package = folder / "package.zip"
            with open(package, "wb") as stream:
                spec.save_bioimageio_package_to_stream(descr, output_stream=stream)
        # the written zip, validated as a consumer loads it, and (test) run on test tensors
        summary = test_package(package) if test else _load_package(package).validation_summary
        if summary.status not in (("passed",) if test else ("passed", "valid-format")):
            raise UNetCellsError(
                f"The bioimage.io package for {path.name} failed bioimage.io's "
                f"{'model test' if test else 'validation'}, so it was not written: "
                f"{_summary_errors(summary)}. Please report this at {PACKAGE_URL}/issues."
            )
        from ..fileio import atomic_write

        with open(package, "rb") as source:
            atomic_write(path, lambda handle: shutil.copyfileobj(source, handle))
    logger.info("exported bioimage.io package to %s", path)
    return path


def test_package(source: str | os.PathLike, weight_format: str | None = None):
    """Run ``bioimageio.core.test_model`` on a package (all weight formats by default),
    offline, on the CPU; returns its ``ValidationSummary`` (``.status == "passed"``)."""
    core = require("bioimageio.core", "Testing a bioimage.io package")
    descr = _load_package(Path(source))
    if not hasattr(descr, "weights"):  # InvalidDescr: not even valid against the spec
        return descr.validation_summary
    with _offline_context():
        return core.test_model(descr, weight_format=weight_format, devices=["cpu"])


test_package.__test__ = False  # not a pytest test


def _load_package(package: Path):
    """``bioimageio.spec.load_description`` of a zip, with full io checks but offline: the
    zip's files (by SHA-256) and this plugin's URLs are declared known, so nothing is
    fetched (loading a zip otherwise forgets the known files and checks URLs online)."""
    from bioimageio.spec import load_description

    known = _member_hashes(package) if zipfile.is_zipfile(package) else {}
    known.update(dict.fromkeys(_OUR_URLS))
    with _offline_context(known):
        return load_description(package, perform_io_checks=True, known_files=known)


def _check_target(path: Path, overwrite: bool) -> None:
    if path.suffix.lower() != ".zip":
        raise UNetCellsError(
            f"{path}: a bioimage.io package is a .zip file; give a name ending in .zip, "
            "e.g. my_model.zip."
        )
    if path.is_dir():
        raise UNetCellsError(f"{path} is a folder; give a file name ending in .zip.")
    if path.exists() and not overwrite:
        raise UNetCellsError(
            f"{path} already exists; choose another name, or pass --overwrite (overwrite=True) "
            "to replace it."
        )
    if not path.parent.is_dir():
        raise UNetCellsError(
            f"The folder {path.parent} does not exist; create it first or choose another folder."
        )


def _check_fields(name: str, license: str) -> None:
    """The user's name and licence, as bioimage.io accepts them (before any work)."""
    from bioimageio.spec.model.v0_5 import LicenseId

    if not 5 <= len(name) <= 128 or _NAME_CHARS.search(name):
        raise UNetCellsError(
            f"The package name {name!r} is not accepted by bioimage.io: use 5 to 128 letters, "
            "digits, spaces or _+-() (e.g. 'Nuclei DAPI U-Net')."
        )
    try:
        LicenseId(license)
    except ValueError:
        raise UNetCellsError(
            f"{license!r} is not an SPDX licence id: give one such as CC-BY-4.0 (the "
            "default), CC0-1.0, MIT or BSD-3-Clause (list: https://spdx.org/licenses/)."
        ) from None


def _default_name(path: Path) -> str:
    stem = _NAME_CHARS.sub(" ", path.stem.replace(".", " ")).strip()
    name = f"U-Net cells {stem}" if stem else "U-Net cells"
    return name[:64].strip()


@contextmanager
def _offline_context(files: dict[str, str | None] | None = None):
    """bioimageio's validation without network access. The URLs this plugin writes into
    packages are declared known, so they are not checked with a request; so are the
    package's own ``files`` (name -> SHA-256, compared by bioimageio), which bioimageio
    then neither downloads nor re-hashes."""
    from bioimageio.spec import get_validation_context

    known = dict(get_validation_context().known_files)
    known.update(dict.fromkeys(_OUR_URLS))
    known.update(files or {})
    with get_validation_context().replace(known_files=known):
        yield


def _member_hashes(package: Path) -> dict[str, str]:
    """SHA-256 of every file in a zip, by name."""
    with zipfile.ZipFile(package) as archive:
        return {
            name: hashlib.sha256(archive.read(name)).hexdigest()
            for name in archive.namelist()
            if not name.endswith("/")
        }


def _first_errors(err: ValueError) -> str:
    """The first lines of a pydantic ValidationError, as one line."""
    if not hasattr(err, "errors"):
        return str(err).splitlines()[0]
    parts = [f"{'.'.join(map(str, e['loc']))}: {e['msg'][:160]}" for e in err.errors()[:3]]
    return "; ".join(parts)


def _summary_errors(summary) -> str:
    errors = [f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors]
    return "; ".join(errors[:5]) or f"status {summary.status}"


def _state_dict_cpu(cell_model: CellModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in cell_model.net.state_dict().items()}


def _cpu_network(cell_model: CellModel):
    """A CPU copy of the model's network in eval mode (the user's stays where it is)."""
    from ..unet import UNet

    net = UNet(cell_model.config)
    net.load_state_dict(_state_dict_cpu(cell_model))
    return net.eval()


def tile_constraints(config) -> dict[str, int]:
    """The spatial size rule of a ModelConfig, as the package states it.

    Returns {"min": smallest valid input px, "step": px between valid sizes, "offset":
    output size - input size (-2 * context margin; 0 for same padding)}.
    """
    from ..unet import context_margin, min_input_size

    return {
        "min": min_input_size(config.depth, config.padding),
        "step": 2**config.depth,
        "offset": -2 * context_margin(config.depth, config.padding),
    }


def _test_input(cell_model: CellModel, image: np.ndarray | None) -> np.ndarray:
    """(1, C, S, S) float32 raw test input, S a valid input size (about 280 px, depth 4)."""
    from ..predict import prepare_image
    from ..unet import input_size_for_output, nearest_valid_input_size

    config = cell_model.config
    size = input_size_for_output(96, config.depth, config.padding)
    if image is None:
        from ..synthetic import synthetic_cells

        image, _ = synthetic_cells((size, size), seed=0)
        plane = np.repeat(image[..., None], config.in_channels, axis=-1)
    else:
        plane = prepare_image(image, config.in_channels).planes[0]
        smaller = nearest_valid_input_size(
            min(plane.shape[:2]), config.depth, config.padding, "down"
        )
        size = min(size, smaller) if smaller is not None else size
        pads = [(max(0, (size - n + 1) // 2),) * 2 for n in plane.shape[:2]]
        if any(p[0] for p in pads):
            plane = np.pad(plane, [*pads, (0, 0)], mode="symmetric")
        y0 = (plane.shape[0] - size) // 2
        x0 = (plane.shape[1] - size) // 2
        plane = plane[y0 : y0 + size, x0 : x0 + size]
    return np.ascontiguousarray(plane.transpose(2, 0, 1)[None], dtype=np.float32)


def _test_output(cell_model: CellModel, net, raw: np.ndarray) -> np.ndarray:
    """The prediction path's class probabilities for ``raw``: (1, K, S', S') float32."""
    from ..normalize import normalize
    from ..predict import TorchPredictor

    plane = normalize(raw[0].transpose(1, 2, 0), cell_model.normalization)
    batch = plane.transpose(2, 0, 1)[None]
    return TorchPredictor(net, "cpu")(batch).astype(np.float32)


def _write_cover(path: Path, cell_model: CellModel, raw: np.ndarray, probs: np.ndarray) -> None:
    """A 2:1 PNG: the normalised test input (cropped to the output) | cell score."""
    from skimage.io import imsave

    from ..normalize import normalize
    from ..predict import cell_score_weights

    out_y, out_x = probs.shape[-2:]
    y0 = (raw.shape[-2] - out_y) // 2
    x0 = (raw.shape[-1] - out_x) // 2
    image = normalize(raw[0].mean(axis=0), cell_model.normalization)
    image = np.clip(image[y0 : y0 + out_y, x0 : x0 + out_x], 0, 1)
    score = np.clip(np.tensordot(cell_score_weights(cell_model), probs[0], axes=1), 0, 1)
    side = np.concatenate([image, score], axis=1)
    imsave(path, (side * 255).round().astype(np.uint8), check_contrast=False)


def _folder_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of the files in ``folder``, by name and by absolute path."""
    hashes = {}
    for file in folder.iterdir():
        if file.is_file():
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            hashes[file.name] = hashes[str(file)] = digest
    return hashes


def _write_files(
    cell_model: CellModel,
    folder: Path,
    name: str,
    authors: list[str],
    license: str,
    test_image: np.ndarray | None,
    torchscript: bool,
) -> None:
    """The package's files: architecture, weights, test tensors, samples, cover, card."""
    import tifffile
    import torch

    config = cell_model.config
    if len(cell_model.classes) != config.n_classes:
        raise UNetCellsError(
            f"The model has {config.n_classes} output classes but {len(cell_model.classes)} "
            f"class names {cell_model.classes}: give one name per class."
        )
    net = _cpu_network(cell_model)
    state = _state_dict_cpu(cell_model)
    shutil.copyfile(Path(__file__).with_name(ARCHITECTURE_FILE), folder / ARCHITECTURE_FILE)
    torch.save(state, folder / "weights.pt")
    raw = _test_input(cell_model, test_image)
    probs = _test_output(cell_model, net, raw)
    np.save(folder / "test_input.npy", raw)
    np.save(folder / "test_output.npy", probs)
    tifffile.imwrite(folder / "sample_input.tif", raw[0], photometric="minisblack")
    tifffile.imwrite(folder / "sample_output.tif", probs[0], photometric="minisblack")
    _write_cover(folder / "cover.png", cell_model, raw, probs)
    (folder / "README.md").write_text(
        model_card(cell_model, name=name, authors=authors, license=license), encoding="utf-8"
    )
    if torchscript:
        _torchscript(folder, state, config)


def _describe(
    cell_model: CellModel,
    folder: Path,
    name: str,
    description: str | None,
    authors: list[str],
    license: str,
):
    """The bioimage.io description (spec 0.5) of the files ``_write_files`` wrote."""
    import torch
    from bioimageio.spec.model import v0_5 as bio

    from ... import __version__
    from ..checkpoint import FORMAT_NAME, FORMAT_VERSION
    from ..config import config_to_dict
    from ..unet import count_parameters

    config = cell_model.config
    constraints = tile_constraints(config)
    margin = -constraints["offset"] // 2
    n_parameters = count_parameters(_cpu_network(cell_model))

    # tensors
    y, x, channel = bio.AxisId("y"), bio.AxisId("x"), bio.AxisId("channel")
    size = bio.ParameterizedSize(min=constraints["min"], step=constraints["step"])
    in_channels = (
        ["raw"] if config.in_channels == 1 else [f"c{i}" for i in range(config.in_channels)]
    )
    preprocessing: list[Any] = [
        bio.ScaleRangeDescr(
            kwargs=bio.ScaleRangeKwargs(
                axes=[channel, y, x],
                min_percentile=cell_model.normalization.p_low,
                max_percentile=cell_model.normalization.p_high,
            )
        )
    ]
    if cell_model.normalization.clip:
        preprocessing.append(bio.ClipDescr(kwargs=bio.ClipKwargs(min=0.0, max=1.0)))
    space = "valid input sizes: min + n * step px"
    inputs = [
        bio.InputTensorDescr(
            id=bio.TensorId(INPUT_ID),
            description="image, any intensity range (percentile-normalised per plane)",
            axes=[
                bio.BatchAxis(),
                bio.ChannelAxis(channel_names=in_channels),
                bio.SpaceInputAxis(id=y, size=size, description=space),
                bio.SpaceInputAxis(id=x, size=size, description=space),
            ],
            test_tensor=bio.FileDescr(source=folder / "test_input.npy"),
            sample_tensor=bio.FileDescr(source=folder / "sample_input.tif"),
            data=bio.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=preprocessing,
        )
    ]
    crop = f"input size - 2 x {margin} px (context used up by valid convolutions)"
    ref = {"tensor_id": bio.TensorId(INPUT_ID), "offset": constraints["offset"]}
    outputs = [
        bio.OutputTensorDescr(
            id=bio.TensorId(OUTPUT_ID),
            description="class probabilities (softmax), one channel per class",
            axes=[
                bio.BatchAxis(),
                bio.ChannelAxis(channel_names=list(cell_model.classes)),
                bio.SpaceOutputAxis(
                    id=y, size=bio.SizeReference(axis_id=y, **ref), description=crop
                ),
                bio.SpaceOutputAxis(
                    id=x, size=bio.SizeReference(axis_id=x, **ref), description=crop
                ),
            ],
            test_tensor=bio.FileDescr(source=folder / "test_output.npy"),
            sample_tensor=bio.FileDescr(source=folder / "sample_output.tif"),
            data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
            postprocessing=[bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=channel))],
        )
    ]

    # weights
    torch_version = bio.Version(torch.__version__.split("+")[0])
    weights: dict[str, Any] = {
        "pytorch_state_dict": bio.PytorchStateDictWeightsDescr(
            source=folder / "weights.pt",
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

    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model_config": config_to_dict(config),
        "normalization": config_to_dict(cell_model.normalization),
        "classes": list(cell_model.classes),
        "provenance": json.loads(json.dumps(cell_model.provenance)),
        "extra": json.loads(json.dumps(cell_model.extra)),
        "tensors": {
            k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape)}
            for k, v in _state_dict_cpu(cell_model).items()
        },
    }
    n_classes = config.n_classes
    return bio.ModelDescr(
        name=name,
        description=description
        or (
            f"2015 U-Net (Ronneberger et al.) for cell segmentation, trained with "
            f"napari-unet-cells {__version__}: {n_classes}-class probabilities "
            f"({', '.join(cell_model.classes)}); touching cells come apart at the "
            "separation borders."
        ),
        authors=[bio.Author(name=author) for author in authors],
        cite=[
            bio.CiteEntry(
                text="Ronneberger O, Fischer P, Brox T. U-Net: Convolutional Networks for "
                "Biomedical Image Segmentation. MICCAI 2015, LNCS 9351: 234-241.",
                doi=bio.Doi(PAPER_DOI),
            ),
            bio.CiteEntry(
                text=f"napari-unet-cells {__version__}: the 2015 U-Net for cell segmentation "
                "in napari.",
                url=bio.HttpUrl(PACKAGE_URL),
            ),
        ],
        license=bio.LicenseId(license),
        covers=[bio.FileDescr(source=folder / "cover.png")],
        documentation=bio.FileDescr(source=folder / "README.md"),
        git_repo=bio.HttpUrl(PACKAGE_URL),
        tags=["unet", "segmentation", "cells", "nuclei", "2d", "pytorch", "napari-unet-cells"],
        inputs=inputs,
        outputs=outputs,
        weights=bio.WeightsDescr(**weights),
        config=bio.Config(
            bioimageio=bio.BioimageioConfig(
                architecture_type="U-Net (2015)",
                architecture_description=(
                    f"U-Net, {config.padding} 3x3 convolutions, depth {config.depth}, "
                    f"{config.base} base channels, {n_parameters:,} parameters"
                ),
                task="semantic segmentation (instances via separation borders)",
                target_structure=["cells", "nuclei"],
                model_parameter_count=n_parameters,
            ),
            **{CONFIG_KEY: header},
        ),
    )


def _torchscript(folder: Path, state: dict, config) -> Path | None:
    """TorchScript of the standalone network, or None when it does not compile."""
    import importlib.util
    import warnings

    import torch

    from ..config import config_to_dict

    spec = importlib.util.spec_from_file_location("_unet2015", folder / ARCHITECTURE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = getattr(module, ARCHITECTURE_CALLABLE)(**config_to_dict(config))
    net.load_state_dict(state)
    net.eval()
    target = folder / TORCHSCRIPT_FILE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.script(net).save(str(target))
    except Exception as err:  # TorchScript is optional: the state dict is the reference
        logger.warning("no TorchScript weights: the network did not compile (%s)", err)
        return None
    return target


def model_card(cell_model: CellModel, *, name: str, authors: list[str], license: str) -> str:
    """The package's README.md: what the model is, its input, output and limits, its
    provenance and validation figures, and how to cite."""
    from ... import __version__
    from ..predict import cell_score_weights

    config = cell_model.config
    norm = cell_model.normalization
    constraints = tile_constraints(config)
    margin = -constraints["offset"] // 2
    prov = cell_model.provenance
    diameter = cell_model.extra.get("diameter")
    score = " + ".join(
        f"{w:g} p({c})" if w != 1 else f"p({c})"
        for w, c in zip(cell_score_weights(cell_model), cell_model.classes, strict=True)
        if w
    )
    lines = [
        f"# {name}",
        "",
        f"A 2015 U-Net (Ronneberger, Fischer & Brox) for segmenting cells, exported by "
        f"napari-unet-cells {__version__}. Authors: {', '.join(authors)}. Licence of the "
        f"weights: {license}.",
        "",
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
        "## Preprocessing",
        "",
        f"Per plane (over channels, y and x): the {norm.p_low} and {norm.p_high} percentiles "
        f"of the intensities map to 0 and 1 (`scale_range`)"
        + (", then clipped to [0, 1]." if norm.clip else "; values outside are kept."),
        "",
        "## Cell size",
        "",
        (
            f"The model was trained around nuclei of about {diameter:g} px in diameter. "
            "napari-unet-cells resamples each image so that its nuclei have this size before "
            "running the network (and maps the labels back); other tools run it on the "
            "pixels as given, so resample your images to this nucleus size first."
            if diameter
            else "The model records no nucleus size: it works best on nuclei of the size it "
            "was trained on."
        ),
        "",
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
        "## Training and provenance",
        "",
    ]
    if prov.get("data"):
        lines += [f"Data: {prov['data']}", ""]
    summary = {k: v for k, v in prov.items() if k not in ("history", "instance_tuning")}
    lines += [
        "```json",
        json.dumps(summary, indent=1, sort_keys=True, default=str)[:6000],
        "```",
        "",
        "## Validation",
        "",
    ]
    history = prov.get("history") or []
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
        f"- napari-unet-cells {__version__}, {PACKAGE_URL}",
        "",
        f"and name the authors of this model ({', '.join(authors)}).",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------


class _Package:
    """Read access to a package: a .zip, a folder with rdf.yaml, or an rdf.yaml path."""

    def __init__(self, path: Path):
        self.path = path
        self._zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.root = path
            names = [n for n in RDF_NAMES if (path / n).is_file()]
        elif zipfile.is_zipfile(path):
            try:
                self._zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError) as err:
                raise _damaged(path, err) from None
            self.root = None
            members = set(self._zip.namelist())
            names = [n for n in RDF_NAMES if n in members]
            names += [n for n in sorted(members) if n.endswith(".bioimageio.yaml")]
        else:
            self.root = path.parent
            names = [path.name] if path.name.endswith(RDF_NAMES) else []
        if not names:
            raise UNetCellsError(f"{path} is not a bioimage.io package (no rdf.yaml).")
        self.rdf_name = names[0]

    def read(self, name: str) -> bytes:
        if self._zip is not None:
            try:
                return self._zip.read(name)
            except KeyError:
                raise _damaged(self.path, f"it lacks the file {name!r}") from None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
                raise _damaged(self.path, err) from None
        file = self.root / name
        if not file.is_file():
            raise _damaged(self.path, f"it lacks the file {name!r}")
        return file.read_bytes()

    def rdf(self) -> dict[str, Any]:
        import yaml

        try:
            rdf = yaml.safe_load(self.read(self.rdf_name).decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise _damaged(self.path, f"its {self.rdf_name} cannot be read: {err}") from None
        if not isinstance(rdf, dict):
            raise _damaged(self.path, f"its {self.rdf_name} is not a description")
        return rdf

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def is_bioimageio_package(path: str | os.PathLike) -> bool:
    """True if ``path`` looks like a bioimage.io package: a zip holding rdf.yaml (or
    *bioimageio.yaml), a folder holding one, or such a yaml file. Does not validate."""
    path = Path(path)
    try:
        if path.is_dir():
            return any((path / n).is_file() for n in RDF_NAMES)
        if path.is_file() and path.name.endswith(RDF_NAMES):
            return True
        if path.is_file() and zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                return any(
                    n in RDF_NAMES or n.endswith(".bioimageio.yaml") for n in archive.namelist()
                )
    except (OSError, zipfile.BadZipFile):
        return False
    return False


def read_bioimageio_info(path: str | os.PathLike) -> dict[str, Any]:
    """The model-file header stored in a package this plugin exported (like
    ``checkpoint.read_model_info``); UNetCellsError naming what it is otherwise.
    Imports neither torch nor bioimageio."""
    path = Path(path)
    package = _Package(path)
    try:
        return _our_header(path, package.rdf())
    finally:
        package.close()


def read_bioimageio_weights(path: str | os.PathLike) -> list[str]:
    """The weight formats a package holds, e.g. ["pytorch_state_dict", "torchscript"]."""
    package = _Package(Path(path))
    try:
        return sorted((package.rdf().get("weights") or {}).keys())
    finally:
        package.close()


def load_bioimageio(path: str | os.PathLike, device: str | torch.device = "cpu") -> CellModel:
    """Load a bioimage.io package exported by this plugin as a CellModel (eval mode).

    Reads the ``pytorch_state_dict`` weights (``torch.load(weights_only=True)``, checked
    against the package's SHA-256) and the model header under ``config.napari_unet_cells``.
    A package of another architecture raises UNetCellsError saying what it is.
    """
    import torch

    from ..checkpoint import CellModel
    from ..config import ModelConfig, NormalizationConfig, config_from_dict
    from ..device import resolve_device
    from ..unet import UNet

    path = Path(path)
    package = _Package(path)
    try:
        rdf = package.rdf()
        meta = _our_header(path, rdf)
        entry = (rdf.get("weights") or {}).get("pytorch_state_dict") or {}
        source = entry.get("source")
        if not isinstance(source, str):
            raise _damaged(path, "it has no pytorch_state_dict weights")
        data = package.read(source)
    finally:
        package.close()
    expected = entry.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise _damaged(path, f"{source} does not match its SHA-256")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        raise _damaged(path, f"{source} cannot be read ({err})") from None
    config = config_from_dict(ModelConfig, meta["model_config"])
    net = UNet(config)
    try:
        net.load_state_dict(state)
    except (RuntimeError, TypeError) as err:
        raise _damaged(path, f"the weights do not fit the stored network ({err})") from None
    net.to(resolve_device(device)).eval()
    provenance = dict(meta.get("provenance", {}))
    provenance.setdefault("bioimageio_package", path.name)
    return CellModel(
        net=net,
        normalization=config_from_dict(NormalizationConfig, meta["normalization"]),
        classes=tuple(meta["classes"]),
        provenance=provenance,
        extra=dict(meta.get("extra", {})),
    )


def _our_header(path: Path, rdf: dict[str, Any]) -> dict[str, Any]:
    from ..checkpoint import FORMAT_NAME, FORMAT_VERSION

    name = rdf.get("name", "unnamed")
    kind = rdf.get("type", "unknown type")
    if kind != "model":
        raise UNetCellsError(
            f"{path} is a bioimage.io {kind} ({name!r}), not a model: choose a model file "
            "(.npz) or a model package (.zip) exported by napari-unet-cells."
        )
    header = (rdf.get("config") or {}).get(CONFIG_KEY)
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        weights = rdf.get("weights") or {}
        arch = (weights.get("pytorch_state_dict") or {}).get("architecture") or {}
        what = arch.get("callable") or "unknown"
        where = arch.get("source") or arch.get("import_from")
        formats = ", ".join(sorted(weights)) or "no"
        raise UNetCellsError(
            f"{path} is the bioimage.io model {name!r} (architecture {what}"
            f"{f' from {where}' if where else ''}; {formats} weights), not a U-Net exported "
            "by napari-unet-cells, so it cannot be loaded, predicted with or fine-tuned "
            "here. Run it with a bioimage.io tool (bioimageio.core, deepImageJ, ilastik), or "
            "use a napari-unet-cells model (.npz, or a .zip made by unet-cells export)."
        )
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UNetCellsError(
            f"{path} holds model format {version!r}, newer than this plugin reads "
            f"({FORMAT_VERSION}): upgrade napari-unet-cells (pip install -U "
            "napari-unet-cells) to load it."
        )
    for key in ("model_config", "normalization", "classes"):
        if key not in header:
            raise _damaged(path, f"its napari-unet-cells header lacks {key!r}")
    return header


def _damaged(path: Path, reason: object) -> UNetCellsError:
    return UNetCellsError(
        f"bioimage.io package {path} is damaged or incomplete ({reason}); export it again "
        "(unet-cells export) or use another copy."
    )


__all__ = [
    "INTEROP_HINT",
    "export_bioimageio",
    "is_bioimageio_package",
    "load_bioimageio",
    "read_bioimageio_info",
    "read_bioimageio_weights",
    "test_package",
    "tile_constraints",
]
