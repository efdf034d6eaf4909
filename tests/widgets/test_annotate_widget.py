"""The Annotate dock in a real viewer: layers, undoable edits, Check, training set, autosave."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_unet_cells.core import annotation as A
from napari_unet_cells.core.synthetic import synthetic_cells
from napari_unet_cells.widgets.annotate_widget import select
from napari_unet_cells.workspace import workspace_for


def _touching_pair(labels):
    pairs = sorted(A.touching_pairs(labels))
    assert pairs, "the synthetic image should have touching cells"
    return pairs[0]


def _dock(viewer, seed=2, shape=(96, 112)):
    image, gt = synthetic_cells(shape, seed=seed)
    image_layer = viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Annotate")
    select(widget.image_combo, image_layer)
    return widget, image_layer, gt


def test_start_from_prediction_edits_undo_and_check(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    widget, image_layer, gt = _dock(viewer)
    a, b = _touching_pair(gt)
    merged = np.where(gt == b, a, gt).astype(np.int32)  # a prediction that merges a and b
    pred_layer = viewer.add_labels(merged, name="prediction")
    pred_before = pred_layer.data.copy()
    select(widget.prediction_combo, pred_layer)

    layer = widget.new_annotation(from_prediction=True)
    assert layer is not pred_layer and (layer.data == merged).all()
    assert tuple(layer.scale) == tuple(image_layer.scale)
    assert layer.selected_label == merged.max() + 1  # "New cell" ran: the next free id

    # the keyboard shortcut N selects the next free id too
    layer.selected_label = 1
    viewer.layers.selection.active = layer
    qtbot.keyClick(viewer.window._qt_viewer.canvas.native, "n")
    assert layer.selected_label == merged.max() + 1

    # split the merged cell with a line between the two true cells, then undo / redo
    ya, xa = np.argwhere(gt == a).mean(axis=0)
    yb, xb = np.argwhere(gt == b).mean(axis=0)
    my, mx = (ya + yb) / 2, (xa + xb) / 2
    dy, dx = xb - xa, -(yb - ya)  # perpendicular to the line joining the centres
    norm = np.hypot(dy, dx)
    line = np.array(
        [[my - 20 * dy / norm, mx - 20 * dx / norm], [my + 20 * dy / norm, mx + 20 * dx / norm]]
    )
    shapes = widget.split_line_layer()
    shapes.add_paths([line])
    layer.name = "my cells"  # renamed after drawing: the line drawn is still the one used
    assert widget.split_line_layer() is shapes
    new_id = A.next_free_label(merged)
    widget.label_spin.setValue(a)
    widget.split_by_line(label=a)
    assert len(shapes.data) == 0
    after_split = layer.data.copy()
    assert (after_split == new_id).any() and (after_split == a).any()
    assert len(A.touching_pairs(after_split)) >= len(A.touching_pairs(merged)) + 1
    layer.undo()
    assert (layer.data == merged).all()
    layer.redo()
    assert (layer.data == after_split).all()

    # merge, delete, fill holes: each one undo step
    widget.merge(a, new_id)
    assert not (layer.data == new_id).any()
    layer.undo()
    assert (layer.data == after_split).all()
    widget.delete(a)
    assert not (layer.data == a).any()
    layer.undo()
    hole_cell = int(gt[gt > 0][0])
    ys, xs = np.nonzero(layer.data == hole_cell)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    layer.data_setitem((np.array([cy]), np.array([cx])), 0)
    widget.fill_holes()
    assert layer.data[cy, cx] == hole_cell

    # watershed split of the merged pair in the prediction's copy
    widget.label_spin.setValue(a)
    layer.undo()  # the fill
    layer.undo()  # the hole
    layer.undo()  # back to the merged prediction
    assert (layer.data == merged).all()
    widget.split_watershed(a, 2)
    assert len(np.unique(layer.data[merged == a])) == 2

    # Check with the prediction: the audit reports the merge of a and b
    layer.undo()
    fixed = gt.astype(np.int32)
    layer.data_setitem(np.nonzero(layer.data != fixed), fixed[layer.data != fixed])
    widget.min_size.setValue(5)
    report = widget.check()
    assert report.count("merged_by_prediction") >= 1
    assert any(p.ids == (a, b) for p in report.problems if p.kind == "merged_by_prediction")
    assert widget.problem_list.count() == len(report.problems) + 1  # + the folded notes
    check_layer = viewer.layers[f"{layer.name} check"]
    assert (check_layer.data == report.mask).all()
    assert (check_layer.data == A.CHECK_CODES["border"]).any()
    widget.problem_list.setCurrentRow(0)
    centre = np.array(viewer.scene.camera.center[-2:])
    expected = layer.data_to_world(report.problems[0].position)
    assert np.allclose(centre, expected)
    assert (pred_layer.data == pred_before).all()  # the prediction was never modified


def test_ignore_mask_training_set_and_points(make_napari_viewer):
    viewer = make_napari_viewer()
    widget, image_layer, gt = _dock(viewer, seed=3)
    layer = widget.new_annotation()
    assert layer.data.shape == gt.shape and not layer.data.any()
    with pytest.raises(Exception, match="no cells"):
        widget.add_to_training_set()
    layer.data_setitem(np.nonzero(gt), gt[gt > 0])
    ignore = widget.add_ignore_mask()
    assert widget.add_ignore_mask() is ignore
    ignore.data_setitem(np.nonzero(np.ones((10, 10), bool)), 1)
    pair = widget.add_to_training_set()
    workspace = workspace_for(viewer)  # the training set Fine-tune trains on
    assert workspace.pairs == [pair] and widget.links[0].in_training
    viewer.add_image(np.zeros((4, 4)), name="another layer")  # the list survives changes
    assert workspace.pairs == [pair]
    assert pair.image is image_layer and pair.labels is layer and pair.ignore is ignore
    counts = A.training_counts([gt])
    assert f"{counts['cells']} cells" in widget.counts.text()
    assert f"{counts['touching_pairs']} touching pairs" in widget.counts.text()

    # a missed cell marked with a point becomes a disk cell with a new id
    free = np.argwhere(gt == 0)[len(np.argwhere(gt == 0)) // 2]
    points = viewer.add_points([image_layer.data_to_world(free)], name="missed")
    before = int(layer.data.max())
    widget.radius_spin.setValue(3)
    widget.points_to_cells(points)
    assert layer.data[tuple(free)] == before + 1


def test_stack_annotated_plane_by_plane(make_napari_viewer):
    viewer = make_napari_viewer()
    image = np.stack([synthetic_cells((64, 64), seed=s)[0] for s in range(3)])
    image_layer = viewer.add_image(image, name="stack")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Annotate")
    select(widget.image_combo, image_layer)
    layer = widget.new_annotation()
    assert layer.data.shape == image.shape
    lab = np.zeros((64, 64), np.int32)
    lab[10:30, 10:50] = 1
    layer.data_setitem((np.full(lab.sum(), 1), *np.nonzero(lab)), 1)
    viewer.dims.set_current_step(0, 1)
    assert widget._plane(layer) == (1,)
    widget.split_by_line(np.array([[1, 0, 30], [1, 40, 30]]))
    assert set(np.unique(layer.data[1])) == {0, 1, 2}
    assert not layer.data[0].any() and not layer.data[2].any()


@pytest.mark.slow
def test_autosave_and_restore(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    widget, image_layer, gt = _dock(viewer, seed=5)
    layer = widget.new_annotation()
    widget.set_project(tmp_path / "project")
    ignore = widget.add_ignore_mask()
    saves = widget.saves
    layer.data_setitem(np.nonzero(gt), gt[gt > 0])  # an edit: autosaved shortly after
    qtbot.waitUntil(lambda: widget.saves > saves, timeout=5000)
    widget.add_to_training_set()
    qtbot.waitUntil(lambda: not widget.autosave.busy, timeout=5000)
    assert widget.last_save_error is None

    # a second image with the same name but other pixels never overwrites the first
    other = viewer.add_image(image_layer.data[::-1].copy(), name="cells", scale=(0.5, 0.5))
    layer2 = widget.new_annotation(other)
    layer2.data_setitem((np.array([3]), np.array([3])), 7)
    widget.save_now()
    project = A.AnnotationProject(tmp_path / "project", create=False)
    assert len(project.entries) == 2
    assert project.training_keys() and len(project.training_keys()) == 1

    # reopen in a fresh viewer: image, annotation, ignore and the training list return
    viewer2 = make_napari_viewer()
    _, widget2 = viewer2.window.add_plugin_dock_widget("napari-unet-cells", "Annotate")
    restored = widget2.open_project(tmp_path / "project")
    assert len(restored) == 2
    first = next(link for link in restored if link.in_training)
    assert (first.annotation.data == gt).all()
    assert (first.image.data == image_layer.data).all()
    assert first.ignore is not None and first.ignore.data.shape == gt.shape
    assert tuple(first.annotation.scale) == (0.5, 0.5)
    pairs = workspace_for(viewer2).pairs
    assert len(pairs) == 1 and pairs[0].labels is first.annotation
    assert ignore.name == first.ignore.name


def test_training_flags_follow_the_workspace_training_set(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    widget, _, gt = _dock(viewer, seed=6)
    layer = widget.new_annotation()
    layer.data_setitem(np.nonzero(gt), gt[gt > 0])
    widget.set_project(tmp_path)
    widget.add_to_training_set()
    widget.save_now()
    assert len(A.AnnotationProject(tmp_path, create=False).training_keys()) == 1
    assert "1 image(s)" in widget.counts.text()
    workspace_for(viewer).remove_pair(0)  # removed elsewhere (the Fine-tune dock)
    assert not widget.links[0].in_training and widget.counts.text() == "training set: empty"
    assert widget.autosave_timer.isActive()  # the flag change is saved by itself
    widget.save_now()
    assert A.AnnotationProject(tmp_path, create=False).training_keys() == []
    widget.add_to_training_set()
    widget.save_now()
    viewer.layers.remove(layer)  # the annotation layer deleted: out of the training set,
    project = A.AnnotationProject(tmp_path, create=False)  # on disk too (its cells are kept)
    assert project.training_keys() == [] and len(project.entries) == 1


def test_add_to_training_set_needs_no_finetune_widget(make_napari_viewer, monkeypatch):
    """Issue 13: Annotate docked Fine-tune and called its add_pair inside a broad except;
    the training set now lives in the workspace, and no dock is opened."""
    viewer = make_napari_viewer()
    widget, _, gt = _dock(viewer, seed=4)
    opened = []
    monkeypatch.setattr(
        viewer.window, "add_plugin_dock_widget", lambda *a, **k: opened.append(a) or (None, None)
    )
    layer = widget.new_annotation()
    layer.data_setitem(np.nonzero(gt), gt[gt > 0])
    pair = widget.add_to_training_set()
    assert workspace_for(viewer).pairs == [pair] and pair.labels is layer
    assert opened == []  # no dock opens another (DESIGN.md): the workspace is the link
    assert "cells" in widget.counts.text() and widget.links[0].in_training


def test_prediction_default_comes_from_the_workspace(make_napari_viewer):
    viewer = make_napari_viewer()
    widget, image_layer, gt = _dock(viewer, seed=2)
    other = viewer.add_image(image_layer.data[::-1].copy(), name="other")
    role = {"unet_cells_role": "prediction"}
    mine = viewer.add_labels(gt, name="cells cells", metadata=dict(role))
    workspace_for(viewer).add_prediction(image_layer, mine)
    assert widget.prediction_combo.currentData() is mine
    theirs = viewer.add_labels(gt[::-1].copy(), name="other cells", metadata=dict(role))
    workspace_for(viewer).add_prediction(other, theirs)
    assert widget.prediction_combo.currentData() is mine  # newer, but of another image
    select(widget.image_combo, other)
    assert widget.prediction_combo.currentData() is theirs


def test_autosave_saves_only_changes_and_survives_a_failed_save(
    make_napari_viewer, tmp_path, monkeypatch
):
    from napari_unet_cells.widgets.annotate import autosave

    errors = []
    monkeypatch.setattr(autosave, "show_error", errors.append)
    viewer = make_napari_viewer()
    widget, _, gt = _dock(viewer, seed=7)
    layer = widget.new_annotation()
    layer.data_setitem(np.nonzero(gt), gt[gt > 0])
    widget.set_project(tmp_path)
    assert widget.save_now() == 0  # nothing changed since
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    real_replace = os.replace

    def fails(src, dst):
        raise OSError("disk full")

    layer.data_setitem((np.array([0]), np.array([0])), 99)
    monkeypatch.setattr(os, "replace", fails)
    assert widget.save_now() == 0
    assert "disk full" in widget.last_save_error and "NOT SAVED" in widget.save_status.text()
    assert errors and "Autosave failed" in errors[-1]
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files
    monkeypatch.setattr(os, "replace", real_replace)
    assert widget.save_now() == 1  # retried: the edit is saved now
    (key,) = A.AnnotationProject(tmp_path, create=False).entries
    assert A.AnnotationProject(tmp_path, create=False).load(key)["labels"][0, 0] == 99


def test_check_runs_in_background_real_problems_first(make_napari_viewer, qtbot):
    """Issue 16.1: Check ran on the GUI thread (minutes on big images) and listed
    thousands of touching pairs before the one real problem."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    widget, _, gt = _dock(viewer, shape=(256, 256))
    layer = widget.new_annotation()
    labels = gt.astype(np.int32)
    labels[2:5, 2:5] = labels.max()  # the largest id used twice: a split id
    layer.data_setitem(np.nonzero(labels), labels[labels > 0])
    qtbot.mouseClick(widget.check_button, Qt.MouseButton.LeftButton)
    worker = widget.check_worker
    assert worker is not None and not widget.check_button.isEnabled()  # not done inline
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    qtbot.waitUntil(lambda: widget.check_button.isEnabled())
    report = widget.report
    assert [p.kind for p in report.problems] == ["split_id"]
    assert len(report.notes) == report.n_touching_pairs > 10
    assert widget.problem_list.count() == 2  # the problem, then one line for the notes
    assert widget.problem_list.item(0).text().startswith(f"id {labels.max()} is used")
    assert "touching pair" in widget.problem_list.item(1).text()
    assert "problems: 1 split id" in widget.check_summary.text()
    widget.problem_list.setCurrentRow(1)  # click the folded line: the notes are listed
    assert widget.problem_list.count() == 1 + len(report.notes)
    widget.problem_list.setCurrentRow(2)
    centre = np.array(viewer.scene.camera.center[-2:])
    assert np.allclose(centre, layer.data_to_world(report.notes[1].position))


