"""Model files: weights + network config + normalisation + class meaning + provenance.

A model file is a NumPy ``.npz`` archive (a zip): one array per weight tensor and a JSON
header in the member ``__meta__``. Loading uses ``allow_pickle=False``, so a file can
never run code; the zip CRCs and a SHA-256 over all tensors catch damage. Saving writes
a temporary file in the same folder, fsyncs it and renames it over the target, so an
interrupted save never leaves a broken file where a good one was; with
``overwrite=False`` (and in ``create_new_file``) the finished file gets its name only if
no file has it, checked atomically at that moment, so a file that appeared meanwhile
(e.g. during a training run) is never replaced.

Reading the header (``read_model_info``) does not import torch.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import secrets
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ModelConfig, NormalizationConfig, config_from_dict, config_to_dict
from .errors import UNetCellsError
from .fileio import atomic_write, check_new_output, remove_quietly

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .unet import UNet

logger = logging.getLogger(__name__)

FORMAT_NAME = "napari-unet-cells model"
FORMAT_VERSION = 1
_META_KEY = "__meta__"
_TENSOR_PREFIX = "tensor:"


@dataclass
class CellModel:
    """A network with everything needed to use it on new images.

    net: the U-Net (its ``config`` is the ModelConfig).
    normalization: how input images are normalised (same in training and prediction).
    classes: meaning of each output channel, background first.
    provenance: where the weights came from (data summary, steps, metrics, dates).
    extra: settings later stages store with the model (e.g. instance post-processing).
    """

    net: UNet
    normalization: NormalizationConfig = field(default_factory=NormalizationConfig)
    classes: tuple[str, ...] = ("background", "cell")
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> ModelConfig:
        return self.net.config

    @classmethod
    def new(cls, config: ModelConfig | None = None, seed: int = 0, **kwargs) -> CellModel:
        """A freshly initialised model (paper init, seeded)."""
        import torch

        from .unet import UNet

        net = UNet(config)
        net.reset_parameters(torch.Generator().manual_seed(seed))
        kwargs.setdefault("classes", default_classes(net.config.n_classes))
        return cls(net=net, **kwargs)


def default_classes(n_classes: int) -> tuple[str, ...]:
    """Class names for a new network, one per output channel, background first.

    Parameters
    ----------
    n_classes : the network's output channels (>= 2).

    Returns
    -------
    ("background", "cell") as in the paper; with 3 classes ("background", "cell",
    "boundary"), the boundary class being each cell's 1 px outline, seams between
    touching cells included (core/data.py ``class_target``); more: "class k" for the rest.
    """
    if n_classes == 2:
        return ("background", "cell")
    if n_classes == 3:
        return ("background", "cell", "boundary")
    return ("background", "cell", *(f"class {k}" for k in range(2, n_classes)))


class ModelFileExistsError(UNetCellsError):
    """A model file was not written because a file of that name exists (it may have
    appeared while the model was being made); that file was left as it was."""


def save_model(
    model: CellModel | UNet, path: str | os.PathLike, *, overwrite: bool = True
) -> Path:
    """Write ``model`` to a model file, atomically.

    Parameters
    ----------
    model : the model; a UNet alone is wrapped in a CellModel with default settings.
    path : the file to write (``.npz``); its folder must exist.
    overwrite : True replaces an existing file (atomically: readers see the old or the
        new file, never half of one); False never replaces one, not even a file that
        appears while this one is written (``ModelFileExistsError``).

    Returns
    -------
    ``path`` as a Path.

    Raises UNetCellsError for a folder, a missing folder, an existing file when not
    ``overwrite``, class names that do not fit, or provenance that is not JSON; OSError
    when writing fails (the previous file, if any, is kept, and no temporary file is
    left).
    """
    from .unet import UNet

    if isinstance(model, UNet):
        model = CellModel(net=model)
    path = Path(path).expanduser()
    if path.is_dir():
        raise UNetCellsError(f"Cannot save the model to {path}: it is a folder; give a file name.")
    hint = "choose another file name, or save with overwrite=True to replace it"
    check_new_output(path, "the model", overwrite=overwrite, hint=hint)
    tensors = {name: _to_numpy(value) for name, value in model.net.state_dict().items()}
    if len(model.classes) != model.config.n_classes:
        raise UNetCellsError(
            f"The model has {model.config.n_classes} output classes but "
            f"{len(model.classes)} class names {model.classes}: give one name per class."
        )
    from .. import __version__

    provenance = {
        "saved": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        **model.provenance,
    }
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "model_config": config_to_dict(model.config),
        "normalization": config_to_dict(model.normalization),
        "classes": list(model.classes),
        "provenance": provenance,
        "extra": model.extra,
        "tensors": {
            k: {"dtype": str(v.dtype), "shape": list(v.shape)} for k, v in tensors.items()
        },
        "sha256": _digest(tensors),
    }
    try:
        header = json.dumps(meta, indent=1, sort_keys=True)
    except TypeError as err:
        raise UNetCellsError(
            f"The model's provenance/extra must be JSON-serialisable (numbers, strings, "
            f"lists, dicts): {err}"
        ) from None
    arrays = {_META_KEY: np.frombuffer(header.encode("utf-8"), dtype=np.uint8)}
    arrays.update({_TENSOR_PREFIX + k: v for k, v in tensors.items()})

    def write(handle) -> None:
        np.savez(handle, **arrays)

    if overwrite:
        atomic_write(path, write)
    else:
        create_new_file(path, lambda tmp: atomic_write(tmp, write))
    logger.info("saved model to %s", path)
    return path


def create_new_file(path: str | os.PathLike, write_to: Callable[[Path], object]) -> Path:
    """Create the file ``path`` without ever replacing one of that name.

    Parameters
    ----------
    path : the file to create; its folder must exist.
    write_to : called with a new temporary path next to ``path``; writes the complete
        file there (e.g. ``lambda tmp: save_model(model, tmp)``).

    Returns
    -------
    ``path``, now holding what ``write_to`` wrote.

    Raises ModelFileExistsError if ``path`` exists when the file is ready, even if it
    appeared a moment before: the file is hard-linked to its name, which fails
    atomically if the name is taken (where a file system has no hard links, the name is
    checked just before the rename). The temporary file is removed in every case.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
    try:
        write_to(tmp)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ModelFileExistsError(
                f"{path} appeared while the model was being made; it was not replaced."
            ) from None
        except OSError:  # no hard links here (some shares, FAT): check, then rename
            if path.exists():
                raise ModelFileExistsError(
                    f"{path} appeared while the model was being made; it was not replaced."
                ) from None
            os.replace(tmp, path)
    finally:
        remove_quietly(tmp)
    return path


