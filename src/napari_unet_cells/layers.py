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
    """The object behind napari's plugin proxy (a layer or the viewer), else ``obj``."""
    return getattr(obj, "__wrapped__", obj)


def is_image(layer: Any) -> bool:
    from napari.layers import Image

    return isinstance(unwrap(layer), Image)


def is_labels(layer: Any) -> bool:
    from napari.layers import Labels

    return isinstance(unwrap(layer), Labels)


def role(layer: Any) -> str | None:
    """What this plugin made a layer for ("prediction", "check", ...), from its metadata."""
    metadata = getattr(unwrap(layer), "metadata", None)
    return metadata.get(ROLE_KEY) if isinstance(metadata, dict) else None


def is_prediction(layer: Any) -> bool:
    """A Labels layer written by the Predict dock (never edited by Annotate)."""
    return is_labels(layer) and role(layer) == "prediction"


def full_resolution(layer: Any) -> Any:
    """The layer's data at full resolution (level 0 of a multiscale layer); not copied."""
    layer = unwrap(layer)
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def plane_shape(layer: Any) -> tuple[int, ...]:
    """The shape of an Image layer without its RGB(A) axis (of a Labels layer: its shape)."""
    layer = unwrap(layer)
    shape = tuple(full_resolution(layer).shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def snapshot(layer: Any, what: str = "The") -> np.ndarray:
    """A copy of the layer's full-resolution data: later painting changes nothing in it.

    Refuses RGB images (training and annotation read greyscale or channel stacks).
    """
    layer = unwrap(layer)
    if is_image(layer) and getattr(layer, "rgb", False):
        raise UNetCellsError(
            f"{what} layer '{layer.name}' is RGB; training reads greyscale images: split "
            "the channels (right-click the layer) and add one channel."
        )
    return np.array(full_resolution(layer), copy=True)


def check_same_plane(image: Any, labels: Any, what: str = "labels") -> None:
    """Refuse a Labels layer that does not cover the image pixel for pixel."""
    image, labels = unwrap(image), unwrap(labels)
    if plane_shape(image) != tuple(labels.data.shape):
        raise UNetCellsError(
            f"'{image.name}' {plane_shape(image)} and '{labels.name}' "
            f"{tuple(labels.data.shape)} differ in shape; {what} must cover the image pixel "
            "for pixel: choose the matching image."
        )
