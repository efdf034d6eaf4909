"""The Predict dock's "Whole folder" section (issue 14): every image of a folder to a
labels file, a cell table and a line of summary.csv, in the background, with the dock's
settings; a broken file is reported and the run goes on; Stop ends the run; existing
outputs are refused before any work; no layers are added and the worker gets no layer."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import pytest
import tifffile

from napari_unet_cells.core.synthetic import synthetic_cells
from napari_unet_cells.widgets.predict import folder_panel
from napari_unet_cells.widgets.predict.folder_panel import folder_message


@pytest.fixture
def images(tmp_path):
    """images/: a.tif and c.tif (128 x 128 synthetic nuclei) and b_broken.tif (garbage);
    out/: an empty folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name, seed in (("a", 1), ("c", 2)):
        tifffile.imwrite(folder / f"{name}.tif", synthetic_cells((128, 128), seed=seed)[0])
    (folder / "b_broken.tif").write_bytes(b"this is not a TIFF file " * 20)
    (tmp_path / "out").mkdir()
    return folder, tmp_path / "out"


@pytest.fixture
def dock(make_napari_viewer, qtbot, monkeypatch, images):
    """The docked Predict panel (bundled model, CPU, no resampling) with its folder
    section pointed at ``images``; notifications collected in ``said``."""
    said = {"error": [], "warning": [], "info": []}
    for kind in said:
        monkeypatch.setattr(folder_panel, f"show_{kind}", said[kind].append)
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet-cells", "Predict")
    widget.device.value = "cpu"
    widget.diameter.value = "none"
    panel = widget.folder
    panel.unfold(True)
    panel.input_folder.value, panel.output_folder.value = images
    yield viewer, widget, said
    if panel.worker is not None:  # never leave a worker running
        panel.stop()
        qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)


def _click_run(panel, qtbot) -> None:
    panel.run_button.native.click()
    assert panel.worker is not None
    # the panel's own finished-handler clears ``worker`` on the GUI thread
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120000)


def _summary(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_folder_gives_labels_tables_and_a_summary_and_a_broken_file_is_reported(dock, qtbot):
    viewer, widget, said = dock
    panel = widget.folder
    source, out = panel.input_folder.value, panel.output_folder.value
    assert panel.tables.value  # on by default
    _click_run(panel, qtbot)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_cells.csv", "a_cells.tif", "c_cells.csv", "c_cells.tif", "summary.csv"]
    for name in ("a", "c"):
        labels = tifffile.imread(out / f"{name}_cells.tif")
        assert labels.shape == (128, 128) and labels.max() > 3
        assert len(_summary(out / f"{name}_cells.csv")) == labels.max()  # one row per cell
    rows = _summary(out / "summary.csv")
    assert [Path(r["file"]).name for r in rows] == ["a.tif", "b_broken.tif", "c.tif"]
    assert rows[1]["error"] and not rows[1]["labels"]  # reported, and the run went on
    assert not rows[0]["error"] and int(rows[2]["cells"]) > 3
    cells = int(rows[0]["cells"]) + int(rows[2]["cells"])
    message = panel.status.value
    assert message == panel.message and said["warning"] == [message] and not said["error"]
    assert f"3 files: 2 segmented ({cells} cells), 1 failed." in message
    assert f"Summary: {out / 'summary.csv'}" in message
    assert f"b_broken.tif: {rows[1]['error']}" in message
    assert panel.progress.value == panel.progress.max
    assert len(viewer.layers) == 0  # results are files, not layers
    assert sorted(p.name for p in source.iterdir()) == ["a.tif", "b_broken.tif", "c.tif"]
    assert panel.run_button.enabled and not panel.stop_button.enabled


def test_stop_after_the_first_file_ends_the_run_with_a_summary_of_one_file(
    dock, qtbot, monkeypatch
):
    from napari_unet_cells.core import predict_large

    _, widget, said = dock
    panel = widget.folder
    out = panel.output_folder.value
    (panel.input_folder.value / "b_broken.tif").unlink()  # a.tif and c.tif
    original = predict_large.predict_file_iter

    def gated(image, *args, **kwargs):
        """c.tif waits (in the worker) until Stop is clicked, so that the click lands
        between the two files, whatever the machine's speed."""
        if Path(image).name != "a.tif":
            assert panel._stop.wait(60)
        return (yield from original(image, *args, **kwargs))

    monkeypatch.setattr(predict_large, "predict_file_iter", gated)
    panel.run_button.native.click()
    qtbot.waitUntil(lambda: len(panel.rows) == 1, timeout=120000)  # a.tif is done
    assert panel.stop_button.enabled
    panel.stop_button.native.click()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)
    assert sorted(p.name for p in out.iterdir()) == ["a_cells.csv", "a_cells.tif", "summary.csv"]
    assert [Path(r["file"]).name for r in _summary(out / "summary.csv")] == ["a.tif"]
    assert panel.message.startswith("Stopped after 1 of 2 files: 1 segmented")
    assert said["info"] == [panel.message] and panel.status.value == panel.message

    # continue into the same folder: a.tif is skipped, c.tif done, the summary lists both
    monkeypatch.setattr(predict_large, "predict_file_iter", original)
    a_written = (out / "a_cells.tif").stat().st_mtime_ns
    panel.skip_done.value = True
    _click_run(panel, qtbot)
    assert [Path(r["file"]).name for r in _summary(out / "summary.csv")] == ["a.tif", "c.tif"]
    assert (out / "c_cells.tif").is_file() and (
        out / "a_cells.tif"
    ).stat().st_mtime_ns == a_written
    assert panel.message.startswith("1 file: 1 segmented")
    panel.run_button.native.click()  # nothing left to do
    assert panel.worker is None and panel.status.value.startswith("Nothing to do")


