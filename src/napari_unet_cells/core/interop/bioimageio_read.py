"""Reading bioimage.io packages: those this plugin exported load back as CellModels.

Needs only torch (for the weights) and PyYAML; no bioimageio packages. A package can be a
.zip, a folder holding ``rdf.yaml`` (or ``bioimageio.yaml``), or that yaml file. A
package of another architecture, or of another kind (a dataset), raises UNetCellsError
saying what it is.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UNetCellsError
from .bioimageio_files import CONFIG_KEY, RDF_NAMES

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from ..checkpoint import CellModel


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
    """Whether ``path`` looks like a bioimage.io package. Does not validate.

    Parameters
    ----------
    path : str or os.PathLike
        A zip holding rdf.yaml (or ``*bioimageio.yaml``), a folder holding one, or such a
        yaml file.

    Returns
    -------
    bool
        False also for a missing or unreadable path (never raises).
    """
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
    """The model-file header stored in a package this plugin exported.

    Like ``checkpoint.read_model_info``; imports neither torch nor bioimageio.

    Parameters
    ----------
    path : str or os.PathLike
        The package (.zip, folder or rdf.yaml).

    Returns
    -------
    dict of str to Any
        The header under ``config.napari_unet_cells`` (model_config, normalization,
        classes, provenance, ...).

    Raises
    ------
    UNetCellsError
        Not a package, damaged, not a model, not exported by this plugin (the message says
        what it is), or of a newer format version.
    """
    path = Path(path)
    package = _Package(path)
    try:
        return _our_header(path, package.rdf())
    finally:
        package.close()


def read_bioimageio_weights(path: str | os.PathLike) -> list[str]:
    """The weight formats a package holds, e.g. ["pytorch_state_dict", "torchscript"].

    Parameters
    ----------
    path : str or os.PathLike
        The package (.zip, folder or rdf.yaml); any bioimage.io package, not only ours.

    Returns
    -------
    list of str
        Sorted; empty when its rdf lists no weights.

    Raises
    ------
    UNetCellsError
        Not a package, or its rdf.yaml cannot be read.
    """
    package = _Package(Path(path))
    try:
        return sorted((package.rdf().get("weights") or {}).keys())
    finally:
        package.close()


def load_bioimageio(path: str | os.PathLike, device: str | torch.device = "cpu") -> CellModel:
    """Load a bioimage.io package exported by this plugin as a CellModel (eval mode).

    Reads the ``pytorch_state_dict`` weights (``torch.load(weights_only=True)``, checked
    against the package's SHA-256) and the model header under ``config.napari_unet_cells``.
    Needs torch and PyYAML only, no bioimageio packages.

    Parameters
    ----------
    path : str or os.PathLike
        The package (.zip, folder or rdf.yaml).
    device : str or torch.device
        Where the network goes ("cpu", "auto", "cuda:N", ...; see
        ``core.device.resolve_device``).

    Returns
    -------
    CellModel
        Its provenance records the package's file name (``bioimageio_package``).

    Raises
    ------
    UNetCellsError
        A package of another architecture or kind (the message says what it is), a newer
        format, damaged weights (SHA-256, unreadable, not fitting the network), or an
        unavailable device.
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
