"""Folder runs (core/batch.py): labels, per-cell tables and a summary, past broken files."""

import threading

import numpy as np
import pytest
import tifffile

from napari_unet_cells.core.batch import earlier_rows, images_in, plan_batch, run_batch_iter
from napari_unet_cells.core.errors import UNetCellsError
from napari_unet_cells.core.measure import read_table_csv
from napari_unet_cells.core.progress import run
from napari_unet_cells.core.synthetic import synthetic_cells


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for seed in (1, 2):
        image, _ = synthetic_cells((128, 128), seed=seed)
        tifffile.imwrite(images / f"well.{seed}.tif", image)
    (images / "broken.tif").write_bytes(b"not a tiff at all")
    tifffile.imwrite(images / "line.tif", np.ones(50, np.uint16))  # 1-D: wrong dimensions
    (images / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    out.mkdir()
    return images, out


def test_folder_run_continues_past_broken_files_and_reports_them(folder):
    images, out = folder
    found = images_in(images)
    assert [p.name for p in found] == ["broken.tif", "line.tif", "well.1.tif", "well.2.tif"]
    jobs = plan_batch(found, out)
    assert [j.labels.name for j in jobs][2:] == ["well.1_cells.tif", "well.2_cells.tif"]
    events = []
    rows = run(
        run_batch_iter(jobs, None, diameter=None, summary=out / "summary.csv"), events.append
    )
    assert [bool(r["error"]) for r in rows] == [True, True, False, False]
    assert "Cannot read" in rows[0]["error"] or "TIFF" in rows[0]["error"]
    for row, job in zip(rows[2:], jobs[2:], strict=True):
        assert row["cells"] > 5 and job.labels.is_file()
        table = read_table_csv(job.table)
        assert len(table["label"]) == row["cells"]
        assert row["median_area_px"] == np.median(table["area_px"])
    summary = read_table_csv(out / "summary.csv")
    assert list(summary["file"]) == [str(p) for p in found]
    assert summary["error"][0] and not summary["error"][2]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert not (out / "broken_cells.tif").exists()  # nothing half-written


def test_outputs_are_checked_before_any_work(folder, tmp_path):
    images, out = folder
    same = tmp_path / "same"
    same.mkdir()
    tifffile.imwrite(same / "a.tif", np.zeros((8, 8), np.uint8))
    tifffile.imwrite(same / "a.ome.tif", np.zeros((8, 8), np.uint8))
    with pytest.raises(UNetCellsError, match=r"a\.ome\.tif and .*a\.tif"):
        plan_batch(images_in(same), out)
    (out / "summary.csv").write_text("mine")
    with pytest.raises(UNetCellsError, match=r"summary\.csv already exists"):
        plan_batch(images_in(images), out)
    assert (out / "summary.csv").read_text() == "mine"
    assert plan_batch(images_in(images), out, tables=False)  # no summary written: no clash
    with pytest.raises(UNetCellsError, match="does not exist"):
        plan_batch(images_in(images), tmp_path / "nowhere")
    with pytest.raises(UNetCellsError, match=r"no \.tif"):
        images_in(out)


def test_stop_ends_the_run_and_the_summary_lists_what_was_done(folder):
    images, out = folder
    jobs = plan_batch(images_in(images)[2:], out, tables=False)
    stop = threading.Event()

    def on_event(event):
        if event.row is not None:
            stop.set()  # after the first finished file

    rows = run(
        run_batch_iter(jobs, None, diameter=None, summary=out / "s.csv", stop=stop), on_event
    )
    assert len(rows) == 1 and jobs[0].labels.exists() and not jobs[1].labels.exists()
    assert jobs[0].table is None and len(read_table_csv(out / "s.csv")["file"]) == 1


def test_a_stopped_run_continues_where_it_stopped(folder):
    """Skip images already done: the files done are not redone, the summary keeps their
    rows and adds the rest; without skipping, the folder is refused (nothing written)."""
    images, out = folder
    found = images_in(images)[2:]
    summary = out / "summary.csv"
    stop = threading.Event()
    first = plan_batch(found, out)
    run(
        run_batch_iter(first, None, diameter=None, summary=summary, stop=stop),
        lambda event: event.row is not None and stop.set(),
    )
    done_at = first[0].labels.stat().st_mtime_ns
    with pytest.raises(UNetCellsError, match="continue a stopped run"):
        plan_batch(found, out)
    jobs = plan_batch(found, out, skip_done=True)
    assert [job.image for job in jobs] == [found[1]]
    earlier = earlier_rows(summary, [job.image for job in jobs])
    assert len(earlier) == 1 and earlier[0]["cells"] > 5
    rows = run(
        run_batch_iter(jobs, None, diameter=None, summary=summary, earlier=earlier),
        lambda _e: None,
    )
    assert len(rows) == 1 and not rows[0]["error"]
    table = read_table_csv(summary)
    assert list(table["file"]) == [str(p) for p in found]
    assert table["cells"][0] == earlier[0]["cells"] and table["cells"][1] == rows[0]["cells"]
    assert first[0].labels.stat().st_mtime_ns == done_at  # not redone
    assert plan_batch(found, out, skip_done=True) == []  # all done now


def test_a_run_without_tables_continued_with_tables_measures_the_labels_it_keeps(folder):
    """The earlier run wrote labels only; continuing with tables measures those labels
    (never rewritten) and segments the rest."""
    images, out = folder
    found = images_in(images)[2:]
    stop = threading.Event()
    first = plan_batch(found, out, tables=False)
    run(
        run_batch_iter(first, None, diameter=None, summary=None, stop=stop),
        lambda event: event.row is not None and stop.set(),
    )
    kept = first[0].labels.stat().st_mtime_ns
    jobs = plan_batch(found, out, tables=True, skip_done=True)
    assert [job.measure_only for job in jobs] == [True, False]
    rows = run(
        run_batch_iter(jobs, None, diameter=None, summary=out / "summary.csv", earlier=[]),
        lambda _e: None,
    )
    assert [bool(row["error"]) for row in rows] == [False, False]
    assert "measured now" in rows[0]["notes"] and rows[0]["cells"] > 5
    assert first[0].labels.stat().st_mtime_ns == kept  # not rewritten
    table = read_table_csv(jobs[0].table)
    assert len(table["label"]) == rows[0]["cells"]
    assert plan_batch(found, out, tables=True, skip_done=True) == []


def test_multi_channel_and_ambiguous_tiffs_are_read_as_the_cli_reads_them(tmp_path):
    """A 2-channel CYX TIFF is not segmented as 2 planes: the row says to choose a channel,
    as ``unet-cells predict`` does; a ZYX stack with axes metadata is segmented per plane."""
    images, out = tmp_path / "images", tmp_path / "out"
    images.mkdir()
    out.mkdir()
    image, _ = synthetic_cells((96, 96), seed=3)
    two = np.stack([image, image[::-1]])
    tifffile.imwrite(images / "a_stains.tif", two, imagej=True, metadata={"axes": "CYX"})
    tifffile.imwrite(images / "b_ambiguous.tif", two)  # no axes metadata
    tifffile.imwrite(images / "c_stack.tif", two, imagej=True, metadata={"axes": "ZYX"})
    jobs = plan_batch(images_in(images), out, tables=False)
    rows = run(run_batch_iter(jobs, None, diameter=None, summary=None), lambda _e: None)
    stains, ambiguous, stack = rows
    assert "2 channels" in stains["error"] and "choose one" in stains["error"]
    assert "planes or 2 channels" in ambiguous["error"] and "Channel" in ambiguous["error"]
    assert not stack["error"] and tifffile.imread(jobs[2].labels).shape == (2, 96, 96)


def test_a_tiff_without_pixels_says_it_may_be_damaged(tmp_path):
    from napari_unet_cells.core.image_files import open_image

    path = tmp_path / "empty.tif"
    tifffile.imwrite(path, np.zeros((0, 64, 64), np.uint16))
    with pytest.raises(UNetCellsError, match="damaged or incomplete: save it again as TIFF"):
        open_image(path)
