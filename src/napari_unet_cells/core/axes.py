"""What the axes of an image file are: planes, channels, Y and X.

Files often say it: ImageJ hyperstacks and OME-TIFF carry axes such as "ZCYX" (read
with tifffile's ``series[0].axes``), RGB TIFFs "YXS". Where a file does not, a shape
such as (2, 512, 512) is two planes or two channels, and guessing wrong segments a
noise channel as if it were a plane: :func:`file_layout` refuses such shapes and names
the choices. The rest (a last axis of at most 4 is channels) is
``core.predict.guess_channel_axis``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import UNetCellsError

#: axis letters that mean "one plane per index" (tifffile: Q and I are unknown)
_PLANE_AXES = set("ZTQIRHEV")
_CHANNEL_AXES = set("CS")
AMBIGUOUS_MAX = 4  # an unlabelled leading axis this short may be channels


def tiff_axes(path: str | Path) -> str | None:
    """The axes letters of a TIFF's first series.

    Parameters
    ----------
    path : str or Path
        A TIFF file.

    Returns
    -------
    str or None
        Upper-case letters such as "ZCYX" or "YXS"; None when the file does not say (only
        tifffile's unknown axes Q/I besides Y and X) or cannot be read.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            axes = tif.series[0].axes.upper()
    except Exception:  # unreadable files are reported by the reader itself
        return None
    return None if set(axes) <= {"Q", "I", "Y", "X"} else axes


def file_layout(
    path: str | Path,
    shape: tuple[int, ...],
    channel: int | None = None,
    planes: bool = False,
) -> int | None:
    """The channel axis to read an image file's array of ``shape`` with (None: no
    channel axis; every leading axis is a plane).

    Uses the file's axes metadata when it has some; otherwise refuses a leading axis of
    <= 4 that could be planes or channels unless ``channel`` (then it is the channel
    axis) or ``planes`` says which.

    Parameters
    ----------
    path : str or Path
        The image file (its axes metadata is read for TIFFs).
    shape : tuple of int
        The shape of the file's array.
    channel : int, optional
        The channel the user asked for; with it, an ambiguous first axis is channels.
    planes : bool
        The user said every leading axis is a plane.

    Returns
    -------
    int or None
        The channel axis, or None. Raises UNetCellsError naming the choices when the
        shape is ambiguous.
    """
    path = Path(path)
    axes = tiff_axes(path) if path.suffix.lower() in (".tif", ".tiff") else None
    if axes is not None and len(axes) == len(shape):
        found = [i for i, a in enumerate(axes) if a in _CHANNEL_AXES]
        if found and shape[found[0]] > 1:
            return found[0]
        return None
    if planes or len(shape) < 3 or shape[-1] <= AMBIGUOUS_MAX:
        return None  # a short last axis is channels: core.predict decides
    if channel is not None:
        return 0
    if shape[0] <= AMBIGUOUS_MAX:
        raise UNetCellsError(
            f"{path.name} has shape {tuple(shape)} and no axes metadata: are these "
            f"{shape[0]} planes or {shape[0]} channels? Give --channel N to segment channel "
            "N of the first axis, or --planes to segment every plane."
        )
    return None
