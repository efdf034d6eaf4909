"""What the Fine-tune dock hands to the core: training samples from layers, the work of
the background threads (torch warm-up, augmentation preview), and the preview's layers.

``training_samples`` and ``show_preview`` run on the GUI thread; ``preview_tiles`` and
``warm_up_torch`` run in background threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ... import layers as L
from ...core.errors import UNetCellsError

logger = logging.getLogger(__name__)

PREVIEW_NAMES = {
    "image": "augmentation preview: image",
    "labels": "augmentation preview: labels",
    "weight": "augmentation preview: weight map",
}


def training_samples(pairs: Sequence[Any], notify: Callable[[str], object]) -> list:
    """``core.data`` training samples from the pairs' layers, copied (GUI thread).

    Painting during training changes nothing in them. A 0/1 or 0/255 mask is numbered
    into cells, with a notice passed to ``notify``.

    Parameters
    ----------
    pairs : sequence of TrainingPair
        The workspace's training set (image, labels, optional ignore layers).
    notify : callable
        Called with each notice (str) for the user.

    Returns
    -------
    list of TrainingSample
        One per pair, named after its image layer.

    Raises
    ------
    UNetCellsError
        An empty set, an RGB image, or labels without cells.
    """
    from ...core.data import as_samples
    from ...core.labels import mask_to_instances

    if not pairs:
        raise UNetCellsError(
            "The training set is empty: choose an Image and a Labels layer and click 'Add pair'."
        )
    labels = []
    for pair in pairs:
        array, notice = mask_to_instances(
            L.snapshot(pair.labels, "Labels"), f"'{pair.labels.name}'"
        )
        if notice:
            notify(notice)
        labels.append(array)
    return as_samples(
        [L.snapshot(p.image, "Image") for p in pairs],
        labels,
        [None if p.ignore is None else L.snapshot(p.ignore, "Ignore") for p in pairs],
        names=[p.image.name for p in pairs],
    )


def warm_up_torch() -> None:
    """Pay torch's one-time lazy imports (the optimiser pulls in torch._dynamo and
    torch.distributed, ~1 s): an import holds the GIL in long stretches and would pause
    the window if it happened when Train is pressed."""
    try:
        import torch

        p = torch.nn.Parameter(torch.zeros(1))
        torch.optim.AdamW([p]).step()
    except Exception:  # only a warm-up: training reports real problems itself
        logger.debug("torch warm-up failed", exc_info=True)


def start_warm_up() -> threading.Thread:
    """Run :func:`warm_up_torch` in a daemon thread (started); returns the thread."""
    thread = threading.Thread(target=warm_up_torch, name="unet-cells warm-up", daemon=True)
    thread.start()
    return thread


def preview_tiles(samples: list, config: Any, base: Any, n: int, seed: int) -> dict:
    """``n`` augmented training tiles as the network would see them (worker thread).

    Only the start model's configuration is read (from a file's header), not its weights.

    Parameters
    ----------
    samples : list of TrainingSample
        From :func:`training_samples`.
    config : TrainConfig
        The training settings (augmentation, weight map, tile).
    base : str
        The start model: a file, a session model's name or "scratch".
    n : int
        Number of tiles.
    seed : int
        Random seed (same seed, same tiles).

    Returns
    -------
    dict of str to numpy.ndarray
        ``core.train.preview_augmentation``'s tiles: "image" float32, "labels" int32,
        "target" uint8 and "weight" float32, each (n, S, S) with S the tile size, px.
    """
    from ...core.model_info import model_config_of
    from ...core.train import SCRATCH_CONFIG, preview_augmentation

    model_config = SCRATCH_CONFIG if base == "scratch" else model_config_of(base)
    return preview_augmentation(samples, config, model_config, n, seed)


def show_preview(viewer: Any, tiles: dict[str, np.ndarray]) -> None:
    """Show preview tiles as layers, re-using the preview layers made before (GUI thread).

    Parameters
    ----------
    viewer : napari.Viewer
        The dock's viewer; preview layers made before (named as in ``PREVIEW_NAMES`` and
        marked as previews, never a user's layer of that name) get the new data.
    tiles : dict of str to numpy.ndarray
        From :func:`preview_tiles` ("image", "labels" and "weight" are shown).
    """
    for key, name in PREVIEW_NAMES.items():
        mark = {"metadata": {L.ROLE_KEY: "preview"}}
        if name in viewer.layers and L.role(viewer.layers[name]) == "preview":
            viewer.layers[name].data = tiles[key]
        elif key == "labels":
            viewer.add_labels(tiles[key], name=name, opacity=0.4, **mark)
        elif key == "weight":
            viewer.add_image(
                tiles[key],
                name=name,
                colormap="inferno",
                blending="additive",
                visible=False,
                **mark,
            )
        else:
            viewer.add_image(tiles[key], name=name, colormap="gray", **mark)
    viewer.dims.set_current_step(0, 0)