def test_defaults_after_predict_point_at_a_copy_not_the_prediction(make_napari_viewer, qtbot):
    """Issue 16.9: after Predict, Annotation was the prediction itself and Prediction
    (none), so 'Start from prediction' failed and Delete/Merge edited the prediction."""
    from napari_unet_cells.core.checkpoint import CellModel
    from napari_unet_cells.core.config import ModelConfig
    from napari_unet_cells.core.registry import register_model, unregister_model

    register_model("tiny", CellModel.new(ModelConfig(base=4, depth=2, dropout=0.0), seed=0))
    try:
        _defaults_after_predict(make_napari_viewer(), qtbot)
    finally:
        unregister_model("tiny")


def _defaults_after_predict(viewer, qtbot) -> None:
    from napari_unet_cells.core.errors import UNetCellsError

    image, _ = synthetic_cells((96, 96), seed=1)
    image_layer = viewer.add_image(image, name="cells")
    _, predict = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
    _, annotate = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Annotate")
    predict.refresh_models()
    predict.model_combo.value = "tiny"
    predict.device.value = "cpu"
    predict.threshold.value = 0.01  # an untrained net: make sure some cells come out
    predict.run()
    qtbot.waitUntil(lambda: predict.worker is None, timeout=60_000)
    prediction = viewer.layers["cells cells"]
    before = np.array(prediction.data, copy=True)
    assert annotate.prediction_combo.currentData() is prediction
    assert annotate.annotation_combo.currentData() is None  # a new one, not a user's layer
    assert all(
        annotate.annotation_combo.itemData(i) is not prediction
        for i in range(annotate.annotation_combo.count())
    )
    with pytest.raises(UNetCellsError, match="Start from prediction"):
        annotate.link_for(prediction)
    select(annotate.image_combo, image_layer)
    copy = annotate.new_annotation(from_prediction=True)  # the button's default works
    assert copy is not prediction and (copy.data == before).all()
    assert annotate.annotation_combo.currentData() is copy
    cell = int(before.max())
    if cell:
        annotate.delete(cell)
        assert not (copy.data == cell).any()
    assert (prediction.data == before).all()  # the prediction is left alone


