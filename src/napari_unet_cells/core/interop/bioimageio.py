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

This module is the public face and the export itself; the parts live beside it:
``bioimageio_files`` (the files and their names), ``bioimageio_describe`` (the spec
description), ``bioimageio_card`` (the README) and ``bioimageio_read`` (loading back).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import UNetCellsError
from . import INTEROP_HINT, require
from .bioimageio_card import model_card
from .bioimageio_files import (
    ARCHITECTURE_CALLABLE,
    ARCHITECTURE_FILE,
    CONFIG_KEY,
    INPUT_ID,
    OUTPUT_ID,
    PACKAGE_URL,
    PAPER_DOI,
    PAPER_URL,
    RDF_NAMES,
    TORCHSCRIPT_FILE,
    tile_constraints,
)
from .bioimageio_read import (
    is_bioimageio_package,
    load_bioimageio,
    read_bioimageio_info,
    read_bioimageio_weights,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..checkpoint import CellModel

logger = logging.getLogger(__name__)

DEFAULT_LICENSE = "CC-BY-4.0"
_OUR_URLS = (PAPER_URL, PACKAGE_URL, f"https://doi.org/{PAPER_DOI}")

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_+\- ()]+")


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
    from ..fileio import atomic_write
    from ..registry import resolve_model

    path = _check_target(Path(path), overwrite)
    require("bioimageio.spec", "Exporting to bioimage.io")
    require("bioimageio.core", "Exporting to bioimage.io")
    name = name or _default_name(path)
    _check_fields(name, license)
    cell_model = resolve_model(model)
    authors = list(authors or ["napari-unet-cells user"])
    with tempfile.TemporaryDirectory(prefix="unet-cells-export-") as tmp:
        package = _build_package(
            cell_model, Path(tmp), name, description, authors, license, test_image, torchscript
        )
        _check_package(package, path, test)
        with open(package, "rb") as source:
            atomic_write(path, lambda handle: shutil.copyfileobj(source, handle))
    logger.info("exported bioimage.io package to %s", path)
    return path


def _build_package(
    cell_model: CellModel,
    folder: Path,
    name: str,
    description: str | None,
    authors: list[str],
    license: str,
    test_image: np.ndarray | None,
    torchscript: bool,
) -> Path:
    """Write the package's files into ``folder``, describe them and zip them as
    ``folder/package.zip``; a field bioimage.io refuses becomes UNetCellsError."""
    from bioimageio.spec import save_bioimageio_package_to_stream

    from .bioimageio_describe import describe
    from .bioimageio_files import folder_hashes, write_files

    write_files(cell_model, folder, name, authors, license, test_image, torchscript)
    with _offline_context(folder_hashes(folder)):
        try:
            descr = describe(cell_model, folder, name, description, authors, license)
        except ValueError as err:  # pydantic's ValidationError: a field the user gave
            raise UNetCellsError(
                f"Cannot describe the model for bioimage.io: {_first_errors(err)}. Check "
                "the name (5-128 letters, digits, spaces or _+-()), the licence (an SPDX "
                "id such as CC-BY-4.0 or MIT) and the authors."
            ) from None
        package = folder / "package.zip"
        with open(package, "wb") as stream:
            save_bioimageio_package_to_stream(descr, output_stream=stream)
    return package


def _check_package(package: Path, path: Path, test: bool) -> None:
    """The written zip, validated as a consumer loads it and (``test``) run on its test
    tensors; a failure raises UNetCellsError (so nothing is written)."""
    summary = test_package(package) if test else _load_package(package).validation_summary
    if summary.status not in (("passed",) if test else ("passed", "valid-format")):
        raise UNetCellsError(
            f"The bioimage.io package for {path.name} failed bioimage.io's "
            f"{'model test' if test else 'validation'}, so it was not written: "
            f"{_summary_errors(summary)}. Please report this at {PACKAGE_URL}/issues."
        )


def test_package(source: str | os.PathLike, weight_format: str | None = None):
    """Run ``bioimageio.core.test_model`` on a package, offline, on the CPU.

    Parameters
    ----------
    source : str or os.PathLike
        The package (.zip, folder or rdf.yaml).
    weight_format : str, optional
        Test only this format ("pytorch_state_dict", "torchscript"); None: all of them.

    Returns
    -------
    bioimageio.spec.summary.ValidationSummary
        ``.status == "passed"`` when it passed; a package not valid against the spec
        returns its validation summary without running the model.

    Raises
    ------
    UNetCellsError
        bioimageio.core is not installed (the ``interop`` extra).
    """
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


def _check_target(path: Path, overwrite: bool) -> Path:
    """A usable package path: a .zip name, not a folder, new (unless ``overwrite``), in an
    existing folder."""
    from ..fileio import check_new_output

    if path.suffix.lower() != ".zip":
        raise UNetCellsError(
            f"{path}: a bioimage.io package is a .zip file; give a name ending in .zip, "
            "e.g. my_model.zip."
        )
    if path.is_dir():
        raise UNetCellsError(f"{path} is a folder; give a file name ending in .zip.")
    return check_new_output(
        path,
        "the package",
        overwrite=overwrite,
        hint="choose another name, or pass --overwrite (overwrite=True) to replace it",
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


__all__ = [
    "ARCHITECTURE_CALLABLE",
    "ARCHITECTURE_FILE",
    "CONFIG_KEY",
    "INPUT_ID",
    "INTEROP_HINT",
    "OUTPUT_ID",
    "RDF_NAMES",
    "TORCHSCRIPT_FILE",
    "export_bioimageio",
    "is_bioimageio_package",
    "load_bioimageio",
    "model_card",
    "read_bioimageio_info",
    "read_bioimageio_weights",
    "test_package",
    "tile_constraints",
]
