"""Atomic file writes: a failure halfway leaves the previous file intact."""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not all platforms can open a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@functools.cache
def _default_file_mode() -> int:
    """The permissions ``open()`` would give a new file: 0o666 minus the umask. Read from
    /proc on Linux; elsewhere once, by setting it (which is not thread-safe)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write) -> None:
    """Write a file atomically: a failure halfway leaves ``path`` as it was.

    ``write(file_object)`` writes into a temporary sibling, which is flushed, fsynced and
    then ``os.replace``-d over ``path``. On any error (KeyboardInterrupt included) the
    temporary file is removed and ``path`` keeps its previous content. A new file gets the
    permissions a plain ``open()`` would give it (``mkstemp`` alone would make it private
    to the user); a replaced file keeps its own. This function does not refuse an existing
    ``path``: callers check first (:func:`check_new_output`).

    Parameters
    ----------
    path : Path
        The file to write; its folder must exist.
    write : callable
        ``write(fh)`` with ``fh`` a binary file object open for writing.

    Raises
    ------
    OSError
        From creating, writing or replacing the file (``path`` untouched).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with contextlib.suppress(OSError):  # e.g. file systems without POSIX modes
            # a replaced file keeps its permissions; a new one gets open()'s
            mode = os.stat(path).st_mode & 0o7777 if path.exists() else _default_file_mode()
            os.chmod(tmp, mode)
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def check_writable(path: Path, what: str = "the output") -> None:
    """Refuse an output early unless a file can be created at ``path``.

    Probed by creating (and removing) a temporary file in its folder, or in the nearest
    existing folder above it when folders still have to be made. Call it before long
    work, so that a read-only share fails at once, not after an hour of training.

    Parameters
    ----------
    path : Path
        The file to be written (``~`` expanded); it need not exist.
    what : str
        What is written, for the message.

    Raises
    ------
    UNetCellsError
        The folder is not writable (permissions, a read-only file system, not a folder).
    """
    from .errors import UNetCellsError

    path = Path(path).expanduser()
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a folder")
        fd, tmp = tempfile.mkstemp(prefix=".unet-cells-probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        reason = err.strerror or str(err)
        raise UNetCellsError(
            f"Cannot write {what} to {path} ({folder}: {reason}); choose a folder you can "
            "write to."
        ) from None


def check_new_output(
    path: Path,
    what: str = "the output",
    *,
    overwrite: bool = False,
    inputs: tuple[Path, ...] = (),
    hint: str = "choose another name (existing files are never overwritten)",
) -> Path:
    """Refuse an output path before any work is done; return it expanded.

    Parameters
    ----------
    path : the file (or zarr folder) to create.
    what : what is written, for the message ("the labels", "the model").
    overwrite : allow replacing an existing file (never an input, never a folder for a file).
    inputs : files read by the same run; writing over one of them is always refused.
    hint : what to do when the path exists and ``overwrite`` is False.

    Raises UNetCellsError when the path is one of ``inputs``, exists (unless ``overwrite``),
    or its folder does not exist.
    """
    from .errors import UNetCellsError

    path = Path(path).expanduser()
    if any(path.resolve() == Path(p).expanduser().resolve() for p in inputs):
        raise UNetCellsError(f"{path} is an input file; write {what} to a new file.")
    if path.exists() and not overwrite:
        raise UNetCellsError(f"{path} already exists; {hint}.")
    if not path.parent.is_dir():
        raise UNetCellsError(
            f"The folder {path.parent} does not exist; create it first or choose another folder."
        )
    return path


def reserve_sibling(path: Path, suffix: str = ".partial") -> Path:
    """A new, unused path next to ``path``, reserved as an empty file.

    For writers that need a name, not a file object (zarr folders, tifffile): the caller
    writes to it (replacing the empty file) and then calls :func:`commit`, or
    :func:`remove_quietly` on failure. It gets the permissions ``open()`` would give.

    Parameters
    ----------
    path : Path
        The final file; its folder must exist.
    suffix : str
        Ending of the temporary name.

    Returns
    -------
    Path
        A hidden ``.NAME.XXXX<suffix>`` file in ``path``'s folder.
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    with contextlib.suppress(OSError):  # the file it becomes gets open()'s permissions
        os.chmod(name, _default_file_mode())
    return Path(name)


def reserve_sibling_dir(path: Path, suffix: str = ".partial") -> Path:
    """A new, empty folder next to ``path`` (e.g. to build a zarr folder in).

    Write ``folder / path.name``, :func:`commit` that to ``path``, then remove the folder
    with :func:`remove_quietly`.

    Parameters
    ----------
    path : Path
        The final file or folder; its parent folder must exist.
    suffix : str
        Ending of the temporary folder's name.

    Returns
    -------
    Path
        A hidden ``.NAME.XXXX<suffix>`` folder in ``path``'s folder.
    """
    path = Path(path)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent))


def commit(tmp: Path, path: Path, *, replace: bool = False) -> None:
    """Move the finished ``tmp`` (file or folder) to ``path`` after fsyncing it.

    ``tmp`` is left for the caller to remove on error (see :func:`remove_quietly`).

    Parameters
    ----------
    tmp : Path
        The finished file or folder, on the same file system as ``path``.
    path : Path
        Its final name.
    replace : bool
        Allow replacing a ``path`` that exists now; otherwise it is refused.

    Raises
    ------
    UNetCellsError
        ``path`` appeared meanwhile and ``replace`` is False (nothing is overwritten).
    OSError
        From the move itself.
    """
    from .errors import UNetCellsError

    tmp, path = Path(tmp), Path(path)
    if path.exists() and not replace:
        raise UNetCellsError(
            f"{path} appeared while working; it was not overwritten: run again with another "
            "output name."
        )
    if tmp.is_file():
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def remove_quietly(path: Path) -> None:
    """Remove a temporary file or folder if it is there; never raise.

    Parameters
    ----------
    path : Path
        A file, a folder (removed with its content) or a missing path (nothing done).
    """
    import shutil

    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def read_image(path: str | Path, what: str = "image"):
    """Read a TIFF file, or raise one clear error.

    Parameters
    ----------
    path : str or Path
        The TIFF file.
    what : str
        What the file holds, for the message ("labels", "ignore mask", ...).

    Returns
    -------
    np.ndarray
        The file's pixels as ``tifffile.imread`` returns them (any shape and dtype).

    Raises
    ------
    UNetCellsError
        When the file does not exist or cannot be read as a TIFF image.
    """
    import tifffile

    from .errors import UNetCellsError

    path = Path(path)
    if not path.is_file():
        raise UNetCellsError(f"The {what} file {path} does not exist; check the path.")
    try:
        return tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for bad files
        raise UNetCellsError(
            f"Cannot read {path} as a TIFF image ({err}); is the file complete? Save it "
            "again as TIFF."
        ) from None