def test_two_annotations_of_one_image_never_overwrite_each_other(make_napari_viewer, tmp_path):
    """Two annotation layers of one image, and a new annotation of an image annotated in
    an earlier session, each keep their own entry in the project."""
    viewer = make_napari_viewer()
    widget, _, gt = _dock(viewer)
    widget.set_project(tmp_path)
    first = widget.new_annotation()
    first.data_setitem(np.nonzero(gt), gt[gt > 0])
    second = widget.new_annotation()
    second.data_setitem((np.array([3]), np.array([3])), 1)
    widget.save_now()
    project = A.AnnotationProject(tmp_path, create=False)
    cells = sorted(len(np.unique(project.load(k)["labels"])) - 1 for k in project.entries)
    assert cells == [1, len(np.unique(gt)) - 1]

    # a later session: the same image, a new (empty) annotation, autosaved
    viewer2 = make_napari_viewer()
    widget2, _, _ = _dock(viewer2)
    widget2.set_project(tmp_path)
    widget2.new_annotation()
    widget2.save_now()
    project = A.AnnotationProject(tmp_path, create=False)
    cells = sorted(len(np.unique(project.load(k)["labels"])) - 1 for k in project.entries)
    assert cells == [0, 1, len(np.unique(gt)) - 1]
    restored = widget2.open_project(tmp_path)  # the two earlier ones come back as layers
    assert len(restored) == 2
    (tmp_path / "a file").write_text("not a folder")
    widget2.project_panel._open(str(tmp_path / "a file" / "sub"))  # Open: refused, no traceback
    assert widget2.folder.text() == str(tmp_path) and widget2.project.folder == tmp_path


