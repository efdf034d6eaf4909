"""Instance labels as OME-Zarr (NGFF) labels images, written with ome-zarr-py.

Two ways:

- ``write_labels_into(store, labels, name)``: into an existing OME-Zarr image's
  ``labels/<name>`` group, with the NGFF ``multiscales`` and ``image-label`` metadata
  (background transparent, one ``properties`` entry per cell with its area, and
  ``source.image`` pointing back to the image), on the image's pixel grid and scale.
  The image's own arrays and metadata are never written; only ``labels/`` changes.
- ``write_ome_zarr(path, image, labels, name)``: a new OME-Zarr store holding the image
  and its labels image (for TIFF or plain-zarr input).

Writes are atomic at the level a viewer sees: the labels image is written beside the
target, then moved into place, and only then listed in ``labels/``. An existing labels
group of the same name is refused unless ``overwrite``. ``predict_to_ome_zarr`` runs
the file prediction (``core.predict_large.predict_file``) and writes the result either way.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UNetCellsError
from . import require

logger = logging.getLogger(__name__)

#: properties (area per cell) are written for at most this many cells
MAX_PROPERTIES = 100_000
_MIN_LEVEL_SIZE = 64  # a pyramid level's smaller side stays at least this many px


def _ome_attrs(group) -> dict[str, Any]:
    """The OME metadata of a zarr group: NGFF 0.5 nests it under "ome", 0.4 does not."""
    attrs = dict(group.attrs)
    return dict(attrs.get("ome", attrs))


def _open_image_group(store: Path):
    import zarr

    if not store.is_dir():
        raise UNetCellsError(
            f"{store} is not an OME-Zarr folder; give the folder of an OME-Zarr image (e.g. "
            "image.ome.zarr)."
        )
    try:
        group = zarr.open(str(store), mode="r")
    except Exception as err:  # zarr raises several types for foreign folders
        raise UNetCellsError(
            f"{store}: cannot open it as an OME-Zarr image ({err}); give the folder of an "
            "OME-Zarr image."
        ) from None
    multiscales = _ome_attrs(group).get("multiscales") if isinstance(group, zarr.Group) else None
    if not multiscales:
        raise UNetCellsError(
            f"{store} is not an OME-Zarr image (a zarr store without 'multiscales' metadata), "
            "so it has no labels group to write into; write the labels to a new file "
            "instead (-o cells.ome.zarr)."
        )
    return group, multiscales[0]


def _axes_names(multiscale: dict[str, Any], ndim: int) -> list[str]:
    axes = multiscale.get("axes")
    if not axes:  # NGFF <= 0.3: always t, c, z, y, x (the last ndim)
        return ["t", "c", "z", "y", "x"][-ndim:]
    return [a["name"] if isinstance(a, dict) else str(a) for a in axes]


def labels_target(store: str | os.PathLike, name: str = "cells", overwrite: bool = False) -> Path:
    """Check that labels can go to ``store``'s ``labels/<name>``; nothing is written.

    Parameters
    ----------
    store : str or os.PathLike
        An OME-Zarr image folder (with ``multiscales`` metadata).
    name : str
        The labels image's name: a plain name (no "/", not hidden).
    overwrite : bool
        Allow an existing ``labels/<name>`` (it is replaced when written).

    Returns
    -------
    Path
        ``store / "labels" / name``.

    Raises
    ------
    UNetCellsError
        ``store`` is not an OME-Zarr image, ``name`` is not a plain name, or the labels
        group exists and ``overwrite`` is False.
    """
    store = Path(store)
    _open_image_group(store)
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise UNetCellsError(
            f"{name!r} cannot name a labels image: use letters, digits, '-' or '_' (e.g. cells)."
        )
    target = store / "labels" / name
    if target.exists() and not overwrite:
        raise UNetCellsError(
            f"{store} already has a labels image {name!r} (labels/{name}); choose another name "
            "(--labels-name) or pass --overwrite (overwrite=True) to replace it."
        )
    return target


def _fit_labels(labels, shape: tuple[int, ...], axes: list[str], store: Path):
    """``labels`` reshaped to the image's ``shape`` with the channel axis 1 (NGFF)."""
    target = tuple(1 if a == "c" else n for a, n in zip(axes, shape, strict=True))
    squeezed = tuple(n for n in labels.shape if n != 1)
    if squeezed != tuple(n for n in target if n != 1):
        raise UNetCellsError(
            f"The labels ({labels.shape}) do not match the image in {store} "
            f"({dict(zip(axes, shape, strict=True))}): predict on this image's full-resolution "
            "array."
        )
    return labels.reshape(target)


