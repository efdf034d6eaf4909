"""Annotation: label edits, the check, points to disks, the project folder (atomic saves)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_unet_cells.core import annotation as A
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.weightmap import separation_target


def _two_touching():
    lab = np.zeros((40, 60), np.int32)
    lab[10:30, 5:25] = 1
    lab[10:30, 25:45] = 2
    return lab


def test_next_free_label_and_delete():
    lab = _two_touching()
    assert A.next_free_label(lab) == 3
    assert A.next_free_label(np.zeros((5, 5), np.uint8)) == 1
    out = A.apply_edit(lab.copy(), A.delete_label(lab, 2))
    assert not (out == 2).any() and (out == 1).sum() == 400
    with pytest.raises(UNetCellsError, match="no cell 7"):
        A.delete_label(lab, 7)


def test_merge():
    lab = _two_touching()
    edit = A.merge_labels(lab, [2, 1])
    out = A.apply_edit(lab.copy(), edit)
    assert set(np.unique(out)) == {0, 1} and (out == 1).sum() == 800
    assert edit.size == 400  # only the changed pixels are recorded
    with pytest.raises(UNetCellsError, match="two cells"):
        A.merge_labels(lab, [1, 9])


def test_split_by_line_gives_touching_cells_with_new_id():
    lab = np.zeros((40, 60), np.int32)
    lab[10:30, 5:45] = 4
    edit = A.split_label_by_line(lab, 4, np.array([[5, 25], [35, 25]]))
    out = A.apply_edit(lab.copy(), edit)
    assert set(np.unique(out)) == {0, 4, 5}
    assert ((out > 0) == (lab > 0)).all()  # no pixel lost: the line joins a piece
    assert (4, 5) in A.touching_pairs(out)
    with pytest.raises(UNetCellsError, match="did not split"):
        A.split_label_by_line(lab, 4, np.array([[0, 0], [5, 2]]))


def test_split_by_line_in_a_stack_plane():
    lab = np.zeros((3, 30, 30), np.int32)
    lab[:, 5:25, 5:25] = 1
    edit = A.split_label_by_line(lab, 1, np.array([[15, 0], [15, 29]]), plane=(1,))
    out = A.apply_edit(lab.copy(), edit)
    assert set(np.unique(out[1])) == {0, 1, 2}
    assert (out[0] == lab[0]).all() and (out[2] == lab[2]).all()
    with pytest.raises(UNetCellsError, match="plane"):
        A.split_label_by_line(lab, 1, np.array([[15, 0], [15, 29]]))


def test_split_watershed_separates_two_discs():
    yy, xx = np.mgrid[:40, :70]
    a = (yy - 20) ** 2 + (xx - 20) ** 2 < 13**2
    b = (yy - 20) ** 2 + (xx - 44) ** 2 < 13**2
    lab = (a | b).astype(np.int32) * 3
    image = (a | b).astype(float) * 100
    out = A.apply_edit(lab.copy(), A.split_label_watershed(lab, 3, image))
    ids = sorted(set(np.unique(out)) - {0})
    assert ids == [3, 4]
    left, right = out[20, 15], out[20, 50]
    assert left != right and {left, right} == {3, 4}
    # explicit markers
    out2 = A.apply_edit(
        lab.copy(), A.split_label_watershed(lab, 3, None, markers=np.array([[20, 18], [20, 46]]))
    )
    assert out2[20, 15] != out2[20, 50]


def test_split_watershed_splits_a_smooth_blob_with_one_maximum():
    # two cells merged into one ellipse (no waist, one distance maximum, flat image):
    # the dock's "Split (watershed)" still gives the parts asked for, side by side
    yy, xx = np.mgrid[:40, :80]
    lab = (((yy - 20) / 12.0) ** 2 + ((xx - 40) / 30.0) ** 2 < 1).astype(np.int32) * 5
    image = (lab > 0) * 100.0
    out = A.apply_edit(lab.copy(), A.split_label_watershed(lab, 5, image, n=2))
    assert sorted(set(np.unique(out)) - {0}) == [5, 6]
    assert out[20, 20] != out[20, 60]
    sizes = np.bincount(out.ravel())[[5, 6]]
    assert sizes.min() > 0.35 * sizes.sum()
    with pytest.raises(UNetCellsError, match="Split by line"):
        A.split_label_watershed(lab, 5, None, markers=np.array([[20, 40]]))


def test_fill_holes_keeps_inner_cells():
    lab = np.zeros((30, 30), np.int32)
    lab[5:25, 5:25] = 1
    lab[10:13, 10:13] = 0  # a hole
    lab[16:20, 16:20] = 2  # a cell inside cell 1
    out = A.apply_edit(lab.copy(), A.fill_holes(lab))
    assert (out[10:13, 10:13] == 1).all()
    assert (out[16:20, 16:20] == 2).all()


def test_points_to_disks():
    lab = np.zeros((2, 40, 40), np.int32)
    lab[0, 0:10, 0:10] = 1
    pts = np.array([[0, 20, 20], [1, 5, 5], [0, 3, 3], [0, 60, 1]])  # on-cell and outside skipped
    edit = A.points_to_disks(lab, pts, radius=3)
    out = A.apply_edit(lab.copy(), edit)
    assert out[0, 20, 20] == 2 and out[1, 5, 5] == 3
    assert (out == 2).sum() == (out == 3).sum() == 29  # disk of radius 3
    assert (out[0, 0:10, 0:10] == 1).all()
    assert "2 skipped" in edit.message


def test_check_finds_problems_and_border():
    lab = _two_touching()
    lab[35:37, 50:52] = 3  # speck
    lab[2:6, 50:55] = 1  # second blob of id 1
    ignore = np.zeros_like(lab, bool)
    ignore[:, 45:] = True  # cuts nothing but is next to cell 2 (ends at x=44)
    rep = A.check_annotation(lab, ignore, min_size=10)
    assert {p.kind for p in rep.problems} == {"split_id", "speck", "edge"}
    assert [(p.kind, p.ids) for p in rep.notes] == [("border", (1, 2))]  # info, apart
    assert rep.n_touching_pairs == 1 and rep.n_cells == 3
    assert rep.unannotated_fraction == pytest.approx(15 / 60)
    # the mask shows exactly the border the weight map carves
    carved = (lab > 0) & (separation_target(lab) == 0)
    assert carved.any()
    assert (rep.mask[carved] != 0).all()
    assert (rep.mask == A.CHECK_CODES["border"]).sum() > 0
    assert "1 split id" in rep.summary()
    clean = A.check_annotation(_two_touching(), min_size=10)
    assert clean.problems == [] and clean.count("border") == 1
    assert clean.notes_summary().startswith("1 touching pair(s)")


def test_prediction_audit_merges_and_splits():
    lab = _two_touching()
    lab[32:39, 5:20] = 5
    pred = np.zeros_like(lab)
    pred[10:30, 5:45] = 1  # merges 1 and 2
    pred[32:39, 5:12] = 2  # splits 5
    pred[32:39, 12:20] = 3
    merged, split = A.prediction_audit(lab, pred)
    assert merged == [(1, 2)] and split == [5]
    rep = A.check_annotation(lab, prediction=pred, min_size=5)
    assert rep.count("merged_by_prediction") == 1 and rep.count("split_by_prediction") == 1
    assert {p.kind for p in rep.problems} == {"merged_by_prediction", "split_by_prediction"}
    assert A.prediction_audit(lab, lab) == ([], [])


def test_check_is_linear_in_pixels_and_stoppable(monkeypatch):
    """Issue 16.1: no full-image operation per touching pair (it froze napari for minutes
    on 2048 x 2048 px with 5,000 cells); all findings and their positions stay the same."""
    from napari_unet_cells.core.synthetic import synthetic_cells

    _, lab = synthetic_cells((256, 256), seed=3)
    pred = lab.copy()
    pred[np.isin(pred, (1, 2))] = 1  # one merge or split to audit
    calls = []
    real = A.ndi.binary_dilation
    monkeypatch.setattr(A.ndi, "binary_dilation", lambda *a, **k: calls.append(1) or real(*a, **k))
    ignore = np.zeros(lab.shape, bool)
    ignore[:, :30] = True
    rep = A.check_annotation(lab, ignore, prediction=pred)
    assert rep.n_touching_pairs > 20 and len(rep.notes) == rep.n_touching_pairs
    assert len(calls) <= 1  # once for the ignore mask, never per pair
    for note in rep.notes[:5]:  # positioned on the contact: a pixel of b next to a
        a, b = note.ids
        y, x = np.round(note.position).astype(int)
        near = lab[max(0, y - 3) : y + 4, max(0, x - 3) : x + 4]
        assert a in near and b in near
    events = []
    gen = A.iter_check_annotation(np.stack([lab, lab]), stop=lambda: len(events) >= 3)
    assert A.run(gen, events.append) is None and len(events) == 3
    assert events[-1].total == 8 and events[-1].fraction == pytest.approx(3 / 8)


def test_check_2048_px_5000_cells():
    """Issue 16.1: 2048 x 2048 px with ~5,000 cells is checked in one pass (its speed,
    < 2 s on 2 cores, is measured by benchmarks/bench_check.py, not here)."""
    from napari_unet_cells.core.synthetic import synthetic_cells

    _, tile = synthetic_cells((512, 512), seed=0)  # 4 x 4 copies, each its own ids: fast
    top = int(tile.max())
    lab = np.block(
        [[np.where(tile > 0, tile + top * (4 * i + j), 0) for j in range(4)] for i in range(4)]
    ).astype(np.int32)
    rep = A.check_annotation(lab)
    assert rep.n_cells > 4500 and rep.problems == []


def test_training_counts():
    lab = _two_touching()
    counts = A.training_counts([lab, np.stack([lab, np.zeros_like(lab)])])
    assert counts == {"images": 2, "cells": 4, "touching_pairs": 2}


# -- project folder -----------------------------------------------------------------------


def test_project_save_and_restore(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 1000, (30, 40)).astype(np.uint16)
    ident = A.image_identity("cells", image)
    lab = np.zeros((30, 40), np.int32)
    lab[5:10, 5:10] = 1
    ign = np.zeros((30, 40), bool)
    ign[:, 30:] = True
    proj = A.AnnotationProject(tmp_path / "proj")
    entry = proj.save(ident, lab, ign, image=image, scale=(0.5, 0.5), in_training=True)
    lab[20:25, 20:25] = 2
    proj.save(ident, lab, ign, image=image)
    again = A.AnnotationProject(tmp_path / "proj", create=False)
    assert list(again.entries) == [entry.key]
    assert again.training_keys() == [entry.key]
    arrays = again.load(entry.key)
    assert (arrays["labels"] == lab).all() and (arrays["ignore"] == ign).all()
    assert (arrays["image"] == image).all()
    assert again.entries[entry.key].scale == [0.5, 0.5]
    # same name, different pixels: a different key, the first annotation is untouched
    other = image.copy()
    other[0, 0] += 1
    e2 = again.save(A.image_identity("cells", other), np.zeros((30, 40), np.int32))
    assert e2.key != entry.key
    assert (again.load(entry.key)["labels"] == lab).all()
    with pytest.raises(UNetCellsError, match="does not match"):
        again.save(ident, np.zeros((3, 3), np.int32))
    with pytest.raises(UNetCellsError, match="not an annotation project"):
        A.AnnotationProject(tmp_path / "empty", create=False)


def test_project_keeps_several_annotations_of_one_image(tmp_path):
    image = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40)
    ident = A.image_identity("cells", image)
    first, second = np.zeros((2, 30, 40), np.int32)
    first[5:10, 5:10] = 1
    second[20:25, 20:25] = 3
    proj = A.AnnotationProject(tmp_path / "proj")
    e1 = proj.save(ident, first, image=image)
    e2 = proj.save(ident, second, image=image, new_entry=True)  # never e1's entry
    assert e2.key != e1.key
    first[0, 0] = 2
    assert proj.save(ident, first, key=e1.key).key == e1.key  # updates its own entry
    again = A.AnnotationProject(tmp_path / "proj", create=False)
    assert (again.load(e1.key)["labels"] == first).all()
    assert (again.load(e2.key)["labels"] == second).all()
    other = A.image_identity("cells", image[::-1].copy())
    with pytest.raises(UNetCellsError, match="another image"):
        again.save(other, first, key=e1.key)
    assert again.location == str((tmp_path / "proj").resolve())
    (tmp_path / "a file").write_text("not a folder")
    with pytest.raises(UNetCellsError, match=r"Cannot use .* as the project folder"):
        A.AnnotationProject(tmp_path / "a file" / "project")


def test_crash_during_save_keeps_previous_files(tmp_path, monkeypatch):
    image = np.arange(30 * 40, dtype=np.uint16).reshape(30, 40)
    ident = A.image_identity("cells", image)
    lab = np.zeros((30, 40), np.int32)
    lab[5:10, 5:10] = 1
    proj = A.AnnotationProject(tmp_path)
    entry = proj.save(ident, lab, image=image)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}

    import tifffile

    real = tifffile.imwrite

    def dies_midway(fh, data, **kw):
        fh.write(b"II*\x00 half a tiff")  # partial bytes, then the "crash"
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(tifffile, "imwrite", dies_midway)
    lab2 = lab.copy()
    lab2[20:25, 20:25] = 2
    with pytest.raises(KeyboardInterrupt):
        proj.save(ident, lab2, image=image)
    monkeypatch.setattr(tifffile, "imwrite", real)

    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing changed, no temporary file left behind

    # a crash while the index is replaced: the index keeps its previous bytes
    real_replace = os.replace

    def index_replace_fails(src, dst):
        if str(dst).endswith(A.INDEX_NAME):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", index_replace_fails)
    with pytest.raises(OSError, match="disk full"):
        proj.save(ident, lab2, image=image)
    monkeypatch.undo()
    assert (tmp_path / A.INDEX_NAME).read_bytes() == before[tmp_path / A.INDEX_NAME]
    restored = A.AnnotationProject(tmp_path, create=False).load(entry.key)
    assert (restored["labels"] == lab2).all()  # the labels file itself was complete
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]

    json.loads((tmp_path / A.INDEX_NAME).read_text())


def test_paint_label_takes_the_next_free_id():
    lab = _two_touching()
    mask = np.zeros_like(lab, bool)
    mask[0:5, 0:5] = True
    out = A.apply_edit(lab.copy(), A.paint_label(lab, mask))
    assert (out[0:5, 0:5] == 3).all() and (out == 3).sum() == 25
    with pytest.raises(UNetCellsError, match="annotation's shape"):
        A.paint_label(lab, mask[:3])
