"""Autosave of the Annotate dock: snapshots on the GUI thread, writing in a worker.

A save has two halves:

1. :func:`snapshot` (GUI thread, cheap): for each annotation changed since its last
   save, a copy of its labels and ignore mask, its names, placement and training flag.
   The image is not copied: this dock never paints images, and its pixels are read
   (hashed once, copied into the project once) by the second half.
2. :func:`write` (any thread): hash new images, compress and write the TIFF files and
   the index with :meth:`core.annotation.AnnotationProject.save` (atomic writes).

:class:`Autosaver` runs the second half in a napari thread worker after each edit (via a
debounce timer), one save at a time: a save requested while one runs is done right
after it. :meth:`Autosaver.save_now` saves synchronously (scripts, closing napari): it
first waits for the running save, so the two never write the project at once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QWidget

from ... import layers as L
from ...core import annotation as A
from ...core.errors import UNetCellsError
from ...workspace import AnnotationLink, Workspace

logger = logging.getLogger(__name__)

AUTOSAVE_DELAY_MS = 1500  # a crash loses at most the edits of the last ~2 seconds


@dataclass(eq=False)
class SaveItem:
    """One annotation to save, as it was when the save was requested."""

    link: AnnotationLink
    state: tuple  # link.state() at the snapshot
    name: str  # the image's name
    image: Any  # the image's full-resolution data (not copied; read in the worker)
    identity: dict | None
    labels: np.ndarray  # copies
    ignore: np.ndarray | None
    key: str | None = None  # its entry in the project (None: a new entry)


@dataclass(eq=False)
class SaveRound:
    """The items of one save and, once written, how far it got."""

    project: A.AnnotationProject
    items: list[SaveItem]
    saved: int = 0  # items[:saved] are saved
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    collected: bool = False


def snapshot(
    links: list[AnnotationLink], project: A.AnnotationProject | None = None
) -> list[SaveItem]:
    """Copies of the annotations changed since their last save (GUI thread).

    The links are marked clean: an edit made while the save runs marks its link dirty
    again, and so it is saved by the next save. Labels and ignore masks are copied; the
    image is referenced (full resolution), not copied.

    Parameters
    ----------
    links : list of AnnotationLink
        The dock's annotation links.
    project : AnnotationProject, optional
        The project the items go to: a link already saved there keeps its entry.

    Returns
    -------
    list of SaveItem
        One per link that is dirty or whose state (flag, names, placement) changed.
    """
    items = []
    for link in links:
        state = link.state()
        if not link.dirty and state == link.saved_state:
            continue
        items.append(
            SaveItem(
                link=link,
                state=state,
                name=link.image.name,
                image=L.full_resolution(link.image),
                identity=link.identity,
                labels=np.array(link.annotation.data, copy=True),
                ignore=None if link.ignore is None else np.array(link.ignore.data, copy=True),
                key=_entry_key(link, project),
            )
        )
        link.dirty = False
    return items


def _entry_key(link: AnnotationLink, project: A.AnnotationProject | None) -> str | None:
    """The key ``link`` is saved under in ``project`` (None: not saved there yet)."""
    if project is None or link.project_key is None:
        return None
    folder, key = link.project_key
    return key if folder == project.location else None


def write(job: SaveRound) -> SaveRound:
    """Hash, compress and write the items of ``job`` (any thread); sets ``job.done``.

    A failure stops the round and is kept in ``job.error`` (a user-facing one, such as
    a full disk or a refused annotation, is not raised); the items not saved are retried
    by the next save.

    Parameters
    ----------
    job : SaveRound
        The items from :func:`snapshot` and the project to save them into.

    Returns
    -------
    SaveRound
        ``job`` itself, with ``saved`` (items written) and ``error`` ("" or None when
        none) filled.

    Raises
    ------
    Exception
        Only an unexpected error (a bug), after recording it in ``job.error``.
    """
    try:
        for item in job.items:
            image = np.asarray(item.image)
            if item.identity is None or tuple(item.identity["shape"]) != image.shape:
                item.identity = A.image_identity(item.name, image)
            in_training, labels_name, ignore_name, scale, translate = item.state
            entry = job.project.save(
                item.identity,
                item.labels,
                item.ignore,
                image=image,
                scale=scale,
                translate=translate,
                in_training=in_training,
                labels_name=labels_name,
                ignore_name=ignore_name,
                key=item.key,
                new_entry=item.key is None,  # never another annotation's entry
            )
            item.key = entry.key
            job.saved += 1
    except (OSError, UNetCellsError) as err:
        job.error = str(err)
    except Exception as err:  # a bug: reported as a failed save, then raised
        job.error = f"{type(err).__name__}: {err}"
        raise
    finally:
        job.done.set()
    return job


class Autosaver:
    """Saves the dock's annotations into ``project`` after edits, in the background.

    Parameters
    ----------
    parent : QWidget
        Owns the debounce timer.
    workspace : Workspace
        The viewer's workspace: its annotation links are saved into its
        ``annotation_project`` (kept there, so a reopened dock saves where the closed one
        did).
    status : QLabel
        Where "saved ..." / "NOT SAVED: ..." is written.

    Attributes
    ----------
    project : AnnotationProject or None
        Where to save (``workspace.annotation_project``); None: nothing is saved.
    saves : int
        Saves completed without error.
    last_save_error : str or None
        The error of the last save, or None.
    timer : QTimer
        The debounce timer (single shot, :data:`AUTOSAVE_DELAY_MS`).
    """

    def __init__(self, parent: QWidget, workspace: Workspace, status: QLabel) -> None:
        self.workspace = workspace
        self.status = status
        self.saves = 0
        self.last_save_error: str | None = None
        self.timer = QTimer(parent)
        self.timer.setSingleShot(True)
        self.timer.setInterval(AUTOSAVE_DELAY_MS)
        self.timer.timeout.connect(self.save_in_background)
        self.worker = None
        self._running: SaveRound | None = None
        self._again = False  # a save was requested while one ran

    @property
    def project(self) -> A.AnnotationProject | None:
        return self.workspace.annotation_project

    @project.setter
    def project(self, project: A.AnnotationProject | None) -> None:
        self.workspace.annotation_project = project

    def links(self) -> list[AnnotationLink]:
        return self.workspace.links

    @property
    def busy(self) -> bool:
        """Whether a save is pending (timer) or running."""
        return self.timer.isActive() or self._running is not None or self._again

    def save_in_background(self) -> None:
        """Start a save in a thread worker now (one at a time: if one runs, save again
        when it ends)."""
        from napari.qt.threading import create_worker

        self.timer.stop()
        if self.project is None:
            return
        if self._running is not None:
            self._again = True
            return
        self._again = False
        job = SaveRound(self.project, snapshot(self.links(), self.project))
        if not job.items:  # nothing changed: nothing to write; say it is all saved
            job.done.set()
            self.collect(job)
            return
        self._running = job
        worker = create_worker(write, job, _start_thread=False, _ignore_errors=True)
        worker.errored.connect(lambda err: logger.error("autosave failed", exc_info=err))
        worker.finished.connect(lambda: self._finished(job))
        self.worker = worker
        worker.start()

    def _finished(self, job: SaveRound) -> None:
        self.collect(job)
        if self._running is job:
            self._running = None
            self.worker = None
        if self._again:
            with contextlib.suppress(RuntimeError):  # the dock (and its timer) is gone
                self.save_in_background()

    def wait(self) -> None:
        """Wait for the running save (if any) and take in its result (GUI thread)."""
        job = self._running
        if job is not None:
            job.done.wait()
            self.collect(job)
            self._running = None

    def collect(self, job: SaveRound) -> None:
        """Take in the result of a save (GUI thread, once per save): record what was
        saved, mark the rest for the next save, report."""
        if job.collected:
            return
        job.collected = True
        for i, item in enumerate(job.items):
            item.link.identity = item.identity or item.link.identity
            if i < job.saved:
                item.link.saved_state = item.state
                item.link.project_key = (job.project.location, item.key)
            else:
                item.link.dirty = True
        try:
            self._report(job)
        except RuntimeError:  # the dock is closed: nothing to show the result in
            logger.debug("autosave result not shown (dock closed)")

    def _report(self, job: SaveRound) -> None:
        if job.error is not None:
            self.last_save_error = job.error
            self.status.setText(f"NOT SAVED: {job.error}")
            show_error(f"Autosave failed: {job.error}")
            return
        self.last_save_error = None
        self.saves += 1
        self.status.setText(f"saved {job.saved} annotation(s) to {job.project.folder}")

    def save_now(self) -> int:
        """Save what changed since the last save, here and now (after the running save).

        Returns
        -------
        int
            The number of annotations saved. Errors are shown, never raised (autosave
            must not break editing); what was not saved is retried at the next save.
        """
        self.timer.stop()
        self.wait()
        self._again = False
        if self.project is None:
            return 0
        job = SaveRound(self.project, snapshot(self.links(), self.project))
        try:
            write(job)
        finally:
            self.collect(job)
        return job.saved