def read_model_info(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a model file, read without loading the weights.

    Checks that the file is a model file of a supported format; does not verify the
    weights (``load_model`` does) and does not import torch.

    Parameters
    ----------
    path : a model file (.npz), or a bioimage.io package exported by this plugin (the
        header stored in it).

    Returns
    -------
    {"format", "format_version", "model_config", "normalization", "classes",
    "provenance", "extra", "tensors" (dtype and shape of each), "sha256"}.

    Raises UNetCellsError naming the file if it is missing, foreign, damaged or newer.
    """
    path = Path(path)
    if _is_bioimageio_package(path):
        from .interop.bioimageio import read_bioimageio_info

        return read_bioimageio_info(path)
    with _open_archive(path) as archive:
        return _read_meta(archive, path)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> CellModel:
    """Load a model file, verify its integrity and rebuild the network.

    Parameters
    ----------
    path : a model file (.npz), or a bioimage.io package (.zip) exported by this plugin
        (``unet-cells export``).
    device : where the network goes ("cpu", "cuda[:N]", "mps", "auto" or a
        torch.device).

    Returns
    -------
    The CellModel, its network in eval mode on ``device``.

    Raises UNetCellsError naming the file if it is missing, foreign (a bioimage.io
    package of another architecture too), truncated, damaged (the weights' SHA-256 does
    not match) or from a newer format.
    """
    import torch

    from .device import resolve_device
    from .unet import UNet

    path = Path(path)
    if _is_bioimageio_package(path):
        from .interop.bioimageio import load_bioimageio

        return load_bioimageio(path, device)
    with _open_archive(path) as archive:
        meta = _read_meta(archive, path)
        try:
            tensors = {
                key[len(_TENSOR_PREFIX) :]: archive[key]
                for key in archive.files
                if key.startswith(_TENSOR_PREFIX)
            }
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
            raise _damaged(path, err) from None
    if _digest(tensors) != meta.get("sha256"):
        raise _damaged(path, "the weights do not match their checksum")
    config = config_from_dict(ModelConfig, meta["model_config"])
    net = UNet(config)
    try:
        net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in tensors.items()})
    except RuntimeError as err:
        raise _damaged(path, f"the weights do not fit the stored network config ({err})") from None
    net.to(resolve_device(device)).eval()
    return CellModel(
        net=net,
        normalization=config_from_dict(NormalizationConfig, meta["normalization"]),
        classes=tuple(meta["classes"]),
        provenance=dict(meta.get("provenance", {})),
        extra=dict(meta.get("extra", {})),
    )


# --------------------------------------------------------------------------------------


def _is_bioimageio_package(path: Path) -> bool:
    """A bioimage.io package (zip or folder with rdf.yaml) rather than an .npz model file."""
    if path.suffix.lower() == ".npz" or not path.exists():
        return False
    from .interop.bioimageio import is_bioimageio_package

    return is_bioimageio_package(path)


def _open_archive(path: Path):
    if not path.exists():
        raise UNetCellsError(f"Model file {path} does not exist; check the path.")
    if path.is_dir():
        raise UNetCellsError(
            f"{path} is a folder, not a model file: choose a .npz file saved by this plugin."
        )
    if not zipfile.is_zipfile(path):
        raise UNetCellsError(
            f"{path} is not a napari-unet-cells model file (not an .npz archive, or truncated "
            "or damaged, e.g. by an interrupted copy): choose a .npz file saved by this "
            "plugin (Fine-tune dock, unet-cells finetune), or copy it again."
        )
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise _damaged(path, err) from None


def _read_meta(archive, path: Path) -> dict[str, Any]:
    if _META_KEY not in archive.files:
        raise UNetCellsError(
            f"{path} is a zip/npz file but not a napari-unet-cells model file (it has no "
            "model header): weights from other programs cannot be loaded; choose a .npz file "
            "saved by this plugin."
        )
    try:
        meta = json.loads(archive[_META_KEY].tobytes().decode("utf-8"))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, UnicodeDecodeError) as err:
        raise _damaged(path, err) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise UNetCellsError(
            f"{path} is not a napari-unet-cells model file (its header belongs to another "
            "program): choose a .npz file saved by this plugin."
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UNetCellsError(
            f"{path} uses model format {version!r}, newer than this plugin reads "
            f"({FORMAT_VERSION}): upgrade napari-unet-cells (pip install -U "
            "napari-unet-cells) to load it."
        )
    for key in ("model_config", "normalization", "classes", "sha256"):
        if key not in meta:
            raise _damaged(path, f"the header lacks {key!r}")
    return meta


def _damaged(path: Path, reason: object) -> UNetCellsError:
    return UNetCellsError(
        f"Model file {path} is damaged or truncated ({reason}); use another copy or "
        "re-save the model."
    )


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    import torch

    tensor = tensor.detach().cpu()
    if tensor.is_floating_point() and tensor.dtype != torch.float64:
        tensor = tensor.float()
    return tensor.numpy()


def _digest(tensors: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        sha.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()