def test_painted_cells_survive_closing_napari_without_a_project(make_napari_viewer, qtbot):
    """Issue 16.6: 19 painted cells were lost on close: no project folder, no prompt."""
    from qtpy.QtCore import QEvent, QObject

    class KeepOpen(QObject):  # runs after the dock's filter: the window stays for teardown
        def eventFilter(self, obj, event):
            if event.type() != QEvent.Type.Close:
                return False
            event.ignore()
            return True

    viewer = make_napari_viewer(show=True)
    keep_open = KeepOpen()
    viewer.window._qt_window.installEventFilter(keep_open)
    widget, image_layer, gt = _dock(viewer)
    assert str(A.default_project_folder()) in widget.save_status.text()  # said up front
    layer = widget.new_annotation()
    cells = gt > 0
    n = len(np.unique(gt[cells]))
    layer.data_setitem(np.nonzero(cells), gt[cells])  # painted; closed at once, < 1.5 s
    assert widget.project is not None and widget.project.folder == A.default_project_folder()
    assert widget.folder.text() == str(A.default_project_folder())
    viewer.window._qt_window.close()  # the user closes napari's window
    project = A.AnnotationProject(A.default_project_folder(), create=False)
    [key] = project.entries
    saved = project.load(key)
    assert len(np.unique(saved["labels"][saved["labels"] > 0])) == n > 10
    np.testing.assert_array_equal(saved["image"], image_layer.data)


