"""Small facts about model files that docks and the command line share.

- :func:`default_model_path`: where a new fine-tuned model goes when the user named no
  file: ``<folder>/<stem>_unet_<YYYYmmdd-HHMMSS>.npz``, with ``_1``, ``_2`` ... added when
  that name is taken (an existing file is never chosen);
- :func:`validation_ap50`: the AP50 a model reached on its validation data, read from its
  provenance (with the post-processing chosen for it, when one was tuned).

(A model's network config without loading its weights: ``core.model_info.model_config_of``.)
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

MODELS_FOLDER = "models"  # a new model goes into this folder beside its first image


def plugin_home() -> Path:
    """``$NAPARI_UNET_CELLS_HOME``, else ``~/napari-unet-cells``: where models and
    annotations go when no image file gives a folder (not created here)."""
    return Path(os.environ.get("NAPARI_UNET_CELLS_HOME") or Path.home() / "napari-unet-cells")


def safe_stem(name: str) -> str:
    """``name`` with every character other than letters, digits, '-' and '_' made '_'.

    Parameters
    ----------
    name : str
        Usually a layer's name (anything; it is passed through ``str``).

    Returns
    -------
    str
        A file-name stem of the same length; "model" for an empty name.
    """
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in str(name)) or "model"


def default_model_folder(image_file: str | os.PathLike | None) -> Path:
    """A "models" folder beside ``image_file``, else ``plugin_home() / "models"``.

    The folder may not exist yet (it is not created here).

    Parameters
    ----------
    image_file : str, os.PathLike or None
        The first training image's file; None or "" for a layer not read from a file.

    Returns
    -------
    Path
        The folder for a new model file.
    """
    if image_file:
        return Path(image_file).parent / MODELS_FOLDER
    return plugin_home().expanduser() / MODELS_FOLDER


def default_model_path(
    folder: str | os.PathLike, stem: str, now: _dt.datetime | None = None
) -> Path:
    """A new file name ``<folder>/<stem>_unet_<stamp>.npz`` that no file has yet.

    Parameters
    ----------
    folder
        The folder of the model file (not created here).
    stem
        Usually the labels layer's name; characters unsafe in file names become '_'.
    now
        The time stamped into the name (default: the local time now).

    Returns
    -------
    Path
        ``<stem>_unet_<YYYYmmdd-HHMMSS>.npz``, or ``..._<n>.npz`` with the smallest
        ``n >= 1`` that is free when that name exists.
    """
    folder = Path(folder)
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{safe_stem(stem)}_unet_{stamp}"
    path = folder / f"{base}.npz"
    counter = 1
    while path.exists():
        path = folder / f"{base}_{counter}.npz"
        counter += 1
    return path


def validation_ap50(provenance: dict[str, Any] | None) -> float | None:
    """The validation AP50 recorded in a model's provenance, or None if none was.

    For a fine-tuned model it is the best validation's AP50 with the post-processing
    chosen for the model (``provenance["instance_tuning"]``), the number training reports.

    Parameters
    ----------
    provenance : dict or None
        A model's provenance (``CellModel.provenance`` or the file header's).

    Returns
    -------
    float or None
        AP50 in [0, 1], from ``provenance["validation"]["ap50"]``.
    """
    validation = (provenance or {}).get("validation") or {}
    ap50 = validation.get("ap50") if isinstance(validation, dict) else None
    return None if ap50 is None else float(ap50)
