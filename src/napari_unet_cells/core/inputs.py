"""Input layouts: any image -> a stack of (Y, X, C) planes with the model's channels.

One place decides what the axes of an image mean: (Y, X) greyscale; (..., Y, X) stacks
and time series, processed plane by plane; (..., Y, X, C) RGB/multichannel reduced or
selected to the model's ``in_channels``. Any integer/float/bool dtype; no copy unless
channels are averaged. Needs no torch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import UNetCellsError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedImage:
    """An input image as a stack of planes.

    planes: (N, Y, X, C) view or array of the original values (not yet normalised).
    lead_shape: the original leading axes (stack/time); N = prod(lead_shape).
    message: what was done to the channels, for the user ("" if nothing).
    """

    planes: np.ndarray
    lead_shape: tuple[int, ...]
    message: str = ""

    @property
    def plane_shape(self) -> tuple[int, int]:
        return int(self.planes.shape[1]), int(self.planes.shape[2])

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.lead_shape, *self.plane_shape)


def guess_channel_axis(
    shape: tuple[int, ...],
    in_channels: int,
    rgb: bool | None,
    channel_axis: int | None,
    channel: int | None,
) -> int | None:
    """The channel axis of an image of ``shape`` (None: no channels, all planes).

    Given ``channel_axis`` or ``rgb`` win. Otherwise a last axis of at most 4 next to a
    larger one is channels (RGB(A), or 2 stains: a plane 2 px wide is no image), as is a
    last axis of ``in_channels`` > 1; and ``channel`` with a (C, Y, X) shape means axis 0.
    Leading axes are otherwise planes (Z, T): (2, Y, X) is two planes unless told.

    Parameters
    ----------
    shape : tuple of int
        The image's shape.
    in_channels : int
        Channels the model reads.
    rgb : bool or None
        True: channels last; False: no channels; None: guess.
    channel_axis : int or None
        The channel axis if known (returned as given, negative or not).
    channel : int or None
        The channel the user chose, if any.

    Returns
    -------
    int or None
        The channel axis (-1 when guessed last), or None for no channel axis.

    Raises
    ------
    UNetCellsError
        ``channel`` is given for an image of 4 or more axes whose channel axis is not
        known.
    """
    if channel_axis is not None:
        return channel_axis
    if rgb is not None:
        return -1 if rgb else None
    ndim = len(shape)
    if ndim >= 3 and (
        (shape[-1] <= 4 and shape[-2] > 4 * shape[-1])
        or (in_channels > 1 and shape[-1] == in_channels)
    ):
        return -1
    if channel is None or ndim < 3:
        return None
    if ndim == 3:
        return 0
    raise UNetCellsError(
        f"channel={channel} was given, but which axis of the image {tuple(shape)} holds the "
        "channels? Give channel_axis too (e.g. 1 for (Z, C, Y, X))."
    )


def channel_layout(
    shape: tuple[int, ...],
    in_channels: int = 1,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
) -> int | None:
    """``guess_channel_axis``, and a refusal when a 1-channel model would get a mean of stains.

    A 1-channel model reads the mean of 1, 3 or 4 channels (RGB(A)) unless ``channel``
    is given; other channel counts are refused with the choices. Needs only the shape, so
    a dock can check before starting a worker.

    Parameters
    ----------
    shape : tuple of int
        The image's shape.
    in_channels : int
        Channels the model reads.
    rgb, channel_axis, channel : optional
        As for :func:`guess_channel_axis`.

    Returns
    -------
    int or None
        The channel axis, or None for no channel axis.

    Raises
    ------
    UNetCellsError
        As :func:`guess_channel_axis`, or a 1-channel model and 2 or more than 4 channels
        without ``channel`` (the message names the choices).
    """
    axis = guess_channel_axis(tuple(shape), in_channels, rgb, channel_axis, channel)
    n = 1 if axis is None else int(shape[axis])
    if in_channels == 1 and channel is None and n not in (1, 3, 4):
        raise UNetCellsError(
            f"The image {tuple(shape)} has {n} channels and the model reads 1: choose one, "
            f"0 to {n - 1} (channel=N in Python, --channel N for unet-cells predict, "
            "'Channel' in the Predict dock)."
        )
    return axis


def describe_layout(shape: tuple[int, ...], channel_axis: int | None, channel: int | None) -> str:
    """What an image of ``shape`` is read as, e.g. "5 planes of 512x512, channel 1 of 2".

    Parameters
    ----------
    shape : tuple of int
        The image's shape.
    channel_axis : int or None
        Its channel axis (from :func:`channel_layout`).
    channel : int or None
        The channel used; None says "the mean of the channels" for 3 or 4 (RGB(A)) and
        "all N channels" otherwise (a 1-channel model then asks for a choice).

    Returns
    -------
    str
        One phrase for the user; "shape (...)" when fewer than two spatial axes remain.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) - (channel_axis is not None) < 2:
        return f"shape {shape}"
    n_channels = 1
    if channel_axis is not None:
        n_channels = shape[channel_axis]
        shape = shape[: channel_axis % len(shape)] + shape[channel_axis % len(shape) + 1 :]
    planes = math.prod(shape[:-2])
    text = f"{planes} plane{'s' if planes != 1 else ''} of {shape[-2]}x{shape[-1]}"
    if n_channels > 1 and channel is None and n_channels not in (3, 4):
        text += f", all {n_channels} channels"
    elif n_channels > 1:
        which = f"channel {channel}" if channel is not None else "the mean of the channels"
        text += f", {which} of {n_channels}"
    return text


