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
    """Labels as read, or a binary mask numbered by connected components.

    A 0/1 or 0/255 mask becomes cells 1..N (``core.labels.mask_to_instances``) with a
    note on stderr saying so; other labels pass unchanged.

    Parameters
    ----------
    labels : numpy.ndarray
        (..., Y, X) instance labels or a binary mask.
    name : str
        What the labels are, for the note (usually the file name).

    Returns
    -------
    numpy.ndarray
        (..., Y, X) instance labels (0 background, 1..N one cell each).
    """
    from ..core.labels import mask_to_instances

    labels, notice = mask_to_instances(labels, name)
    if notice:
        print(f"note: {notice}", file=sys.stderr)
    return labels


def write_tiff(path: Path, array) -> None:
    """Write ``array`` as a TIFF file atomically.

    A failure leaves no partial file (``core.fileio.atomic_write``); the caller has
    already refused an existing path (nothing here checks for one).

    Parameters
    ----------
    path : Path
        The TIFF file to write.
    array : numpy.ndarray
        Any shape and dtype tifffile writes.

    Raises
    ------
    UNetCellsError
        An OS error (permissions, a full disk), as one clear line.
    """
    import tifffile

    from ..core.fileio import atomic_write

    with write_errors(path):
        atomic_write(path, lambda handle: tifffile.imwrite(handle, array))


@contextlib.contextmanager
def write_errors(path: Path):
    """Context manager: an OS error while writing ``path`` as one clear line.

    Parameters
    ----------
    path : Path
        What is being written, named in the message.

    Raises
    ------
    UNetCellsError
        Instead of an OSError (permissions, a full disk) inside the block.
    """
    try:
        yield
    except OSError as err:
        raise UNetCellsError(
            f"Cannot write {path} ({err.strerror or err}); nothing was left half-written: free "
            "some space or choose a folder you can write to, then run again."
        ) from None


def new_output(path: Path, what: str, **kwargs) -> Path:
    """Check an output path before any work: ``check_new_output`` + ``check_writable``.

    Refuses an existing output (unless ``overwrite=True`` is passed on), an input file,
    a missing folder, and a folder this user cannot write to. Nothing is written.

    Parameters
    ----------
    path : Path
        The file (or zarr folder) to create.
    what : str
        What is written, for the message ("the labels").
    **kwargs
        ``overwrite``, ``inputs``, ``hint`` of ``check_new_output``.

    Returns
    -------
    Path
        ``path`` with ``~`` expanded.

    Raises
    ------
    UNetCellsError
        The output cannot or must not be written.
    """
    from ..core.fileio import check_new_output, check_writable

    path = check_new_output(path, what, **kwargs)
    check_writable(path, what)
    return path
