"""Per-cell measurements: from a label image (and the image under it) to a table.

A *table* is a plain ``dict`` of equal-length 1-D numpy arrays, one entry per column, one
row per cell, in label order (plane by plane for stacks). It needs no pandas; napari takes
it as a Labels layer's ``features``, and ``pandas.DataFrame(table)`` makes a data frame.

Columns (lengths in pixels unless the name ends in a unit; see docs/measure.md):

- ``label``; ``plane`` (stacks only: the flat index of the (Y, X) plane, C order);
- ``centroid_y``, ``centroid_x`` (px, from the top-left pixel's centre);
- ``area_px``, ``perimeter_px``, ``equivalent_diameter_px`` (diameter of the disc of the
  same area), ``major_axis_px``, ``minor_axis_px`` (of the ellipse with the same second
  moments), ``eccentricity`` (0 = circle), ``solidity`` (area / convex hull area);
- with a pixel size ``scale=(sy, sx)`` in ``unit``: ``area_<unit>2``; when the pixels are
  square also ``perimeter_<unit>``, ``equivalent_diameter_<unit>``, ``major_axis_<unit>``,
  ``minor_axis_<unit>``;
- with an image: ``mean_intensity``, ``max_intensity``, ``min_intensity``,
  ``integrated_intensity`` (sum over the cell's pixels), suffixed ``_c0``, ``_c1``, ...
  for each channel of a multichannel image;
- ``touches_edge`` (bool: a pixel of the cell lies on the plane's border; its size is then
  unknown), ``n_neighbours`` (cells it touches in the 8-neighbourhood: the adjacency the
  weight map's separation border is drawn between).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import UNetCellsError
from .labels import check_labels, touching_pairs

_LENGTHS = ("perimeter", "equivalent_diameter", "major_axis", "minor_axis")


def measure(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    *,
    scale: tuple[float, float] | None = None,
    unit: str = "um",
) -> dict[str, np.ndarray]:
    """Measure every cell of a label image.

    Parameters
    ----------
    labels : (Y, X) or (..., Y, X) int array, 0 = background, k > 0 = cell k.
    image : optional intensities under the labels: the same shape as ``labels``, or with a
        trailing channel axis (..., Y, X, C).
    scale : optional pixel size (sy, sx) in ``unit`` (e.g. a napari layer's ``scale[-2:]``).
    unit : the name of the physical unit in column names ("um" gives ``area_um2``).

    Returns
    -------
    dict of 1-D numpy arrays, one row per cell (columns: see the module docstring).
    An image without cells gives the columns with no rows.
    """
    labels = check_labels(labels)
    if labels.ndim < 2:
        raise UNetCellsError(f"labels must be at least 2-D (Y, X), got shape {labels.shape}.")
    image = _check_image(image, labels.shape)
    planes = labels.reshape((-1, *labels.shape[-2:]))
    images = None
    if image is not None:  # (P, Y, X) or (P, Y, X, C)
        images = image.reshape((planes.shape[0], *image.shape[labels.ndim - 2 :]))
    tables = []
    for index, plane in enumerate(planes):
        table = _measure_plane(plane, None if images is None else images[index])
        if labels.ndim > 2:
            rows = len(table["label"])
            table = {"label": table.pop("label"), "plane": np.full(rows, index), **table}
        tables.append(table)
    table = _concatenate(tables)
    if scale is not None:
        table = _add_physical(table, scale, unit)
    return table


def _check_image(image: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if image is None:
        return None
    image = np.asarray(image)
    if image.shape == shape or (image.ndim == len(shape) + 1 and image.shape[:-1] == shape):
        return image.astype(np.float64, copy=False)
    raise UNetCellsError(
        f"The image {image.shape} does not match the labels {shape}: give the image the "
        "labels were made from (same plane shape; channels, if any, on the last axis)."
    )


def _measure_plane(plane: np.ndarray, image: np.ndarray | None) -> dict[str, np.ndarray]:
    """The table of one (Y, X) plane; ``image``: (Y, X) or (Y, X, C) or None.

    Perimeter and the intensity extremes come from ``skimage.measure.regionprops_table``;
    solidity from ``scipy.spatial.ConvexHull`` (see :func:`_convex_areas`); centroid and
    the ellipse axes from the same second moments regionprops uses, summed for all cells at
    once (regionprops computes them cell by cell, 5x slower on 2048 x 2048).
    """
    from skimage.measure import regionprops_table

    properties = ["label", "perimeter"]
    if image is not None:
        properties += ["intensity_max", "intensity_min"]
    raw = regionprops_table(plane, intensity_image=image, properties=properties)
    cells = np.asarray(raw["label"], dtype=np.int64)
    columns, moments = _moment_columns(plane, cells)
    table = {"label": cells, **columns}
    table["perimeter_px"] = np.asarray(raw["perimeter"], dtype=np.float64)
    table["equivalent_diameter_px"] = np.sqrt(4 * table["area_px"] / np.pi)
    table["major_axis_px"], table["minor_axis_px"], table["eccentricity"] = _ellipse(*moments)
    table["solidity"] = table["area_px"] / _convex_areas(plane, cells)
    if image is not None:
        table |= _intensity_columns(plane, image, cells, table["area_px"], raw)
    table["touches_edge"] = np.isin(cells, _edge_labels(plane))
    table["n_neighbours"] = _neighbour_counts(plane, cells)
    return table


def _moment_columns(plane: np.ndarray, cells: np.ndarray) -> tuple[dict, tuple]:
    """({centroid_y, centroid_x, area_px} columns (px), (mu20, mu02, mu11)): each cell's
    centroid, area and central second moments (px^2, per pixel)."""
    flat = plane.ravel()
    inside = flat > 0
    ids = flat[inside]
    y, x = np.divmod(np.flatnonzero(inside), plane.shape[1])
    size = int(cells.max()) + 1 if len(cells) else 1

    def total(weights=None):
        return np.bincount(ids, weights=weights, minlength=size)[cells]

    area = total()
    cy, cx = total(y) / area, total(x) / area
    mu20 = total(y.astype(np.float64) ** 2) / area - cy**2
    mu02 = total(x.astype(np.float64) ** 2) / area - cx**2
    mu11 = total((y * x).astype(np.float64)) / area - cy * cx
    columns = {"centroid_y": cy, "centroid_x": cx, "area_px": area.astype(np.int64)}
    return columns, (mu20, mu02, mu11)


_CORNERS = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


def _convex_areas(plane: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Area (px) of each cell's convex hull: the polygon around its pixels' squares.

    The hull of the corners of the pixels that end the cell's runs along each row, by
    ``scipy.spatial.ConvexHull``.
    skimage's ``solidity`` counts the pixels whose centres fall in that hull instead, which
    is 1-7 % smaller on small nuclei and several times slower (it rasterises each hull).
    """
    from scipy.spatial import ConvexHull

    # the hull of a cell's pixel squares is the hull of each row's end pixels
    padded = np.pad(plane, ((0, 0), (1, 1)))
    ends = (padded[:, :-2] != plane) | (padded[:, 2:] != plane)
    ys, xs = np.nonzero(ends & (plane > 0))
    ids = plane[ys, xs]
    order = np.argsort(ids, kind="stable")
    points = np.stack([ys[order], xs[order]], axis=1).astype(np.float64)
    bounds = np.searchsorted(ids[order], np.concatenate([cells, [np.iinfo(np.int64).max]]))
    areas = np.empty(len(cells))
    for i in range(len(cells)):
        corners = (points[bounds[i] : bounds[i + 1], None, :] + _CORNERS).reshape(-1, 2)
        areas[i] = ConvexHull(corners).volume  # in 2-D, "volume" is the area
    return areas


def _ellipse(a, b, c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Major and minor axis lengths (px) and eccentricity of the ellipse with the cells'
    second moments (skimage's definition: 4 sqrt of the inertia tensor's eigenvalues)."""
    half_trace, root = (a + b) / 2, np.sqrt(((a - b) / 2) ** 2 + c**2)
    large, small = half_trace + root, np.maximum(half_trace - root, 0.0)
    eccentricity = np.sqrt(1 - np.divide(small, large, out=np.ones_like(large), where=large > 0))
    return 4 * np.sqrt(large), 4 * np.sqrt(small), eccentricity


def _intensity_columns(plane, image, cells, area, raw) -> dict[str, np.ndarray]:
    """Mean, max, min and integrated intensity per cell (per channel of a (Y, X, C) image)."""
    from scipy import ndimage as ndi

    channels = image.shape[-1] if image.ndim == 3 else None
    out: dict[str, np.ndarray] = {}
    for c in range(channels or 1):
        values = image if channels is None else image[..., c]
        suffix = "" if channels is None else f"_c{c}"
        total = np.asarray(ndi.sum_labels(values, plane, index=cells), dtype=np.float64)
        out[f"mean_intensity{suffix}"] = total / np.maximum(area, 1)
        key = "" if channels is None else f"-{c}"  # regionprops' channel suffix
        none = np.zeros(0)  # an empty plane: skimage may leave out the channel columns
        out[f"max_intensity{suffix}"] = np.asarray(raw.get(f"intensity_max{key}", none), float)
        out[f"min_intensity{suffix}"] = np.asarray(raw.get(f"intensity_min{key}", none), float)
        out[f"integrated_intensity{suffix}"] = total
    return out


def _edge_labels(plane: np.ndarray) -> np.ndarray:
    border = np.concatenate([plane[0], plane[-1], plane[:, 0], plane[:, -1]])
    return np.unique(border[border > 0])


def _neighbour_counts(plane: np.ndarray, cell_labels: np.ndarray) -> np.ndarray:
    counts: Counter[int] = Counter()
    for a, b in touching_pairs(plane):
        counts[a] += 1
        counts[b] += 1
    return np.array([counts.get(int(k), 0) for k in cell_labels], dtype=np.int64)


def _concatenate(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    columns = list(tables[0])
    return {name: np.concatenate([t[name] for t in tables]) for name in columns}


def _add_physical(table: dict, scale: tuple[float, float], unit: str) -> dict:
    sy, sx = (float(s) for s in scale[-2:])
    if not (sy > 0 and sx > 0):
        raise UNetCellsError(f"The pixel size must be positive, got {scale}.")
    table = dict(table)
    table[f"area_{unit}2"] = table["area_px"] * (sy * sx)
    if np.isclose(sy, sx, rtol=1e-6):  # lengths have a unit only on square pixels
        for name in _LENGTHS:
            table[f"{name}_{unit}"] = table[f"{name}_px"] * sy
    return table


def summarize(table: dict[str, np.ndarray]) -> dict[str, float | int]:
    """One row for a whole image: cell count, mean and median area (px), mean intensity.

    Parameters
    ----------
    table : dict of str to numpy.ndarray
        A per-cell table from ``measure`` (needs "area_px"; "mean_intensity" or
        "mean_intensity_c0" when it has intensities).

    Returns
    -------
    dict of str to float or int
        "cells", "mean_area_px", "median_area_px" (px, NaN without cells) and, when the
        table has intensities, "mean_intensity": the mean of the cells' mean intensity
        (first channel).
    """
    areas = table["area_px"]
    row: dict[str, float | int] = {
        "cells": len(areas),
        "mean_area_px": float(areas.mean()) if len(areas) else float("nan"),
        "median_area_px": float(np.median(areas)) if len(areas) else float("nan"),
    }
    key = "mean_intensity" if "mean_intensity" in table else "mean_intensity_c0"
    if key in table:
        row["mean_intensity"] = float(table[key].mean()) if len(areas) else float("nan")
    return row


def table_to_csv(table: dict[str, np.ndarray], path: Path | str | None = None) -> str:
    """Write a table as CSV (one header row, one row per cell); returns the text.

    Floats are written with full precision (``repr``), booleans as ``True``/``False``.

    Parameters
    ----------
    table : dict of str to numpy.ndarray
        Columns of equal length, in the order they are written.
    path : Path or str, optional
        Also write the text here, atomically and never over an existing file. None: only
        return the text.

    Returns
    -------
    str
        The CSV text (LF line endings; written as UTF-8).

    Raises
    ------
    UNetCellsError
        ``path`` exists already or its folder is missing.
    ValueError
        The columns differ in length.
    """
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    names = list(table)
    writer.writerow(names)
    columns = [np.asarray(table[name]).tolist() for name in names]
    writer.writerows(zip(*columns, strict=True))
    text = buffer.getvalue()
    if path is not None:
        from .fileio import atomic_write, check_new_output

        path = check_new_output(Path(path), "the table")
        atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
    return text


def read_table_csv(path: Path | str) -> dict[str, np.ndarray]:
    """Read a table written by :func:`table_to_csv` (ints, floats and booleans restored).

    Parameters
    ----------
    path : Path or str
        A UTF-8 CSV file with one header row.

    Returns
    -------
    dict of str to numpy.ndarray
        One column per header name: bool, int64 or float64 when every value parses so,
        else object (strings).

    Raises
    ------
    UNetCellsError
        The file is empty.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise UNetCellsError(f"{path} is empty; it is not a table written by unet-cells.")
    names, body = rows[0], rows[1:]
    return {name: _parse_column([r[i] for r in body]) for i, name in enumerate(names)}


def _parse_column(values: list[str]) -> np.ndarray:
    if values and all(v in ("True", "False") for v in values):
        return np.array([v == "True" for v in values])
    for dtype in (np.int64, np.float64):
        try:
            return np.array(values, dtype=dtype) if values else np.array([], dtype)
        except ValueError:
            continue
    return np.array(values, dtype=object)


def tiff_pixel_size(path: Path | str) -> tuple[float, float, str] | None:
    """The pixel size a TIFF records, as (sy, sx, unit), or None when it records none.

    Reads OME-TIFF ``PhysicalSizeY/X`` (unit from ``PhysicalSizeXUnit``, default µm) or,
    for ImageJ and other TIFFs, the X/YResolution tags (pixels per unit) with ImageJ's
    ``unit``. A resolution without a unit (e.g. 72 dpi screenshots) counts as none.

    Parameters
    ----------
    path : Path or str
        The TIFF file; unreadable metadata gives None (never raises).

    Returns
    -------
    tuple of (float, float, str), or None
        Pixel height and width in ``unit`` per px; "µm" and "micron" become "um".
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if tif.is_ome:
                return _ome_pixel_size(tif.ome_metadata)
            page, unit = tif.pages[0], (tif.imagej_metadata or {}).get("unit")
            tags = page.tags
            if not unit or "XResolution" not in tags or "YResolution" not in tags:
                return None
            sx, sy = (_per_pixel(tags[k].value) for k in ("XResolution", "YResolution"))
    except Exception:  # unreadable metadata: the reader of the pixels reports the file
        return None
    if not (sx and sy):
        return None
    unit = {"micron": "um", "\\u00B5m": "um", "µm": "um"}.get(unit, unit)
    return sy, sx, str(unit)


def _per_pixel(resolution) -> float | None:
    numerator, denominator = resolution
    return denominator / numerator if numerator else None


def _ome_pixel_size(xml: str | None) -> tuple[float, float, str] | None:
    import re

    if not xml:
        return None
    found = {k: re.search(rf'{k}="([^"]+)"', xml) for k in ("PhysicalSizeY", "PhysicalSizeX")}
    if not all(found.values()):
        return None
    unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
    name = unit.group(1) if unit else "µm"
    name = "um" if name in ("µm", "\u00b5m", "micron") else name
    return float(found["PhysicalSizeY"].group(1)), float(found["PhysicalSizeX"].group(1)), name


def channels_last(image: np.ndarray, labels_shape: tuple[int, ...]) -> np.ndarray:
    """``image`` with its channel axis moved last, so that ``measure`` reads it.

    An image of the labels' shape passes; one with one extra axis has that axis moved to
    the end (the last such axis when several fit, e.g. (3, Y, X, 3) is read as YXC).

    Parameters
    ----------
    image : array_like
        The intensity image, read into memory (``numpy.asarray``).
    labels_shape : tuple of int
        The labels' shape, e.g. (Y, X) or (Z, Y, X).

    Returns
    -------
    numpy.ndarray
        ``labels_shape`` or ``(*labels_shape, C)``; a view, not a copy.

    Raises
    ------
    UNetCellsError
        The image matches the labels neither as is nor with one extra axis.
    """
    image = np.asarray(image)
    if image.shape == tuple(labels_shape):
        return image
    if image.ndim == len(labels_shape) + 1:
        fits = [
            k
            for k in range(image.ndim)
            if np.delete(image.shape, k).tolist() == list(labels_shape)
        ]
        if fits:
            return np.moveaxis(image, fits[-1], -1)
    raise UNetCellsError(
        f"The image {image.shape} does not match the labels {tuple(labels_shape)}: give the "
        "image the labels were made from (channels, if any, as one extra axis)."
    )
