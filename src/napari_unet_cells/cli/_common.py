"""Helpers the subcommands share: reading TIFFs, numbering masks, checked and atomic
writes with clear errors."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from ..core.errors import UNetCellsError
from ..core.fileio import read_image

logger = logging.getLogger("napari_unet_cells")


def read_tiffs(paths: list[Path] | None, what: str) -> list:
    """``core.fileio.read_image`` of each path (an empty list for None).

    Parameters
    ----------
    paths : list of Path, or None
        TIFF files.
    what : str
        What the files are, for the message ("labels", "ignore mask").

    Returns
    -------
    list of numpy.ndarray
        The images as stored; UNetCellsError for a missing or unreadable file.
    """
    return [read_image(path, what) for path in paths or []]


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
