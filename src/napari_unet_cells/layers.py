"""What the plugin reads from napari layers, in one place (no Qt; napari imported lazily).

Layers are never modified here. Conventions:

- an Image layer's *plane shape* is its shape without the RGB(A) axis, at full resolution
  (the first level of a multiscale layer);
- layers this plugin makes carry ``metadata["unet_cells_role"]``: "prediction" (the labels
  Predict writes; never edited), "check" (Annotate's check overlay), "probability",
  "weight map" ...
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .core.errors import UNetCellsError

ROLE_KEY = "unet_cells_role"


def unwrap(obj: Any) -> Any:
    """The object behind napari's plugin proxy (a layer or the viewer), else ``obj``.

    Parameters
    ----------
    obj : Any
        A layer, a viewer, napari's proxy of either, or anything else (None included).

    Returns
    -------
    Any
        ``obj.__wrapped__`` when it has one, else ``obj`` itself.
    """
    return getattr(obj, "__wrapped__", obj)


def is_image(layer: Any) -> bool:
    """Whether ``layer`` is a napari Image layer (behind a proxy or not).

    Parameters
    ----------
    layer : Any
        A layer, its proxy, None or anything else.

    Returns
    -------
    bool
        True for ``napari.layers.Image`` (RGB and multiscale included).
    """
    from napari.layers import Image

    return isinstance(unwrap(layer), Image)


def is_labels(layer: Any) -> bool:
    """Whether ``layer`` is a napari Labels layer (behind a proxy or not).

    Parameters
    ----------
    layer : Any
        A layer, its proxy, None or anything else.

    Returns
    -------
    bool
        True for ``napari.layers.Labels``.
    """
    from napari.layers import Labels

    return isinstance(unwrap(layer), Labels)


def role(layer: Any) -> str | None:
    """What this plugin made a layer for ("prediction", "check", ...), from its metadata.

    Parameters
    ----------
    layer : Any
        A layer or its proxy.

    Returns
    -------
    str or None
        ``metadata["unet_cells_role"]``; None for layers the plugin did not make.
    """
    metadata = getattr(unwrap(layer), "metadata", None)
    return metadata.get(ROLE_KEY) if isinstance(metadata, dict) else None


def is_prediction(layer: Any) -> bool:
    """A Labels layer written by the Predict dock (never edited by Annotate).

    Parameters
    ----------
    layer : Any
        A layer or its proxy.

    Returns
    -------
    bool
        True for a Labels layer whose role is "prediction".
    """
    return is_labels(layer) and role(layer) == "prediction"


def is_source_image(layer: Any) -> bool:
    """An Image layer that can be segmented or annotated: not one this plugin made (a
    cell probability, a weight map).

    Parameters
    ----------
    layer : Any
        A layer or its proxy.

    Returns
    -------
    bool
        True for an Image layer without a plugin role.
    """
    return is_image(layer) and role(layer) is None


def full_resolution(layer: Any) -> Any:
    """The layer's data at full resolution (level 0 of a multiscale layer); not copied.

    Parameters
    ----------
    layer : napari.layers.Layer
        An Image or Labels layer (or its proxy).

    Returns
    -------
    array_like
        The layer's own array (numpy, dask, zarr ...), as napari holds it.
    """
    layer = unwrap(layer)
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def plane_shape(layer: Any) -> tuple[int, ...]:
    """The shape of an Image layer without its RGB(A) axis (of a Labels layer: its shape).

    Parameters
    ----------
    layer : napari.layers.Layer
        An Image or Labels layer (or its proxy); multiscale: level 0.

    Returns
    -------
    tuple of int
        E.g. (Y, X) or (Z, Y, X), px.
    """
    layer = unwrap(layer)
    shape = tuple(full_resolution(layer).shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def snapshot(layer: Any, what: str = "The") -> np.ndarray:
    """A copy of the layer's full-resolution data: later painting changes nothing in it.

    Refuses RGB images (training and annotation read greyscale or channel stacks). The
    whole array is read into memory.

    Parameters
    ----------
    layer : napari.layers.Layer
        An Image or Labels layer (or its proxy).
    what : str
        Names the layer's use in the message ("The image").

    Returns
    -------
    numpy.ndarray
        A copy of the data, its shape and dtype kept.

    Raises
    ------
    UNetCellsError
        ``layer`` is an RGB Image layer.
    """
    check_not_rgb(layer, f"{what} layer")
    return np.array(full_resolution(unwrap(layer)), copy=True)


def check_not_rgb(layer: Any, what: str = "The image") -> None:
    """Refuse an RGB Image layer for training (it reads greyscale or channel stacks).

    Parameters
    ----------
    layer : Any
        A layer or its proxy.
    what : str
        Names the layer in the message ("The image").
    """
    layer = unwrap(layer)
    if is_image(layer) and getattr(layer, "rgb", False):
        raise UNetCellsError(
            f"{what} '{layer.name}' is RGB; training reads greyscale images: split "
            "the channels (right-click the layer) and add one channel."
        )


def check_same_plane(image: Any, labels: Any, what: str = "labels") -> None:
    """Refuse a Labels layer that does not cover the image pixel for pixel.

    Parameters
    ----------
    image : napari.layers.Image
        The image (its plane shape: without the RGB axis, full resolution).
    labels : napari.layers.Labels
        Labels, annotation or ignore layer; its data shape must equal the image's plane
        shape.
    what : str
        What the labels are, for the message.

    Raises
    ------
    UNetCellsError
        The shapes differ; the message names both layers.
    """
    image, labels = unwrap(image), unwrap(labels)
    if plane_shape(image) != tuple(labels.data.shape):
        raise UNetCellsError(
            f"'{image.name}' {plane_shape(image)} and '{labels.name}' "
            f"{tuple(labels.data.shape)} differ in shape; {what} must cover the image pixel "
            "for pixel: choose the matching image."
        )
