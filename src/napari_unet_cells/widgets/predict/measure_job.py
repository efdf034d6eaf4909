"""The Predict dock's measurements in plain values: what is read from the layers on the
GUI thread (:func:`read_measure_job`), what the worker runs (:func:`run_measure`), the
table as napari features (:func:`as_features`) and the CSV (:func:`write_table`).

The physical unit: the layer's ``scale[-2:]`` is the pixel size when it is not all ones
(or when the layer has a unit); the unit is the layer's ``units`` (napari >= 0.6) when one
is set, else "um" (napari's default unit is "pixel", which says nothing).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ... import layers as L
from ...core.errors import UNetCellsError


def physical_scale(layer: Any) -> tuple[tuple[float, float] | None, str]:
    """The pixel size (sy, sx) and unit name ``measure`` takes, from a layer's
    ``scale[-2:]`` and ``units``: None when the scale is all ones and no unit is set; the
    unit "um" when the layer has none (napari's default unit is "pixel")."""
    scale = tuple(float(s) for s in layer.scale[-2:])
    unit = _unit_name(getattr(layer, "units", None))
    if unit is None and scale == (1.0, 1.0):
        return None, "um"
    return scale, unit or "um"


def _unit_name(units: Any) -> str | None:
    """ "um" for micrometre, else the unit's short name in letters ("nm", "mm"); None for
    napari's "pixel" (no unit set)."""
    if not units:
        return None
    unit = units[-1]
    if str(unit) in ("pixel", "dimensionless", ""):
        return None
    with contextlib.suppress(Exception):
        unit = f"{unit:~}"
    name = "".join(c for c in str(unit).replace("µ", "u").replace("μ", "u") if c.isalnum())
    return name or None


@dataclass(frozen=True)
class MeasureJob:
    """One measurement in plain values, read on the GUI thread (the worker gets no layer).

    labels: a copy of the layer's data; image: the intensities (channels last) or None;
    edits: the panel's edit count when it was read; note: why intensities are missing.
    """

    layer: Any
    labels: np.ndarray
    image: np.ndarray | None
    scale: tuple[float, float] | None
    unit: str
    edits: int
    note: str
    started: float


def read_measure_job(labels_layer: Any, image_layer: Any | None, edits: int = 0) -> MeasureJob:
    """Snapshot a Labels layer (copied: later painting changes nothing in it) and the image
    under it. An image that does not cover the labels pixel for pixel is left out, with a
    note (its channels may lie on any one extra axis: ``core.measure.channels_last``)."""
    from ...core.measure import channels_last

    started = time.perf_counter()
    labels = np.array(L.full_resolution(labels_layer), copy=True)
    image, note = None, ""
    if image_layer is not None:
        try:
            image = channels_last(np.asarray(L.full_resolution(image_layer)), labels.shape)
        except UNetCellsError:
            note = f"'{image_layer.name}' does not match the labels: no intensity columns."
    scale, unit = physical_scale(labels_layer)
    return MeasureJob(labels_layer, labels, image, scale, unit, edits, note, started)


def run_measure(job: MeasureJob) -> dict[str, np.ndarray]:
    """The worker's part: ``core.measure.measure`` on the job's arrays."""
    from ...core.measure import measure

    return measure(job.labels, job.image, scale=job.scale, unit=job.unit)


def as_features(table: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The table as a Labels layer's features (an "index" column = the label, which is how
    napari finds a label's row), or None when a label has several rows (a stack whose
    planes repeat labels: napari's features hold one row per label)."""
    labels = table["label"]
    if len(np.unique(labels)) != len(labels):
        return None
    return {"index": labels, **table}


def with_user_columns(features: dict[str, np.ndarray], old: Any) -> Any:
    """``features`` (from :func:`as_features`) plus the columns of the layer's own
    ``old`` features that the measurement does not make (e.g. a "class" the user set),
    matched by label: by ``old``'s "index" column, else row by row when the row counts
    agree (else those columns cannot be placed and are left out, as before)."""
    import pandas as pd

    old = pd.DataFrame(old)
    mine = [c for c in old.columns if c not in features and c != "index"]
    if not mine:
        return features
    if "index" not in old.columns:
        if len(old) != len(features["index"]):
            return features
        old = old.assign(index=features["index"])
    new = pd.DataFrame(features)
    return new.merge(old[["index", *mine]].drop_duplicates("index"), on="index", how="left")


def write_table(table: dict[str, np.ndarray], path: Path) -> Path:
    """Write the table as CSV at ``path`` (".csv" added when missing). A file the save
    dialog asked to replace is replaced atomically (a failure keeps the old one); a name
    the user did not confirm is never written over (``table_to_csv`` refuses it)."""
    from ...core.fileio import atomic_write
    from ...core.measure import table_to_csv

    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_name(path.name + ".csv")  # not the name the dialog confirmed
    elif path.exists():  # the dialog asked "replace?" and the user said yes
        text = table_to_csv(table)
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
        return path
    table_to_csv(table, path)
    return path