def test_autosave_writes_in_a_worker_one_save_at_a_time(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """Issue 13: autosave compressed, wrote and hashed whole images on the GUI thread.
    Now the GUI thread only copies the labels; a save requested meanwhile is not lost."""
    import threading

    threads = {"save": [], "hash": []}
    gate = threading.Event()
    real_save, real_identity = A.AnnotationProject.save, A.image_identity

    def save(self, *args, **kwargs):
        threads["save"].append(threading.current_thread())
        gate.wait(20)  # hold the first save until the test made a second edit
        return real_save(self, *args, **kwargs)

    def identity(*args, **kwargs):
        threads["hash"].append(threading.current_thread())
        return real_identity(*args, **kwargs)

    monkeypatch.setattr(A.AnnotationProject, "save", save)
    monkeypatch.setattr(A, "image_identity", identity)
    viewer = make_napari_viewer()
    widget, _, gt = _dock(viewer, seed=8)
    widget.set_project(tmp_path)
    saves = widget.saves
    try:
        layer = widget.new_annotation()
        layer.data_setitem(np.nonzero(gt), gt[gt > 0])  # autosaved ~1.5 s later
        qtbot.waitUntil(lambda: len(threads["save"]) == 1, timeout=10_000)
        assert widget.autosave.busy and widget.saves == saves  # still writing, GUI free
        layer.data_setitem((np.array([0]), np.array([0])), 77)  # edited during the save
        widget.autosave.save_in_background()  # the timer fires while the save runs
    finally:
        gate.set()
    qtbot.waitUntil(lambda: not widget.autosave.busy, timeout=20_000)
    assert len(threads["save"]) == 2 and widget.saves == saves + 2
    assert widget.last_save_error is None
    assert threads["hash"] and threading.main_thread() not in threads["save"] + threads["hash"]
    project = A.AnnotationProject(tmp_path, create=False)
    (key,) = project.entries
    saved = project.load(key)["labels"]
    assert saved[0, 0] == 77 and (saved[gt > 0] == gt[gt > 0]).all()
    assert not any(link.dirty for link in widget.links)


def test_closing_napari_during_an_autosave_keeps_the_last_edit(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    """Closing napari while a background save runs waits for it, then saves the edits
    made after its snapshot (synchronously)."""
    import threading

    from qtpy.QtCore import QEvent, QObject

    class KeepOpen(QObject):  # runs after the dock's filter: the window stays for teardown
        def eventFilter(self, obj, event):
            if event.type() != QEvent.Type.Close:
                return False
            event.ignore()
            return True

    started, gate = threading.Event(), threading.Event()
    real_save = A.AnnotationProject.save

    def save(self, *args, **kwargs):
        started.set()
        gate.wait(20)
        return real_save(self, *args, **kwargs)

    viewer = make_napari_viewer(show=True)
    keep_open = KeepOpen()
    viewer.window._qt_window.installEventFilter(keep_open)
    widget, _, gt = _dock(viewer, seed=9)
    widget.set_project(tmp_path)
    layer = widget.new_annotation()
    layer.data_setitem(np.nonzero(gt), gt[gt > 0])
    monkeypatch.setattr(A.AnnotationProject, "save", save)
    widget.autosave.save_in_background()
    assert started.wait(10)  # the save runs (held) in a worker
    layer.data_setitem((np.array([0]), np.array([0])), 55)  # after its snapshot
    threading.Timer(0.5, gate.set).start()
    viewer.window._qt_window.close()  # waits for the running save, then saves the rest
    assert not any(link.dirty for link in widget.links)
    project = A.AnnotationProject(tmp_path, create=False)
    (key,) = project.entries
    saved = project.load(key)["labels"]
    assert saved[0, 0] == 55 and (saved[gt > 0] == gt[gt > 0]).all()


def test_an_annotation_whose_image_was_removed_is_not_linked_to_another_image(
    make_napari_viewer,
):
    """Removing an annotation's image and then editing the annotation refuses, rather
    than silently linking (and saving) it under whatever image is chosen; the same image
    opened again is accepted."""
    from napari_unet_cells.core.errors import UNetCellsError

    viewer = make_napari_viewer()
    widget, image_layer, gt = _dock(viewer)
    other = viewer.add_image(np.zeros(gt.shape, np.float32), name="other")
    layer = widget.new_annotation()
    layer.data = gt.astype(np.int32)
    assert widget.link_for(layer).image is image_layer
    viewer.layers.remove(image_layer)
    assert workspace_for(viewer).link_of(layer) is None
    viewer.layers.remove(other)  # no image left at all: the message still says which
    with pytest.raises(UNetCellsError, match="'cells', was removed"):
        widget.link_for(layer)
    other = viewer.add_image(np.zeros(gt.shape, np.float32), name="other")
    select(widget.image_combo, other)
    with pytest.raises(UNetCellsError, match="'cells', was removed"):
        widget.link_for(layer)
    assert workspace_for(viewer).link_of(layer) is None
    reopened = viewer.add_image(np.zeros(gt.shape, np.float32), name="cells")
    select(widget.image_combo, reopened)
    assert widget.link_for(layer).image is reopened


def test_a_reopened_dock_keeps_the_project_and_the_closed_one_stops_saving(
    make_napari_viewer, qtbot, tmp_path
):
    """The project folder lives in the workspace: closing and reopening Annotate keeps
    saving there (not to the default folder), and only the newest dock saves."""
    viewer = make_napari_viewer()
    widget, _, gt = _dock(viewer, seed=3)
    widget.set_project(tmp_path / "project")
    layer = widget.new_annotation()
    viewer.window.remove_dock_widget(widget)
    _, reopened = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Annotate")
    assert reopened is not widget
    assert reopened.folder.text() == str((tmp_path / "project").resolve())
    assert reopened.project is widget.project
    old_saves, saves = widget.saves, reopened.saves
    layer.data_setitem(np.nonzero(gt), gt[gt > 0])  # an edit after the reopen
    qtbot.waitUntil(lambda: reopened.saves > saves, timeout=5000)
    reopened.add_to_training_set(layer)  # a training-set change: only the new dock saves
    assert reopened.autosave_timer.isActive() and not widget.autosave_timer.isActive()
    qtbot.wait(2 * 1500)  # the closed dock's debounce would have fired by now
    assert widget.saves == old_saves and not widget.autosave_timer.isActive()
    project = A.AnnotationProject(tmp_path / "project", create=False)
    (key,) = project.entries
    assert (project.load(key)["labels"] == gt).all()
    default = A.default_project_folder()
    assert not default.exists() or not any(default.iterdir())
