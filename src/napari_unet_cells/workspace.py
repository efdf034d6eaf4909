"""The state the docks of one napari viewer share, headless and evented.

A :class:`Workspace` owns what used to live inside the docks:

- the **training set**: (image, labels, ignore) layer triples that Fine-tune trains on and
  that Annotate adds to;
- the **annotation links**: which Labels layer annotates which Image layer, with which
  ignore mask (Annotate creates them; they are saved with an annotation project, the
  ``annotation_project``, which a reopened Annotate dock keeps saving into);
- the **predictions**: the newest prediction layer written for each image (Predict writes
  them; Annotate offers them as the starting point of corrections);
- requests between docks: "run this model on this image" (Fine-tune asks, Predict runs).

The models trained in this session live in :mod:`napari_unet_cells.core.registry`
(process-wide, also used headless by ``predict(model=name)``).

Docks observe ``workspace.events`` (psygnal signals, no Qt) and call one method per user
action; no dock imports or drives another. ``workspace_for(viewer)`` gives the one
workspace of a viewer; tests may build a ``Workspace()`` without any viewer.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal, SignalGroup

from . import layers as L
from .core.errors import UNetCellsError


@dataclass(eq=False)
class TrainingPair:
    """One entry of the training set: an Image layer, its instance labels, optional ignore."""

    image: Any
    labels: Any
    ignore: Any | None = None

    def describe(self) -> str:
        text = f"{self.image.name}  /  {self.labels.name}"
        return text + (f"  /  ignore: {self.ignore.name}" if self.ignore is not None else "")


@dataclass(eq=False)
class AnnotationLink:
    """An annotation (Labels) layer, the Image layer it annotates and its ignore mask."""

    image: Any
    annotation: Any
    ignore: Any | None = None
    identity: dict | None = None  # how the image was identified in a saved project
    # (project folder, entry key) this annotation is saved under; another annotation of
    # the same image gets its own entry, never this one
    project_key: tuple[str, str] | None = None
    in_training: bool = False  # kept equal to "the annotation is in the training set"
    dirty: bool = True  # edited since the last save
    saved_state: tuple | None = field(default=None, repr=False)  # state() at the last save

    def state(self) -> tuple:
        """What a project save records besides the pixels: flag, names, placement."""
        return (
            self.in_training,
            self.annotation.name,
            None if self.ignore is None else self.ignore.name,
            tuple(self.annotation.scale),
            tuple(self.annotation.translate),
        )


class WorkspaceEvents(SignalGroup):
    """Signals of a :class:`Workspace`; each carries what changed."""

    training_set = Signal()  # pairs added, removed or changed
    links = Signal(list)  # annotation links added ([]) or removed (the removed ones)
    prediction_added = Signal(object, object)  # (image layer, prediction Labels layer)
    prediction_requested = Signal(object, str)  # (image layer, model name): Predict runs it


class Workspace:
    """The training set, annotation links and predictions of one viewer (see module doc)."""

    def __init__(self) -> None:
        self.events = WorkspaceEvents()
        self.pairs: list[TrainingPair] = []
        self.links: list[AnnotationLink] = []
        self._predictions: dict[int, tuple[Any, Any]] = {}  # id(image) -> (image, labels)
        self._request: tuple[Any, str] | None = None  # a prediction request not yet taken
        # annotations whose image was removed: id(annotation) -> (annotation, image name)
        self._orphans: dict[int, tuple[Any, str]] = {}
        #: the annotation project (core.annotation.AnnotationProject) autosaved into
        self.annotation_project: Any = None

    # -- training set ----------------------------------------------------------------------

    def add_pair(self, image: Any, labels: Any, ignore: Any | None = None) -> TrainingPair:
        """Add (image, labels, ignore) to the training set; shapes are checked now.

        Adding the same image and labels again replaces the ignore layer. The layers are
        kept, not copied; ``events.training_set`` is emitted.

        Parameters
        ----------
        image : napari.layers.Image
            The image (or its proxy).
        labels : napari.layers.Labels
            Its instance labels, the image's plane shape.
        ignore : napari.layers.Labels, optional
            Unannotated pixels (non-zero), the labels' shape.

        Returns
        -------
        TrainingPair
            The new pair, or the existing one updated.

        Raises
        ------
        UNetCellsError
            Not an Image and a Labels layer, or the shapes differ.
        """
        image, labels, ignore = L.unwrap(image), L.unwrap(labels), L.unwrap(ignore)
        if not L.is_image(image) or not L.is_labels(labels):
            raise UNetCellsError(
                "A training pair is an Image layer and a Labels layer: choose one of each."
            )
        L.check_same_plane(image, labels)
        L.check_not_rgb(image, "The image")  # refused now, not when training starts
        if ignore is not None and tuple(ignore.data.shape) != tuple(labels.data.shape):
            raise UNetCellsError(
                f"The ignore layer '{ignore.name}' {tuple(ignore.data.shape)} and the labels "
                f"'{labels.name}' {tuple(labels.data.shape)} differ in shape; choose an ignore "
                "layer painted on the same image."
            )
        pair = next((p for p in self.pairs if p.image is image and p.labels is labels), None)
        if pair is None:
            pair = TrainingPair(image, labels, ignore)
            self.pairs.append(pair)
        else:
            pair.ignore = ignore
        self._training_set_changed()
        return pair

    def remove_pair(self, index: int) -> None:
        """Remove the ``index``-th pair from the training set (the layers stay).

        Parameters
        ----------
        index : int
            Position in ``pairs``; out of range raises IndexError.
        """
        del self.pairs[index]
        self._training_set_changed()

    def in_training(self, labels: Any) -> bool:
        """Whether a Labels layer is the labels of a pair of the training set.

        Parameters
        ----------
        labels : napari.layers.Labels
            The layer (or its proxy); compared by identity.

        Returns
        -------
        bool
            True if a pair holds it as its labels.
        """
        labels = L.unwrap(labels)
        return any(p.labels is labels for p in self.pairs)

    def training_counts(self) -> dict[str, int]:
        """Images, cells and touching pairs in the training set (core.annotation)."""
        from .core.annotation import training_counts

        return training_counts([np.asarray(p.labels.data) for p in self.pairs])

    def _training_set_changed(self) -> None:
        for link in self.links:
            link.in_training = self.in_training(link.annotation)
        self.events.training_set.emit()

    # -- annotation links ------------------------------------------------------------------

    def link_of(self, annotation: Any) -> AnnotationLink | None:
        """The link of an annotation layer, or None.

        Parameters
        ----------
        annotation : napari.layers.Labels
            The annotation layer (or its proxy); compared by identity.

        Returns
        -------
        AnnotationLink or None
            The first link whose annotation it is.
        """
        annotation = L.unwrap(annotation)
        return next((k for k in self.links if k.annotation is annotation), None)

    def removed_image_of(self, annotation: Any) -> str | None:
        """The name of the image ``annotation`` was linked to, when that image was removed
        from the viewer (and the annotation not linked again since), else None.

        Parameters
        ----------
        annotation : napari.layers.Labels
            The annotation layer (or its proxy); compared by identity.
        """
        entry = self._orphans.get(id(L.unwrap(annotation)))
        return entry[1] if entry is not None else None

    def add_link(self, link: AnnotationLink) -> AnnotationLink:
        """Record a link (checked: the annotation covers the image); returns it.

        Its ``in_training`` flag is set from the training set; ``events.links`` is emitted.

        Parameters
        ----------
        link : AnnotationLink
            The link to record (kept, not copied).

        Returns
        -------
        AnnotationLink
            ``link`` itself.

        Raises
        ------
        UNetCellsError
            The annotation's shape differs from the image's plane shape.
        """
        L.check_same_plane(link.image, link.annotation, what="the annotation")
        link.in_training = self.in_training(link.annotation)
        self._orphans.pop(id(link.annotation), None)
        self.links.append(link)
        self.events.links.emit([])
        return link

    # -- predictions -----------------------------------------------------------------------

    def add_prediction(self, image: Any, labels: Any) -> None:
        """Record ``labels`` as the newest prediction of ``image``.

        Replaces an earlier prediction of the same image; ``events.prediction_added`` is
        emitted with both layers.

        Parameters
        ----------
        image : napari.layers.Image
            The image predicted (or its proxy).
        labels : napari.layers.Labels
            The prediction layer written for it.
        """
        image, labels = L.unwrap(image), L.unwrap(labels)
        self._predictions[id(image)] = (image, labels)
        self.events.prediction_added.emit(image, labels)

    def prediction_of(self, image: Any) -> Any | None:
        """The newest prediction layer written for ``image``, or None.

        Parameters
        ----------
        image : napari.layers.Image
            The image (or its proxy); compared by identity.

        Returns
        -------
        napari.layers.Labels or None
            The layer recorded by :meth:`add_prediction` (it may since have been edited).
        """
        entry = self._predictions.get(id(L.unwrap(image)))
        return entry[1] if entry is not None and entry[0] is L.unwrap(image) else None

    def request_prediction(self, image: Any, model: str) -> bool:
        """Ask the Predict dock to run the model named ``model`` on ``image``.

        Parameters
        ----------
        image : napari.layers.Image
            The image to segment.
        model : str
            A model name (``core.registry``) or model file.

        Returns
        -------
        bool
            True when an open Predict dock took the request; False when none is open:
            the request then waits, and a Predict dock opened later takes it.
        """
        self._request = (L.unwrap(image), str(model))
        self.events.prediction_requested.emit(L.unwrap(image), str(model))
        return self._request is None

    def take_prediction_request(self) -> tuple[Any, str] | None:
        """The waiting prediction request, (image, model name), which is then cleared;
        None when there is none (the Predict dock calls this)."""
        request, self._request = self._request, None
        return request

    # -- layers removed from the viewer ----------------------------------------------------

    def forget_missing(self, alive: list[Any]) -> None:
        """Drop pairs, links and predictions whose layers are no longer in ``alive``.

        An ignore layer that is gone is cleared from its pair or link (the pair stays).
        Events are emitted only for what changed.

        Parameters
        ----------
        alive : list of napari.layers.Layer
            The layers still in the viewer (compared by identity).
        """
        ids = {id(L.unwrap(x)) for x in alive}
        pairs = [p for p in self.pairs if id(p.image) in ids and id(p.labels) in ids]
        changed = len(pairs) != len(self.pairs)
        for pair in pairs:
            if pair.ignore is not None and id(pair.ignore) not in ids:
                pair.ignore, changed = None, True
        links = [k for k in self.links if id(k.image) in ids and id(k.annotation) in ids]
        for link in self.links:
            if id(link.annotation) in ids and id(link.image) not in ids:
                self._orphans[id(link.annotation)] = (link.annotation, link.image.name)
        self._orphans = {k: v for k, v in self._orphans.items() if k in ids}
        for link in links:
            if link.ignore is not None and id(link.ignore) not in ids:
                link.ignore = None
        self._predictions = {
            k: v for k, v in self._predictions.items() if id(v[0]) in ids and id(v[1]) in ids
        }
        if self._request is not None and id(self._request[0]) not in ids:
            self._request = None
        if changed:  # a pair dropped, or its ignore layer gone: the list must say so
            self.pairs = pairs
            self._training_set_changed()
        if len(links) != len(self.links):
            removed = [k for k in self.links if k not in links]
            self.links = links
            self.events.links.emit(removed)


_WORKSPACES: dict[int, tuple[weakref.ref, Workspace]] = {}


def workspace_for(viewer: Any) -> Workspace:
    """The workspace of a napari viewer, made on first use; forgotten with the viewer.

    Layers removed from the viewer are dropped from the workspace automatically.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer (or napari's proxy of it); only a weak reference is kept.

    Returns
    -------
    Workspace
        The same object on every call for that viewer.
    """
    viewer = L.unwrap(viewer)
    entry = _WORKSPACES.get(id(viewer))
    if entry is not None and entry[0]() is viewer:
        return entry[1]
    workspace = Workspace()
    key = id(viewer)
    _WORKSPACES[key] = (weakref.ref(viewer, lambda _ref: _WORKSPACES.pop(key, None)), workspace)
    viewer.layers.events.removed.connect(lambda _e: workspace.forget_missing(list(viewer.layers)))
    return workspace