def _scale_factors(shapes: list[tuple[int, ...]], axes: list[str]) -> list[dict[str, int]]:
    """Per-level downsampling factors relative to level 0, from the levels' shapes."""
    factors = []
    for shape in shapes[1:]:
        factors.append(
            {
                a: max(1, round(n0 / n)) if a in ("y", "x") else 1
                for a, n0, n in zip(axes, shapes[0], shape, strict=True)
            }
        )
    return factors


def _auto_levels(shape: tuple[int, ...], axes: list[str]) -> list[tuple[int, ...]]:
    """Level shapes halving y and x while the smaller side stays >= 64 px (at most 5)."""
    shapes = [tuple(shape)]
    while len(shapes) < 5:
        ys = [n for a, n in zip(axes, shapes[-1], strict=True) if a in ("y", "x")]
        if min(ys) // 2 < _MIN_LEVEL_SIZE:
            break
        shapes.append(
            tuple(n // 2 if a in ("y", "x") else n for a, n in zip(axes, shapes[-1], strict=True))
        )
    return shapes


def _label_metadata(labels) -> dict[str, Any]:
    """image-label: background transparent, each cell's area (px), the parent image."""
    meta: dict[str, Any] = {
        "colors": [{"label-value": 0, "rgba": [0, 0, 0, 0]}],
        "source": {"image": "../../"},
    }
    counts = _bincount(labels)
    cells = np.flatnonzero(counts[1:]) + 1
    if len(cells) <= MAX_PROPERTIES:
        meta["properties"] = [
            {"label-value": int(k), "area (pixels)": int(counts[k])} for k in cells
        ]
    else:
        logger.info(
            "%d cells: no per-cell properties written (limit %d)", len(cells), MAX_PROPERTIES
        )
    return meta


def _bincount(labels) -> np.ndarray:
    """Pixels per label value, block by block for dask arrays (bounded memory)."""
    if not hasattr(labels, "blocks"):
        return np.bincount(np.asarray(labels).ravel().astype(np.int64))
    counts = np.zeros(1, np.int64)
    for index in np.ndindex(*labels.numblocks):
        block = np.asarray(labels.blocks[index].compute()).ravel().astype(np.int64)
        part = np.bincount(block)
        if len(part) > len(counts):
            part[: len(counts)] += counts
            counts = part
        else:
            counts[: len(part)] += part
    return counts


def _as_dask(array, chunk: int = 1024):
    import dask.array as da

    if hasattr(array, "compute"):
        return array
    array = np.asarray(array)
    chunks = tuple(min(n, chunk) if i >= array.ndim - 2 else 1 for i, n in enumerate(array.shape))
    return da.from_array(array, chunks=chunks)


def _format_of(group):
    writer = require("ome_zarr.writer", "Writing OME-Zarr")
    return writer.check_format(group)


def write_labels_into(
    store: str | os.PathLike,
    labels: Any,
    name: str = "cells",
    *,
    overwrite: bool = False,
    attributes: dict[str, Any] | None = None,
) -> Path:
    """Write instance ``labels`` into an OME-Zarr image's ``labels/<name>`` group.

    Parameters
    ----------
    store : the OME-Zarr image folder (NGFF 0.4 / zarr v2 or 0.5 / zarr v3; the labels
        use the same version).
    labels : int array (numpy or dask) on the image's full-resolution grid: the image's
        shape without its channel axis (size-1 axes may be left out), 0 = background.
    name : the labels image's name under ``labels/``.
    overwrite : replace an existing ``labels/<name>``; otherwise it is refused.
    attributes : extra JSON attributes stored on the labels group (e.g. the model).

    Returns
    -------
    The path of ``labels/<name>``. The pyramid follows the image's levels; the scale
    (pixel size, units) is the image's.
    """
    writer = require("ome_zarr.writer", "Writing OME-Zarr labels")
    import zarr

    store = Path(store)
    target = labels_target(store, name, overwrite)
    group, multiscale = _open_image_group(store)
    datasets = multiscale["datasets"]
    shapes = [tuple(group[d["path"]].shape) for d in datasets]
    axes = _axes_names(multiscale, len(shapes[0]))
    labels = _as_dask(_fit_labels(labels, shapes[0], axes, store))
    fmt = _format_of(group)
    scale = _level0_scale(multiscale, axes)
    levels = [tuple(1 if a == "c" else n for a, n in zip(axes, s, strict=True)) for s in shapes]
    with tempfile.TemporaryDirectory(prefix=f".{store.name}-{name}-", dir=store.parent) as work:
        staging = zarr.open_group(
            str(Path(work) / "s.zarr"), mode="w", zarr_format=fmt.zarr_format
        )
        writer.write_labels(
            labels.astype(np.int32),
            staging,
            name=name,
            scaler=None,
            scale_factors=_scale_factors(levels, axes),
            fmt=fmt,
            axes=_axes_for_writer(multiscale, axes),
            scale=scale,
            axes_units={
                a["name"]: a["unit"] for a in _axes_for_writer(multiscale, axes) if "unit" in a
            }
            or None,
            label_metadata=_label_metadata(labels),
        )
        if attributes:
            staged = zarr.open_group(str(Path(work) / "s.zarr" / "labels" / name), mode="a")
            staged.attrs.update(attributes)
        root = zarr.open_group(str(store), mode="a", zarr_format=fmt.zarr_format)
        labels_group = root.require_group("labels")
        old = None
        if target.exists():  # overwrite: move the old one aside until the new one is in
            old = Path(work) / "old"
            os.replace(target, old)
        os.replace(Path(work) / "s.zarr" / "labels" / name, target)
        listed = list(writer.get_metadata(labels_group).get("labels", []))
        if name not in listed:
            writer.add_metadata(labels_group, {"labels": [*listed, name]}, fmt=fmt)
    logger.info("wrote labels %s into %s", name, store)
    return target


def _level0_scale(multiscale: dict[str, Any], axes: list[str]):
    scale = dict.fromkeys(axes, 1.0)
    for transform in multiscale["datasets"][0].get("coordinateTransformations", []):
        if transform.get("type") == "scale" and len(transform.get("scale", [])) == len(axes):
            scale = dict(zip(axes, map(float, transform["scale"]), strict=True))
    return scale


def _axes_for_writer(multiscale: dict[str, Any], axes: list[str]) -> list[dict[str, str]]:
    types = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    given = {a["name"]: a for a in multiscale.get("axes", []) if isinstance(a, dict)}
    out = []
    for a in axes:
        entry = {"name": a, "type": given.get(a, {}).get("type") or types.get(a, "space")}
        if given.get(a, {}).get("unit"):
            entry["unit"] = given[a]["unit"]
        out.append(entry)
    return out


def write_ome_zarr(
    path: str | os.PathLike,
    image: Any,
    labels: Any,
    name: str = "cells",
    *,
    attributes: dict[str, Any] | None = None,
) -> Path:
    """A new OME-Zarr store (NGFF 0.5) at ``path``: ``image`` and its labels image.

    Parameters
    ----------
    path : the store to create; it must not exist, its folder must.
    image : (Y, X), (Z, Y, X) or (Y, X, C) with C of 3 or 4 (stored as c, y, x); numpy
        or dask.
    labels : int array of the image's spatial shape, 0 = background.
    name : the labels image's name under ``labels/``.
    attributes : extra JSON attributes stored on the labels group.

    Returns
    -------
    The store's path. It is written under a temporary name beside ``path`` and renamed
    when complete, so an interrupted write leaves no half-written store.
    """
    from ..fileio import commit, remove_quietly, reserve_sibling

    writer = require("ome_zarr.writer", "Writing OME-Zarr")
    import zarr

    path = _check_new_path(Path(path))
    image, axes = _image_axes(_as_dask(image), labels)
    levels = _auto_levels(image.shape, axes)
    label_levels = [
        tuple(1 if a == "c" else n for a, n in zip(axes, s, strict=True)) for s in levels
    ]
    tmp = reserve_sibling(path)
    remove_quietly(tmp)  # a reserved name: zarr makes a folder there
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        writer.write_image(
            image, root, axes=axes, scale_factors=_scale_factors(levels, axes), scaler=None
        )
        fitted = _as_dask(_fit_labels(labels, label_levels[0], axes, path))
        writer.write_labels(
            fitted.astype(np.int32),
            root,
            name=name,
            scaler=None,
            scale_factors=_scale_factors(label_levels, axes),
            axes=axes,
            label_metadata=_label_metadata(fitted),
        )
        if attributes:
            zarr.open_group(str(tmp / "labels" / name), mode="a").attrs.update(attributes)
        commit(tmp, path)
    finally:
        remove_quietly(tmp)
    logger.info("wrote OME-Zarr image and labels %s to %s", name, path)
    return path


def _image_axes(image, labels) -> tuple[Any, list[str]]:
    """(image as stored, its NGFF axis names): RGB(A) moves its colour axis first."""
    if image.ndim == 2:
        return image, ["y", "x"]
    if image.ndim == 3 and image.shape[-1] in (3, 4) and labels.ndim == 2:
        return image.transpose(2, 0, 1), ["c", "y", "x"]
    if image.ndim == 3:
        return image, ["z", "y", "x"]
    raise UNetCellsError(
        f"OME-Zarr output takes 2-D images, z-stacks or RGB images, got shape "
        f"{image.shape}; write TIFF (-o cells.tif) instead."
    )


def _check_new_path(path: Path) -> Path:
    """Refuse an existing store or a missing folder (``fileio.check_new_output``)."""
    from ..fileio import check_new_output

    return check_new_output(
        path,
        "the OME-Zarr store",
        hint="choose another output name (existing files are never overwritten); to add "
        "labels to an existing OME-Zarr image, use --ome-labels",
    )


def read_labels(store: str | os.PathLike, name: str = "cells") -> dict[str, Any]:
    """Read back ``labels/<name>`` with ome-zarr-py's reader (a check that viewers can).

    Everything is read into memory (full resolution only).

    Parameters
    ----------
    store : str or os.PathLike
        The OME-Zarr store holding the labels.
    name : str
        The labels image's name under ``labels/``.

    Returns
    -------
    dict of str to Any
        "labels": the full-resolution labels (numpy, the stored axes and dtype),
        "metadata": the reader's node metadata (colors, properties, ...), "image": the
        linked image's full-resolution array, or None.

    Raises
    ------
    UNetCellsError
        ome-zarr-py is missing, or there is no such labels image.
    """
    require("ome_zarr.reader", "Reading OME-Zarr")
    from ome_zarr.format import CurrentFormat, FormatV04
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    folder = Path(store) / "labels" / name
    fmt = FormatV04() if (folder / ".zattrs").exists() else CurrentFormat()
    location = parse_url(str(folder), fmt=fmt)
    if location is None:
        raise UNetCellsError(f"{store} has no labels image {name!r}.")
    nodes = list(Reader(location)())
    label = next((n for n in nodes if n.load(Label)), None)
    if label is None:
        raise UNetCellsError(f"{store}/labels/{name} is not an OME-Zarr labels image.")
    image = next(
        (n for n in nodes if n is not label and n.load(Multiscales) and not n.load(Label)), None
    )
    return {
        "labels": np.asarray(label.data[0]),
        "metadata": dict(label.metadata),
        "image": None if image is None else np.asarray(image.data[0]),
    }


def check_new_store(path: str | os.PathLike) -> Path:
    """Check that a new OME-Zarr store can be written at ``path``; nothing is written.

    Parameters
    ----------
    path : str or os.PathLike
        A new name ending in .zarr (e.g. cells.ome.zarr) in an existing folder.

    Returns
    -------
    Path
        ``path`` as a Path (``~`` expanded).

    Raises
    ------
    UNetCellsError
        ome-zarr-py is missing, the name does not end in .zarr, ``path`` exists (never
        overwritten) or its folder is missing.
    """
    require("ome_zarr.writer", "Writing OME-Zarr")
    path = Path(path)
    if path.suffix.lower() != ".zarr":
        raise UNetCellsError(
            f"{path}: an OME-Zarr output needs a name ending in .zarr, e.g. cells.ome.zarr."
        )
    return _check_new_path(path)


def predict_to_ome_zarr(
    source: str | os.PathLike,
    output: str | os.PathLike | None = None,
    model: Any = None,
    config: Any = None,
    instances: Any = None,
    *,
    name: str = "cells",
    overwrite: bool = False,
    **predict_kwargs: Any,
) -> dict[str, Any]:
    """Segment ``source`` and write the labels as OME-Zarr.

    Prediction runs as ``predict_file`` (zarr inputs chunk by chunk) into a temporary
    folder beside the target; the target is checked before any work, and the labels are
    copied into it only once prediction has finished.

    Parameters
    ----------
    source : str or os.PathLike
        The image: an OME-Zarr image when ``output`` is None, else any file
        ``predict_file`` reads.
    output : str or os.PathLike, optional
        None: into ``source``'s ``labels/<name>``. A new ``.zarr`` path (e.g.
        cells.ome.zarr): a new store with the image and its labels (never overwritten).
    model, config, instances : optional
        As for ``core.predict_large.predict_file``.
    name : str
        The labels image's name under ``labels/``.
    overwrite : bool
        Replace an existing ``labels/<name>`` of ``source`` (only with ``output`` None).
    **predict_kwargs
        Passed on to ``predict_file`` (e.g. chunk, progress).

    Returns
    -------
    dict of str to Any
        ``predict_file``'s summary, with "input" the source and "output" the labels
        image's path.

    Raises
    ------
    UNetCellsError
        ome-zarr-py is missing, the target is refused (see :func:`labels_target`,
        :func:`check_new_store`), or ``source`` cannot be read or segmented.
    """
    from ..predict_large import open_image, predict_file

    require("ome_zarr.writer", "Writing OME-Zarr")
    source = Path(source)
    if output is None:
        destination = labels_target(source, name, overwrite)
        parent = source.parent
    else:
        destination = output = check_new_store(output)
        parent = output.parent
    open_image(source)  # readable, not empty
    from ... import __version__

    attributes = {"napari_unet_cells": {"version": __version__, "source": source.name}}
    with tempfile.TemporaryDirectory(prefix=".unet-cells-", dir=parent) as work:
        import dask.array as da

        labels_path = Path(work) / "labels.zarr"
        summary = predict_file(source, labels_path, model, config, instances, **predict_kwargs)
        labels = da.from_zarr(str(labels_path))
        if output is None:
            write_labels_into(source, labels, name, overwrite=overwrite, attributes=attributes)
        else:
            write_ome_zarr(output, open_image(source), labels, name, attributes=attributes)
    return {**summary, "input": str(source), "output": str(destination)}