def test_existing_outputs_are_refused_before_any_work(dock, qtbot):
    _, widget, said = dock
    panel = widget.folder
    out = panel.output_folder.value
    (out / "c_cells.tif").write_bytes(b"an earlier result")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    panel.run_button.native.click()
    assert panel.worker is None  # nothing started
    assert len(said["error"]) == 1 and "c_cells.tif" in said["error"][0]
    assert panel.status.value == said["error"][0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # a missing folder, and no folder chosen: refused with what to do
    panel.output_folder.value = out / "missing"
    panel.run_button.native.click()
    assert panel.worker is None and "does not exist" in said["error"][-1]
    panel.input_folder.value = None
    panel.run_button.native.click()
    assert panel.worker is None and "Input folder" in said["error"][-1]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert panel.run_button.enabled


def test_the_worker_gets_the_docks_settings_as_plain_values_and_never_a_layer(
    dock, qtbot, monkeypatch
):
    import numpy as np
    from napari.layers import Layer

    from napari_unet_cells.core import batch
    from napari_unet_cells.core.config import InstanceConfig, PredictConfig

    viewer, widget, _ = dock
    panel = widget.folder
    calls = []

    def fake_run_batch_iter(jobs, *args, **kwargs):
        calls.append((threading.current_thread(), jobs, args, kwargs))
        row = batch.summary_row(jobs[0].image, jobs[0].labels, 7)
        yield batch.BatchProgress(0, len(jobs), jobs[0].image, row=row)
        return [row]

    monkeypatch.setattr(batch, "run_batch_iter", fake_run_batch_iter)
    viewer.add_image(np.zeros((32, 32), np.float32), name="an image")
    widget.threshold.value = 0.6
    widget.tta.value = True
    _click_run(panel, qtbot)
    [(thread, jobs, args, kwargs)] = calls
    assert thread is not threading.main_thread()
    values = [*jobs, *args, *kwargs.values()]
    assert not any(isinstance(v, Layer) for v in values)
    assert kwargs["model"] is None and kwargs["diameter"] is None  # bundled, "none"
    assert isinstance(kwargs["config"], PredictConfig) and kwargs["config"].tta
    assert isinstance(kwargs["instances"], InstanceConfig)
    assert kwargs["instances"].threshold == pytest.approx(0.6)
    assert kwargs["summary"] == panel.output_folder.value / "summary.csv"
    assert isinstance(kwargs["stop"], threading.Event)
    assert [job.image.name for job in jobs] == ["a.tif", "b_broken.tif", "c.tif"]
    assert "1 segmented (7 cells)" in panel.message
    assert [layer.name for layer in viewer.layers] == ["an image"]


def test_the_final_message_counts_and_lists_the_first_failures():
    rows = [{"file": f"/in/f{i}.tif", "cells": "", "error": f"bad {i}"} for i in range(5)]
    rows.append({"file": "/in/good.tif", "cells": 12, "error": ""})
    text = folder_message(rows, 9, Path("/out/summary.csv"), Path("/out"), stopped=True)
    assert text.startswith("Stopped after 6 of 9 files: 1 segmented (12 cells), 5 failed.")
    assert "Summary: /out/summary.csv" in text
    assert "f0.tif: bad 0; f1.tif: bad 1; f2.tif: bad 2 (and 2 more, see the summary)" in text
    text = folder_message(rows[-1:], 1, None, Path("/out"), stopped=False)
    assert text == "1 file: 1 segmented (12 cells), 0 failed. Labels: /out"


def _gate_folder_files(monkeypatch) -> threading.Event:
    """Hold every file of a folder run until the returned event is set (the run stays
    busy meanwhile)."""
    from napari_unet_cells.core import predict_large

    release = threading.Event()
    original = predict_large.predict_file_iter

    def gated(image, *args, **kwargs):
        assert release.wait(60)
        return (yield from original(image, *args, **kwargs))

    monkeypatch.setattr(predict_large, "predict_file_iter", gated)
    return release


def test_run_and_run_folder_wait_for_each_other(dock, qtbot, monkeypatch):
    """One prediction at a time per dock: Run during a folder run, and Run folder during
    a Run, are refused with what to do; nothing is started or written."""
    viewer, widget, said = dock
    panel = widget.folder
    viewer.add_image(synthetic_cells((96, 96), seed=5)[0], name="nuclei")
    release = _gate_folder_files(monkeypatch)
    panel.run_button.native.click()
    assert panel.worker is not None
    widget.run()
    assert widget.worker is None and said["error"] == [folder_panel.RUN_WAITS]
    assert widget.status.value == folder_panel.RUN_WAITS
    panel.stop()
    release.set()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=60000)

    # the other way round: a Run in progress refuses Run folder
    out = panel.output_folder.value
    before = sorted(p.name for p in out.iterdir())
    widget.worker = object()  # stands for a running prediction
    try:
        panel.run_button.native.click()
    finally:
        widget.worker = None
    assert panel.worker is None and said["error"][-1] == folder_panel.FOLDER_WAITS
    assert panel.status.value == folder_panel.FOLDER_WAITS
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_request_from_another_dock_during_a_folder_run_runs_after_it(dock, qtbot, monkeypatch):
    """Fine-tune's "predict with the new model" during a folder run is not refused: it
    waits for the folder run, then the dock predicts (the dock's ``stop()`` forgets it,
    as closing the dock does)."""
    from napari_unet_cells.workspace import workspace_for

    viewer, widget, said = dock
    panel = widget.folder
    image = viewer.add_image(synthetic_cells((96, 96), seed=5)[0], name="nuclei")
    release = _gate_folder_files(monkeypatch)
    panel.run_button.native.click()
    assert panel.worker is not None
    assert workspace_for(viewer).request_prediction(image, "bundled") is True
    assert widget.worker is None and said["error"] == []
    assert widget.status.value.startswith("Next: 'bundled' on 'nuclei'")
    release.set()
    qtbot.waitUntil(lambda: widget.inference_runs == 1, timeout=120000)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60000)
    assert "nuclei cells" in viewer.layers and panel.worker is None

    # queued again, then the dock's Stop: the request is forgotten, nothing runs
    release.clear()
    panel.output_folder.value = panel.output_folder.value.parent / "out2"
    panel.output_folder.value.mkdir()
    panel.run_button.native.click()
    workspace_for(viewer).request_prediction(image, "bundled")
    widget.stop()
    release.set()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120000)
    assert widget.worker is None and widget.inference_runs == 1
