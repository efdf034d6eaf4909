"""The project panel of the Annotate dock: the project folder that annotations are
autosaved to, and "Open" that restores them (see :mod:`.autosave` for how saving runs)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ... import layers as L
from ...core import annotation as A
from ...core.errors import UNetCellsError
from ...workspace import AnnotationLink
from .._tips import tip
from .._window import connect_while_alive
from ._common import IGNORE_COLOURS, guard, no_margins
from .autosave import Autosaver

if TYPE_CHECKING:  # pragma: no cover
    from ..annotate_widget import AnnotateWidget

logger = logging.getLogger(__name__)


class ProjectPanel(QWidget):
    """Project folder, Open, and the autosave status line.

    Parameters
    ----------
    dock : AnnotateWidget
        The dock: its viewer, workspace and annotation links.

    Attributes
    ----------
    autosave : Autosaver
        Saves the annotations into the project (``autosave.project``).
    """

    def __init__(self, dock: AnnotateWidget) -> None:
        super().__init__()
        self.dock = dock
        layout = no_margins(QVBoxLayout(self))
        group = QGroupBox("Project folder (autosave)")
        row = QHBoxLayout(group)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("choose a folder once; annotations are saved there")
        self.folder_button = QPushButton("...")
        self.open_button = QPushButton("Open")
        row.addWidget(self.folder, 1)
        row.addWidget(self.folder_button)
        row.addWidget(self.open_button)
        layout.addWidget(group)
        self.save_status = QLabel(
            f"autosave: to {A.default_project_folder()} from the first cell, unless you "
            "choose a project folder"
        )
        self.save_status.setWordWrap(True)
        layout.addWidget(self.save_status)
        self.autosave = Autosaver(self, dock.workspace, self.save_status)
        if self.autosave.project is not None:  # chosen in an earlier Annotate dock
            self.folder.setText(str(self.autosave.project.folder))
            self.save_status.setText(f"autosave: to {self.autosave.project.folder}")
        self._set_tooltips()
        self.folder_button.clicked.connect(self._browse_folder)
        self.open_button.clicked.connect(lambda: self._open(self.folder.text().strip()))
        connect_while_alive(self, dock.workspace.events.links, self._untrain_removed)

    def _set_tooltips(self) -> None:
        tip(
            self.folder,
            "The project folder: annotations, ignore masks and the training-set "
            "list are saved there automatically (about 1.5 s after each edit) and restored by "
            "Open.",
        )
        tip(self.folder_button, "Choose the project folder (created if needed) and open it.")
        tip(
            self.open_button,
            "Use the folder typed on the left as the project and restore the "
            "annotations saved in it.",
        )

    def _browse_folder(self) -> None:
        name = QFileDialog.getExistingDirectory(self, "Project folder")
        if name:
            self.folder.setText(name)
            self._open(name)

    def _untrain_removed(self, removed: list[AnnotationLink]) -> None:
        """Annotations whose layers were removed left the training set: so do their
        project entries (kept on disk), or reopening the project would put them back."""
        project = self.autosave.project
        for link in removed:
            folder, key = link.project_key or ("", "")
            entry = project.entries.get(key) if project and folder == project.location else None
            if entry is not None and entry.in_training:
                try:
                    project.set_training(key, False)
                except OSError as err:  # the next save tries again
                    logger.warning("training flag of %s not saved: %s", key, err)

    def _open(self, folder: str) -> None:
        """Open ``folder`` as the project; refused, the box shows the folder in use again."""
        if guard(self.open_project, folder) is None:
            project = self.autosave.project
            self.folder.setText("" if project is None else str(project.folder))

    # -- saving ----------------------------------------------------------------------------

    def schedule_save(self, owners: list[AnnotationLink] | None = None) -> None:
        """Mark ``owners`` (default: all annotations) as changed and save them shortly
        (debounced); without a project folder, the default folder is used."""
        for link in owners or self.dock.links:
            link.dirty = True
        if self.autosave.project is None:
            self._default_project()
        if self.autosave.project is not None:
            self.save_status.setText("unsaved changes ...")
            self.autosave.timer.start()

    def _default_project(self) -> None:
        """No project folder chosen: autosave to the default one (said in the dock), so
        that closing napari never loses painted cells."""
        if not self.dock.links:
            return
        folder = A.default_project_folder()
        try:
            self.autosave.project = A.AnnotationProject(folder)
        except OSError as err:
            self.save_status.setText(
                f"NOT SAVED: cannot autosave to {folder} ({err.strerror}); choose a project folder"
            )
            return
        self.folder.setText(str(self.autosave.project.folder))
        show_info(
            f"Annotations are autosaved to {self.autosave.project.folder} (no project folder "
            "was chosen; choose one in the Annotate dock to save them elsewhere)."
        )

    def set_project(self, folder: str | Path) -> A.AnnotationProject:
        """Save into ``folder`` from now on (created if needed) and save everything now.

        Returns
        -------
        core.annotation.AnnotationProject
            The project.
        """
        if not str(folder).strip():
            raise UNetCellsError("Choose a project folder first.")
        self.autosave.wait()  # a save still running finishes in the old project
        project = A.AnnotationProject(folder)
        self.autosave.project = project
        self.folder.setText(str(project.folder))
        for link in self.dock.links:
            link.dirty = True
        self.autosave.save_now()
        return project

    # -- opening ---------------------------------------------------------------------------

    def open_project(self, folder: str | Path) -> list[AnnotationLink]:
        """Use ``folder`` as the project and restore its annotations as layers.

        Images already open are matched by content; others are restored from the
        project's copy. Entries marked as training data go back to the training set.

        Returns
        -------
        list of AnnotationLink
            The annotations restored (those already open are skipped).
        """
        if not str(folder).strip():
            raise UNetCellsError("Choose a project folder first.")
        self.autosave.wait()
        has_index = (Path(folder).expanduser() / A.INDEX_NAME).is_file()
        project = A.AnnotationProject(folder, create=not has_index)
        restored = []
        linked = {link.project_key for link in self.dock.links}
        for key, entry in project.entries.items():
            if (project.location, key) in linked:
                continue  # already open and linked
            link = self._restore(project, key, entry)
            if link is not None:
                restored.append(link)
        self.autosave.project = project
        self.folder.setText(str(project.folder))
        self.dock.refresh_layers()
        self.save_status.setText(
            f"project {project.folder}: {len(project.entries)} annotation(s), "
            f"{len(restored)} restored"
        )
        self.autosave.save_now()
        return restored

    def _restore(
        self, project: A.AnnotationProject, key: str, entry: A.ProjectEntry
    ) -> AnnotationLink | None:
        """The layers of one project entry, linked (None: no image to annotate)."""
        viewer = self.dock.viewer
        arrays = project.load(key)
        place = {"scale": entry.scale, "translate": entry.translate}
        image = self._find_image(entry.image)
        if image is None:
            if arrays["image"] is None:
                logger.warning("no image for %s; skipped", key)
                return None
            image = viewer.add_image(arrays["image"], name=entry.image["name"], **place)
        name = entry.labels_name or f"{entry.image['name']} annotation"
        layer = viewer.add_labels(arrays["labels"], name=name, **place)
        ignore = None
        if arrays["ignore"] is not None:
            ignore = viewer.add_labels(
                arrays["ignore"].astype(np.uint8),
                name=entry.ignore_name or f"{entry.image['name']} ignore",
                opacity=0.4,
                **place,
            )
            ignore.colormap = IGNORE_COLOURS
        link = AnnotationLink(image, layer, ignore, dict(entry.image))
        link.project_key = (project.location, key)
        link = self.dock.add_link(link)
        if entry.in_training:
            self.dock.workspace.add_pair(link.image, link.annotation, link.ignore)
        return link

    def _find_image(self, identity: dict[str, Any]) -> Any:
        """The open Image layer with these pixels (by content hash), or None."""
        for layer in self.dock.viewer.layers:
            if not L.is_image(layer):
                continue
            data = np.asarray(L.full_resolution(layer))
            if list(data.shape) != list(identity["shape"]):
                continue
            if A.image_identity(identity["name"], data)["hash"] == identity["hash"]:
                return layer
        return None
