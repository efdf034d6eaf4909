"""Image files in and out: TIFF and zarr (incl. OME-Zarr), read lazily, written atomically.

Split from core/predict_large.py (which re-exports these names): ``open_image`` reads a
TIFF into memory or a zarr lazily as dask, ``write_array`` writes TIFF or zarr through a
reserved sibling, so an interrupted write never leaves a partial file and nothing is
ever overwritten.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import UNetCellsError
from .fileio import check_new_output, commit, remove_quietly, reserve_sibling, reserve_sibling_dir

if TYPE_CHECKING:  # pragma: no cover
    import dask.array

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)


def file_kind(path: str | Path) -> str:
    """File kind, "tiff" or "zarr", from a path's suffix (a folder without suffix counts as zarr).

    Parameters
    ----------
    path : str or Path
        An input or output image; only a suffix-less path is looked at on disk.

    Returns
    -------
    str
        "tiff" for .tif/.tiff, "zarr" for .zarr (any case).

    Raises
    ------
    UNetCellsError
        Any other suffix (or none, for a path that is not a folder).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return "tiff"
    if suffix in ZARR_SUFFIXES or (path.is_dir() and suffix == ""):
        return "zarr"
    raise UNetCellsError(
        f"{path}: unsupported format {suffix or '(no suffix)'!r}; use a TIFF (.tif, .tiff) "
        "or zarr (.zarr) file."
    )


def open_image(path: str | Path) -> np.ndarray | dask.array.Array:
    """Open an image file: TIFF -> numpy array; zarr / OME-Zarr -> lazy dask array.

    OME-Zarr: the full-resolution array of the first multiscale image; singleton leading
    axes (t, c, z of size 1) are dropped (also for plain zarr). A TIFF is read whole into
    memory.

    Parameters
    ----------
    path : str or Path
        A TIFF (.tif, .tiff) file, a zarr array, or a zarr group holding one array or
        OME-Zarr multiscales.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        The stored axes and dtype (e.g. (Y, X), (Z, Y, X), (Y, X, C)).

    Raises
    ------
    UNetCellsError
        A missing, unreadable or empty file, or an unsupported suffix; one clear line.
    """
    path = Path(path)
    if not path.exists():
        raise UNetCellsError(f"{path} does not exist; check the path.")
    kind = file_kind(path)
    if kind == "tiff":
        import tifffile

        try:
            image = tifffile.imread(path)
        except Exception as err:  # tifffile raises many types for damaged files
            raise UNetCellsError(
                f"{path}: cannot read it as a TIFF image ({err}); is the file complete? Save "
                "it again as TIFF (e.g. File > Save As > Tiff in Fiji)."
            ) from None
    else:
        image = _open_zarr(path)
    if 0 in image.shape:
        hint = (
            "the file may be damaged or incomplete: save it again as TIFF (e.g. File > Save "
            "As > Tiff in Fiji)"
            if kind == "tiff"
            else "check that the zarr array holds image data"
        )
        raise UNetCellsError(f"{path}: no pixels could be read (shape {image.shape}); {hint}.")
    return image


def _open_zarr(path: Path):
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several types for foreign folders
        raise UNetCellsError(
            f"{path}: cannot read it as a zarr array or group ({err}); give the folder of a "
            "zarr array or an OME-Zarr image."
        ) from None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if multiscales:
            key = multiscales[0]["datasets"][0]["path"]
        else:
            arrays = sorted(name for name, _ in node.arrays())
            if len(arrays) != 1:
                raise UNetCellsError(
                    f"{path}: a zarr group with {len(arrays)} arrays and no OME-Zarr "
                    "multiscales metadata; give the path of one array."
                )
            key = arrays[0]
        node = node[key]
    image = da.from_zarr(node)
    while image.ndim > 2 and image.shape[0] == 1:
        image = image[0]
    return image


def write_array(array: Any, path: Path) -> None:
    """Write a numpy or dask array to TIFF or zarr (by suffix), atomically.

    The data go to a reserved sibling (a file for TIFF, a folder holding the zarr) that is
    fsynced and renamed to ``path`` when complete (``core.fileio.commit``); ``path``
    appearing meanwhile is an error, not overwritten. On any error nothing is left. A TIFF
    is computed into memory first and written greyscale (never as RGB).

    Parameters
    ----------
    array : numpy.ndarray or dask.array.Array
        Any shape and dtype.
    path : Path
        A new .tif, .tiff or .zarr path in an existing folder.

    Raises
    ------
    UNetCellsError
        An unsupported suffix, or ``path`` appeared while writing.
    OSError
        From writing (nothing is left behind).
    """
    path = Path(path)
    if file_kind(path) == "tiff":
        import tifffile

        tmp = reserve_sibling(path)
        try:
            data = array.compute() if hasattr(array, "compute") else array
            tifffile.imwrite(tmp, np.asarray(data), photometric="minisblack")  # never RGB
            commit(tmp, path)
        finally:
            remove_quietly(tmp)
        return
    import dask.array as da

    folder = reserve_sibling_dir(path)
    try:
        lazy = array if hasattr(array, "compute") else da.from_array(array)
        lazy.to_zarr(str(folder / path.name))
        commit(folder / path.name, path)
    finally:
        remove_quietly(folder)


def check_output(path: Path) -> None:
    """Refuse an output path that exists, has an unknown format or no parent folder.

    Nothing is written.

    Parameters
    ----------
    path : Path
        The labels or probabilities file to write (.tif, .tiff or .zarr).

    Raises
    ------
    UNetCellsError
        With what to do: another name (existing files are never overwritten), a TIFF or
        zarr suffix, or an existing folder.
    """
    file_kind(path)
    check_new_output(
        Path(path), hint="choose another output name (existing files are never overwritten)"
    )
