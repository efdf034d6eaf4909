"""The project folder that keeps annotations and the training-set list safe.

Label images are stored as TIFF next to one small JSON index; every file is written
atomically (temporary file, fsync, ``os.replace``, :func:`core.fileio.atomic_write`), so a
crash during a save leaves the previous version intact.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UNetCellsError
from ..fileio import atomic_write, read_image
from ..labels import check_labels

INDEX_NAME = "annotations.json"
INDEX_VERSION = 1


def default_project_folder() -> Path:
    """Where annotations are autosaved until the user chooses a project folder.

    One project holds any number of images (each by name and content hash).

    Returns
    -------
    Path
        ``$NAPARI_UNET_CELLS_HOME/annotations`` (default
        ``~/napari-unet-cells/annotations``); not created here.
    """
    from ..model_files import plugin_home

    return plugin_home().expanduser() / "annotations"


def image_identity(name: str, image: np.ndarray) -> dict[str, Any]:
    """A stable identity of an image.

    Parameters
    ----------
    name : str
        The image's name (e.g. its napari layer's).
    image : np.ndarray
        The pixels, any shape and dtype.

    Returns
    -------
    dict
        ``name``, ``shape`` (list of int), ``dtype`` (numpy's dtype string) and ``hash``
        (blake2b of the pixels, shape and dtype; 32 hex digits).
    """
    array = np.ascontiguousarray(np.asarray(image))
    digest = hashlib.blake2b(array.view(np.uint8).ravel(), digest_size=16)
    digest.update(f"{array.shape}{array.dtype.str}".encode())
    return {
        "name": str(name),
        "shape": [int(s) for s in array.shape],
        "dtype": array.dtype.str,
        "hash": digest.hexdigest(),
    }


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return slug[:60] or "image"


def _write_tiff(path: Path, array: np.ndarray) -> None:
    import tifffile

    atomic_write(path, lambda fh: tifffile.imwrite(fh, np.asarray(array), compression="zlib"))


@dataclass
class ProjectEntry:
    """One annotated image in a project: ``key`` (file stem), the image identity, file
    names relative to the folder, layer placement (scale, translate), whether it is in
    the training set, and the names of its layers."""

    key: str
    image: dict[str, Any]
    labels_file: str
    ignore_file: str | None = None
    image_file: str | None = None
    scale: list[float] | None = None
    translate: list[float] | None = None
    in_training: bool = False
    labels_name: str | None = None
    ignore_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The entry as stored in the index (everything but the key)."""
        return {k: v for k, v in self.__dict__.items() if k != "key"}


class AnnotationProject:
    """A folder that keeps annotations and the training-set list safe.

    Layout: ``annotations.json`` (the index), ``labels/<key>.tif`` (uint32 or the layer's
    dtype), ``labels/<key>.ignore.tif`` (uint8), ``images/<key>.tif`` (a copy of the image,
    written once, so the project restores without the original file). ``key`` is the image
    name, shape and content hash: saving an annotation for a different image (same name,
    other pixels) gets a different key, so it never overwrites another image's work.
    Every file is written atomically (:func:`atomic_write`), the index last.

    Parameters
    ----------
    folder : str or Path
        The project folder.
    create : bool
        Create the folder (and its labels/, images/) if needed; with False, refuse a
        folder without an index.
    """

    def __init__(self, folder: str | Path, *, create: bool = True):
        self.folder = Path(folder).expanduser()
        if create:
            try:
                (self.folder / "labels").mkdir(parents=True, exist_ok=True)
                (self.folder / "images").mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UNetCellsError(
                    f"Cannot use {self.folder} as the project folder ({err.strerror or err}): "
                    "choose a folder you can write to."
                ) from None
            from ..fileio import check_writable

            check_writable(self.folder / INDEX_NAME, "the annotation project")
        elif not (self.folder / INDEX_NAME).is_file():
            raise UNetCellsError(
                f"{self.folder} is not an annotation project (no {INDEX_NAME}): choose the "
                "folder that holds it, or an empty folder to start a new project."
            )
        self.entries: dict[str, ProjectEntry] = {}
        if (self.folder / INDEX_NAME).is_file():
            self._read_index()

    # -- index ---------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """The folder as an absolute path: the same project however it was named."""
        return str(self.folder.resolve())

    def _read_index(self) -> None:
        try:
            data = json.loads((self.folder / INDEX_NAME).read_text())
            entries = data["entries"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UNetCellsError(
                f"The project index {self.folder / INDEX_NAME} is unreadable ({err}); the "
                "annotation files in its labels/ folder are untouched: restore the index from "
                "a backup, or choose another folder."
            ) from None
        self.entries = {key: ProjectEntry(key=key, **value) for key, value in entries.items()}

    def _write_index(self) -> None:
        data = {
            "version": INDEX_VERSION,
            "entries": {k: e.to_json() for k, e in self.entries.items()},
            "training": [k for k, e in self.entries.items() if e.in_training],
        }
        text = json.dumps(data, indent=1, sort_keys=True).encode()
        atomic_write(self.folder / INDEX_NAME, lambda fh: fh.write(text))

    # -- keys ----------------------------------------------------------------------------

    def key_for(self, identity: dict[str, Any], new_entry: bool = False) -> str:
        """The key of the image with ``identity`` (see :func:`image_identity`): its
        first existing key, or (none, or ``new_entry``) a new free one."""
        same = (identity["hash"], identity.get("name"))
        for key, entry in self.entries.items():
            if not new_entry and (entry.image.get("hash"), entry.image.get("name")) == same:
                return key
        stem = f"{_slug(identity['name'])}_{'x'.join(map(str, identity['shape']))}"
        stem += f"_{identity['hash'][:10]}"
        key, n = stem, 1
        while key in self.entries or (self.folder / "labels" / f"{key}.tif").exists():
            n += 1
            key = f"{stem}-{n}"
        return key

    # -- saving --------------------------------------------------------------------------

    def _entry_for(
        self, identity: dict[str, Any], labels: np.ndarray, image, key: str | None, new_entry: bool
    ) -> ProjectEntry:
        """The entry to save ``labels`` under (``key``, else see :meth:`key_for`): refuses
        labels not of the image's shape and a key that holds another image."""
        shape = tuple(identity["shape"])
        if image is not None and np.asarray(image).ndim == labels.ndim + 1:
            shape = shape[:-1]  # RGB(A) images: labels cover (Y, X)
        if tuple(labels.shape) != shape:
            raise UNetCellsError(
                f"The annotation {labels.shape} does not match its image {shape}; it is not saved."
            )
        key = key or self.key_for(identity, new_entry)
        entry = self.entries.get(key)
        if entry is not None and entry.image.get("hash") != identity["hash"]:
            raise UNetCellsError(
                f"Refusing to overwrite the annotation of another image ({key}) in "
                f"{self.folder}: use another project folder for this image."
            )
        if entry is None:
            entry = ProjectEntry(key=key, image=dict(identity), labels_file=f"labels/{key}.tif")
        return entry

    def _write_arrays(self, entry: ProjectEntry, labels, ignore, image) -> None:
        """The label, ignore and (once) image files of ``entry``, each atomically."""
        _write_tiff(self.folder / entry.labels_file, labels)
        if ignore is not None:
            entry.ignore_file = f"labels/{entry.key}.ignore.tif"
            _write_tiff(
                self.folder / entry.ignore_file, (np.asarray(ignore) != 0).astype(np.uint8)
            )
        if image is not None and entry.image_file is None:
            entry.image_file = f"images/{entry.key}.tif"
            if not (self.folder / entry.image_file).exists():
                _write_tiff(self.folder / entry.image_file, np.asarray(image))

    def save(
        self,
        identity: dict[str, Any],
        labels: np.ndarray,
        ignore: np.ndarray | None = None,
        *,
        image: np.ndarray | None = None,
        scale: Sequence[float] | None = None,
        translate: Sequence[float] | None = None,
        in_training: bool | None = None,
        labels_name: str | None = None,
        ignore_name: str | None = None,
        key: str | None = None,
        new_entry: bool = False,
    ) -> ProjectEntry:
        """Save (or update) an annotation of one image.

        An image can have several annotations (entries). By default the image's first
        entry is updated (or one is made); ``key`` updates that entry instead, and
        ``new_entry`` adds one, so that another annotation of the same image never
        overwrites this one. The label files are written before the index, each
        atomically.

        Parameters
        ----------
        identity : dict
            The image's :func:`image_identity`.
        labels : np.ndarray
            Integer labels of the image's shape ((Y, X) of an RGB(A) image).
        ignore : np.ndarray, optional
            The unannotated region, labels' shape (nonzero = ignore); stored as uint8.
        image : np.ndarray, optional
            The image itself, copied into the project once.
        scale, translate : sequence of float, optional
            The layers' placement (world units per pixel, offset), restored with them.
        in_training : bool, optional
            Put the image in the training set (or take it out); None keeps it as is.
        labels_name, ignore_name : str, optional
            The layers' names, restored with them.
        key : str, optional
            The entry to update (a new one of that name if it does not exist); it must
            hold this image.
        new_entry : bool
            Without ``key``: save as a new entry even if the image already has one.

        Returns
        -------
        ProjectEntry
            The entry, as now stored in the index.
        """
        labels = check_labels(labels, "annotation")
        entry = self._entry_for(identity, labels, image, key, new_entry)
        self._write_arrays(entry, labels, ignore, image)
        if scale is not None:
            entry.scale = [float(s) for s in scale]
        if translate is not None:
            entry.translate = [float(t) for t in translate]
        if in_training is not None:
            entry.in_training = bool(in_training)
        entry.labels_name = labels_name or entry.labels_name
        entry.ignore_name = ignore_name or entry.ignore_name
        self.entries[entry.key] = entry
        self._write_index()
        return entry

    def set_training(self, key: str, in_training: bool = True) -> None:
        """Mark an entry as part of the training set (or not) and save the index."""
        if key not in self.entries:
            raise UNetCellsError(
                f"{key} is not in the project {self.folder}; save its annotation first."
            )
        self.entries[key].in_training = bool(in_training)
        self._write_index()

    # -- loading -------------------------------------------------------------------------

    def load(self, key: str) -> dict[str, np.ndarray | None]:
        """The arrays of one entry.

        Parameters
        ----------
        key : str
            An entry's key.

        Returns
        -------
        dict
            ``labels`` (as saved), ``ignore`` (bool, or None) and ``image`` (or None when
            the project holds no copy). Raises UNetCellsError for a missing or damaged
            label file.
        """
        entry = self.entries[key]
        out: dict[str, np.ndarray | None] = {
            "labels": read_image(self.folder / entry.labels_file, "annotation")
        }
        out["ignore"] = (
            read_image(self.folder / entry.ignore_file, "ignore mask").astype(bool)
            if entry.ignore_file
            else None
        )
        image_path = self.folder / entry.image_file if entry.image_file else None
        out["image"] = (
            read_image(image_path, "image") if image_path and image_path.exists() else None
        )
        return out

    def training_keys(self) -> list[str]:
        """The keys of the entries in the training set, in index order."""
        return [k for k, e in self.entries.items() if e.in_training]
