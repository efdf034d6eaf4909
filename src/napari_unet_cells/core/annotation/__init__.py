"""Annotation: label edits, the pre-training check, points to cells, the project folder.

Headless (numpy in, numpy out); the "Annotate" dock calls these functions and applies
the returned :class:`Edit` through napari's own undo history.

Label images follow the project convention: integer (..., Y, X), 0 = background, each
positive id one cell. Stacks (Z, Y, X) are annotated plane by plane: edits that need a
plane (split) take ``plane``, the leading indices of that plane; the check runs per
plane (the same id in two planes is two cells, as in training).

Edits are returned, not applied: an :class:`Edit` lists the changed pixels (a numpy
multi-index into the full array) and their new values, which is what
``napari.layers.Labels.data_setitem`` records for undo. :func:`apply_edit` applies one to
an array for scripts.

The project folder keeps annotations safe (see :class:`AnnotationProject`): label images
as TIFF, one small JSON index, every file written atomically (temporary file, fsync,
``os.replace``), so a crash during a save leaves the previous version intact.

Modules: :mod:`.edits` (the edits), :mod:`.checks` (the check and training-set counts),
:mod:`.project` (the project folder); every name is importable from this package.
"""

from __future__ import annotations

from scipy import ndimage as ndi  # noqa: F401  (tests watch calls through ``annotation.ndi``)

from ..labels import check_labels, touching_pairs
from ..progress import run
from .checks import (
    CHECK_CODES,
    NOTE_KINDS,
    CheckProgress,
    CheckReport,
    Problem,
    check_annotation,
    iter_check_annotation,
    prediction_audit,
    training_counts,
)
from .edits import (
    Edit,
    apply_edit,
    delete_label,
    fill_holes,
    line_mask,
    merge_labels,
    next_free_label,
    paint_label,
    points_to_disks,
    split_label_by_line,
    split_label_watershed,
)
from .project import (
    INDEX_NAME,
    INDEX_VERSION,
    AnnotationProject,
    ProjectEntry,
    default_project_folder,
    image_identity,
)

__all__ = [
    "CHECK_CODES",
    "INDEX_NAME",
    "INDEX_VERSION",
    "NOTE_KINDS",
    "AnnotationProject",
    "CheckProgress",
    "CheckReport",
    "Edit",
    "Problem",
    "ProjectEntry",
    "apply_edit",
    "check_annotation",
    "check_labels",
    "default_project_folder",
    "delete_label",
    "fill_holes",
    "image_identity",
    "iter_check_annotation",
    "line_mask",
    "merge_labels",
    "next_free_label",
    "paint_label",
    "points_to_disks",
    "prediction_audit",
    "run",
    "split_label_by_line",
    "split_label_watershed",
    "touching_pairs",
    "training_counts",
]
