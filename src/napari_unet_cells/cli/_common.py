"""Helpers the subcommands share: reading TIFFs, numbering masks, clear write errors."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from ..core.errors import UNetCellsError

logger = logging.getLogger("napari_unet_cells")


def read_tiff(path: Path, what: str):
    """Read one TIFF image as a numpy array.

    Parameters
    ----------
    path : Path
        The file to read.
    what : str
        What the file is, for the message ("labels", "ignore mask").

    Returns
    -------
    numpy.ndarray
        The image as stored (shape and dtype of the file).

    Raises
    ------
    UNetCellsError
        The file is missing or is not a readable TIFF.
    """
    import tifffile

    if not path.is_file():
        raise UNetCellsError(f"The {what} file {path} does not exist; check the path.")
    try:
        return tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for bad files
        raise UNetCellsError(
            f"Cannot read {path} as a TIFF image ({err}); is the file complete? Save it "
            "again as TIFF."
        ) from None


def read_tiffs(paths: list[Path] | None, what: str) -> list:
    """:func:`read_tiff` of each path (an empty list for None)."""
    return [read_tiff(path, what) for path in paths or []]


def numbered(labels, name: str):
    """Labels as read, or a 0/1 or 0/255 mask numbered by connected components (with a
    note on stderr saying so)."""
    from ..core.labels import mask_to_instances

    labels, notice = mask_to_instances(labels, name)
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    return labels


def write_tiff(path: Path, array) -> None:
    """Write ``array`` as a TIFF file atomically (a failure leaves no partial file); an
    OS error becomes one clear UNetCellsError."""
    import tifffile

    from ..core.fileio import atomic_write

    with write_errors(path):
        atomic_write(path, lambda handle: tifffile.imwrite(handle, array))


@contextlib.contextmanager
def write_errors(path: Path):
    """An OS error while writing ``path`` (permissions, a full disk) as one clear line."""
    try:
        yield
    except OSError as err:
        raise UNetCellsError(
            f"Cannot write {path} ({err.strerror or err}); nothing was left half-written: free "
            "some space or choose a folder you can write to, then run again."
        ) from None


def new_output(path: Path, what: str, **kwargs) -> Path:
    """``core.fileio.check_new_output`` and ``check_writable``: refuse an existing output
    or a missing folder, and a folder this user cannot write to, before any work."""
    from ..core.fileio import check_new_output, check_writable

    path = check_new_output(path, what, **kwargs)
    check_writable(path, what)
    return path
