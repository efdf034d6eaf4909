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
    """Write a file atomically: ``write(file_object)`` into a temporary sibling, flush and
    fsync it, then ``os.replace`` it over ``path``. On any error the temporary file is
    removed and ``path`` keeps its previous content. A new file gets the permissions a plain
    ``open()`` would give it (``mkstemp`` alone would make it private to the user); a
    replaced file keeps its own."""
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
    """Raise UNetCellsError unless a file can be created at ``path``: probed by creating
    (and removing) a temporary file in its folder, or in the nearest existing folder above
    it when folders still have to be made. Call it before long work, so that a read-only
    share fails at once, not after an hour of training."""
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