def prepare_image(
    image: Any,
    in_channels: int = 1,
    *,
    rgb: bool | None = None,
    channel_axis: int | None = None,
    channel: int | None = None,
) -> PreparedImage:
    """Bring any image to (N, Y, X, C) planes with C == ``in_channels``.

    Parameters
    ----------
    image : array-like
        (Y, X), (..., Y, X) stacks/time series, or with channels: the last axis if
        ``rgb``, or ``channel_axis``; if neither, see ``guess_channel_axis`` (a last axis
        of <= 4 is channels; (C, Y, X) only with ``channel``). Integer, float and bool
        dtypes are accepted; complex, object and string arrays are refused.
    in_channels : int
        Channels the model reads.
    rgb, channel_axis : optional
        Where the channels are (see ``guess_channel_axis``).
    channel : int, optional
        With more channels than the model reads, use this one. By default a 1-channel
        model gets the mean of RGB(A) channels, and other channel counts are refused with
        the choices (a mean of stains is no nucleus image).

    Returns
    -------
    PreparedImage
        The planes (original values, not yet normalised), the leading axes' shape and a
        message saying what was done to the channels.

    Raises
    ------
    UNetCellsError
        When the dtype or the shape cannot fit the model.
    """
    array = _numeric(image)
    channel_axis = channel_layout(array.shape, in_channels, rgb, channel_axis, channel)
    has_channels = channel_axis is not None
    if channel_axis is not None:
        array = np.moveaxis(array, channel_axis, -1)
    spatial_ndim = array.ndim - (1 if has_channels else 0)
    if spatial_ndim < 2:
        raise UNetCellsError(
            f"The image must have at least two spatial axes (Y, X), got shape "
            f"{np.shape(image)}{' with channels last' if has_channels else ''}: give a 2-D "
            "image or a stack of 2-D planes."
        )
    if not has_channels:
        array = array[..., None]
    lead_shape = tuple(int(s) for s in array.shape[:-3])
    planes = array.reshape(-1, *array.shape[-3:])
    planes, message = _select_channels(planes, in_channels, channel, np.shape(image))
    if message:
        logger.info(message)
    return PreparedImage(planes=planes, lead_shape=lead_shape, message=message)


def _numeric(image: Any) -> np.ndarray:
    """``image`` as a non-empty numeric array (bool -> uint8); UNetCellsError otherwise."""
    array = np.asarray(image)
    if array.dtype == object or np.iscomplexobj(array) or array.dtype.kind in "SUVM":
        raise UNetCellsError(
            f"Cannot segment an image of dtype {array.dtype}: give a numeric (integer or "
            "float) image."
        )
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.size == 0:
        raise UNetCellsError(
            f"The image is empty (shape {array.shape}): it has no pixels; check that the "
            "file or layer holds image data."
        )
    return array


def _select_channels(
    planes: np.ndarray, in_channels: int, channel: int | None, shape: tuple[int, ...]
) -> tuple[np.ndarray, str]:
    """(N, Y, X, C) planes -> (N, Y, X, in_channels) and a message ("" if unchanged)."""
    n_channels = planes.shape[-1]
    if channel is not None and not 0 <= channel < n_channels:  # also on a 1-channel image
        raise UNetCellsError(
            f"channel {channel} does not exist: the image has {n_channels} channel"
            + (f"s; choose one from 0 to {n_channels - 1}." if n_channels > 1 else " (0).")
        )
    if n_channels == in_channels:
        return planes, ""
    if in_channels != 1:
        raise UNetCellsError(
            f"The model reads {in_channels} channels but the image has {n_channels} "
            f"(shape {shape}): give an image with {in_channels} channels (channels last)."
        )
    if channel is None:
        return planes.astype(np.float32).mean(axis=-1, keepdims=True), (
            f"The image has {n_channels} channels and the model reads 1: using their "
            "mean (to use one channel only: the Channel control in napari, --channel N on "
            "the command line, channel=N in Python)."
        )
    return planes[..., channel : channel + 1], (
        f"The image has {n_channels} channels and the model reads 1: using channel {channel}."
    )
