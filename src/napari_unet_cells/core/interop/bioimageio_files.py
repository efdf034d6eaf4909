"""The files of a bioimage.io package, written into a folder before it is described.

``write_files`` writes: ``unet2015.py`` (the network as standalone torch source) and
``weights.pt`` (its ``pytorch_state_dict``), ``weights_torchscript.pt`` when TorchScript
compiles the network, ``test_input.npy`` / ``test_output.npy`` made by the prediction
path, ``sample_input.tif`` / ``sample_output.tif``, ``cover.png`` and the model card as
``README.md``. The names here are the ones the description and the reader use.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UNetCellsError

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
WEIGHTS_FILE = "weights.pt"
INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
PAPER_DOI = "10.1007/978-3-319-24574-4_28"
PAPER_URL = "https://arxiv.org/abs/1505.04597"
PACKAGE_URL = "https://github.com/napari-unet-cells/napari-unet-cells"


def state_dict_cpu(cell_model: CellModel) -> dict[str, torch.Tensor]:
    """The network's weights as CPU tensors (copies: the model stays where it is).

    Parameters
    ----------
    cell_model : CellModel
        The model to export.

    Returns
    -------
    dict of str to torch.Tensor
        Its ``state_dict``, detached, on the CPU.
    """
    return {k: v.detach().cpu().clone() for k, v in cell_model.net.state_dict().items()}


def cpu_network(cell_model: CellModel):
    """A CPU copy of the model's network in eval mode (the user's stays where it is).

    Parameters
    ----------
    cell_model : CellModel
        The model to export.

    Returns
    -------
    UNet
        A new network with the same weights, on the CPU, in eval mode.
    """
    from ..unet import UNet

    net = UNet(cell_model.config)
    net.load_state_dict(state_dict_cpu(cell_model))
    return net.eval()


def tile_constraints(config) -> dict[str, int]:
    """The spatial size rule of a ModelConfig, as the package states it.

    Parameters
    ----------
    config : ModelConfig
        Its ``depth`` and ``padding`` decide the rule.

    Returns
    -------
    dict of str to int
        {"min": smallest valid input px, "step": px between valid sizes, "offset":
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
    """The prediction path's class probabilities for ``raw``: (1, K, S', S') float32, in
    full fp32 whatever this machine autocasts to (bioimage.io tools recompute them in
    fp32 and compare)."""
    from ..normalize import normalize
    from ..predict import TorchPredictor

    plane = normalize(raw[0].transpose(1, 2, 0), cell_model.normalization)
    batch = plane.transpose(2, 0, 1)[None]
    return TorchPredictor(net, "cpu", fp32=True)(batch).astype(np.float32)


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


def folder_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of the files in ``folder`` (not its subfolders).

    Parameters
    ----------
    folder : Path
        The package folder ``write_files`` wrote.

    Returns
    -------
    dict of str to str
        Hex digests by file name and by absolute path (bioimageio's known files).
    """
    hashes = {}
    for file in folder.iterdir():
        if file.is_file():
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            hashes[file.name] = hashes[str(file)] = digest
    return hashes


def write_files(
    cell_model: CellModel,
    folder: Path,
    name: str,
    authors: list[str],
    license: str,
    test_image: np.ndarray | None,
    torchscript: bool,
) -> None:
    """Write the package's files into ``folder`` (see the module docstring for the list).

    Parameters
    ----------
    cell_model : CellModel
        The model to export; one class name per output class.
    folder : Path
        An empty folder.
    name, license : str
        The package's name and the weights' SPDX licence (for the model card).
    authors : list of str
        Who trained the model (for the model card).
    test_image : numpy.ndarray or None
        (Y, X) or (Y, X, C) image for the test input; None: a synthetic one.
    torchscript : bool
        Also write TorchScript weights when the network compiles.

    Raises
    ------
    UNetCellsError
        The model's class names do not match its number of classes.
    """
    import tifffile
    import torch

    from .bioimageio_card import model_card

    config = cell_model.config
    if len(cell_model.classes) != config.n_classes:
        raise UNetCellsError(
            f"The model has {config.n_classes} output classes but {len(cell_model.classes)} "
            f"class names {cell_model.classes}: give one name per class."
        )
    net = cpu_network(cell_model)
    state = state_dict_cpu(cell_model)
    shutil.copyfile(Path(__file__).with_name(ARCHITECTURE_FILE), folder / ARCHITECTURE_FILE)
    torch.save(state, folder / WEIGHTS_FILE)
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
